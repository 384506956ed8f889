/**
 * vhost-user back-end (qemu/qemu docs/interop/vhost-user.rst): serve a virtio
 * device to QEMU (`-device vhost-user-blk-pci`) or another front-end over a
 * Unix socket, with guest memory mapped from the front-end's fds.
 *
 * Layers, bottom up:
 * - `codec` — pure encoders/decoders of the header and every payload;
 * - `framing` — {@link MessageReader}: fragments + fds in, validated messages out;
 * - `handlers` / `session` — one handler per request, the ring state machine;
 * - {@link VhostUserConnection} — one connection: in-order handling, REPLY_ACK, close on violations;
 * - {@link VringDataplane} / {@link LocalDataplane} — where the rings run;
 * - {@link VhostUserBackend} — what a device implements ({@link VhostUserBlkBackend} for virtio-blk);
 * - {@link VhostUserServer}, the native host adapters, and {@link DataplaneWorker} /
 *   {@link WorkerDataplane} to run the rings on worker threads (Node-only).
 *
 * The front-end (driver) side, to use any vhost-user back-end from this
 * process (Node-only): {@link VhostUserFrontend} (connection, negotiation,
 * memory, rings), {@link SharedGuestMemory} (memfd guest memory) and
 * {@link VhostUserBlk} (a virtio-blk disk over both).
 *
 * Test doubles live in `./fakes.ts` (fd table, mapper, socket).
 *
 * @module
 */
export type { VhostUserBackend, VhostUserQueueContext } from "./backend.ts";
export { VhostUserBlkBackend, type VhostUserBlkOptions } from "./blk-backend.ts";
export {
  createBackend as createBlkFileBackend,
  type BlkFileBackendOptions,
} from "./blk-file-backend.ts";
export * from "./codec.ts";
export {
  DEFAULT_MAX_MEM_SLOTS,
  VhostUserConnection,
  type CloseInfo,
  type VhostUserConnectionOptions,
} from "./connection.ts";
export {
  LocalDataplane,
  type LocalDataplaneOptions,
  type RingEvents,
  type RingStart,
  type VringDataplane,
} from "./dataplane.ts";
export {
  MessageReader,
  VHOST_USER_MAX_FDS,
  VHOST_USER_MAX_PAYLOAD,
  needsReply,
  takeFd,
  type VhostUserMessage,
} from "./framing.ts";
export {
  REPLY_ACK_FAILED,
  VHOST_USER_HANDLERS,
  type Handler,
  type HandlerResult,
} from "./handlers.ts";
export type {
  EventFds,
  FdCloser,
  MappedWindow,
  Mapping,
  MemoryMapper,
  SocketHandlers,
  VhostUserSocket,
} from "./host.ts";
export { MemoryTable, validateRegion, type RegionInfo } from "./memory-table.ts";
export { NativeEventFds, NativeMapper, NativeSocket } from "./native-host.ts";
export {
  VHOST_USER_REQUEST_RULES,
  type FdRule,
  type PayloadRule,
  type RequestRule,
} from "./request-rules.ts";
export { VhostUserServer, type VhostUserServerOptions } from "./server.ts";
export { VhostUserSession, VringState, type VhostUserSessionOptions } from "./session.ts";
export {
  fromWireError,
  serveDataplaneWorker,
  toWireError,
  type DataplaneEvent,
  type DataplaneReply,
  type DataplaneRequest,
  type DataplaneWorkerInit,
  type WireError,
  type WorkerEndpoint,
} from "./dataplane-worker.ts";
export {
  DataplaneWorker,
  WorkerDataplane,
  type DataplaneWorkerOptions,
  type WorkerPort,
} from "./worker-dataplane.ts";
export {
  FRONTEND_PROTOCOL_FEATURES,
  FRONTEND_REQUIRED_PROTOCOL_FEATURES,
  VhostUserFrontend,
  type FrontendMemoryRegion,
  type FrontendRing,
  type FrontendRingAddresses,
  type StartRingOptions,
  type VhostUserFrontendOptions,
} from "./frontend.ts";
export {
  FRONTEND_MEMORY_BASE,
  SharedGuestMemory,
  type SharedGuestMemoryOptions,
} from "./frontend-memory.ts";
export { VhostUserBlk, type GuestBuffer, type VhostUserBlkConnectOptions } from "./frontend-blk.ts";

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
 * - {@link VringDataplane} / {@link DataplaneRings} — the rings, on the project's dataplane
 *   (worker threads or the calling thread), with this transport's binding (./binding.ts:
 *   region fds mapped by the runtime, kick / call eventfds);
 * - {@link VhostUserBackend} — what a device implements on the control side
 *   (virtio-blk's is in devices/blk/vhost-user.ts);
 * - {@link VhostUserServer} and the native host adapters (Node-only).
 *
 * The front-end (driver) side, to use any vhost-user back-end from this
 * process (Node-only): {@link VhostUserFrontend} (connection, negotiation,
 * memory, rings) and {@link SharedGuestMemory} (memfd guest memory); the
 * virtio-blk disk over both is devices/blk/vhost-user-frontend.ts.
 *
 * Test doubles live in `./fakes.ts` (fd table, mapper, socket).
 *
 * @module
 */
export type { VhostUserBackend } from "./backend.ts";
export {
  EVENTFD_DOORBELLS,
  RegionMemorySpace,
  VHOST_USER_MEMORY,
  eventfdDoorbellOpener,
  type EventfdDoorbellDescriptor,
  type RegionEntry,
  type RegionTableDescriptor,
} from "./binding.ts";
export * from "./codec.ts";
export {
  DEFAULT_MAX_MEM_SLOTS,
  VhostUserConnection,
  type CloseInfo,
  type VhostUserConnectionOptions,
} from "./connection.ts";
export type { RingEvents, VringDataplane, VringStart } from "./dataplane.ts";
export { DataplaneRings } from "./rings.ts";
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

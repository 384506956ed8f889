/**
 * `virtio-ts/vhost-user`: the vhost-user protocol (QEMU
 * docs/interop/vhost-user.rst) — the back-end that serves a device to QEMU
 * or another front-end ({@link serveVhostUserBlk} in one call; or
 * {@link VhostUserServer} with virtio-blk's {@link VhostUserBlkBackend} and
 * {@link openVhostUserBlk}), and the
 * front-end that drives any vhost-user back-end from Node ({@link
 * VhostUserFrontend}, and {@link VhostUserBlk} for a virtio-blk disk).
 * Node-only (Unix sockets, mmap, eventfds through the native addon).
 *
 * @module virtio-ts/vhost-user
 */
export * from "../vhost-user/index.ts";
export type { InflightEntry } from "../vhost-user/binding.ts";
// The payload of SET_VRING_NUM/BASE/ENABLE and GET_VRING_BASE, renamed: the
// name `VringState` is the session's per-ring state.
export type { VringState as VringStatePayload } from "../vhost-user/codec.ts";
export type { InflightShm } from "../vhost-user/dataplane.ts";
export type { InflightReply, StoppedRing } from "../vhost-user/frontend.ts";
export type { ReplyWithFds } from "../vhost-user/handlers.ts";
export type { MapOptions } from "../vhost-user/host.ts";
export {
  VhostUserBlkBackend,
  openVhostUserBlk,
  type OpenVhostUserBlkOptions,
  type OpenedVhostUserBlk,
} from "../devices/blk/vhost-user.ts";
export {
  serveVhostUserBlk,
  type ServeVhostUserBlkOptions,
  type ServedVhostUserBlk,
} from "../devices/blk/serve-vhost-user.ts";
export {
  VhostUserBlk,
  type GuestBuffer,
  type VhostUserBlkConnectOptions,
} from "../devices/blk/vhost-user-frontend.ts";
export * from "../spec/vhost-user.ts";

/**
 * `virtio-ts/node`: what runs only on Node — the virtio-blk image-file
 * backing store ({@link FileBacking}: raw files, O_DIRECT, io_uring), the
 * NBD backing store ({@link NbdBacking}: any NBD server as the disk), the
 * worker_threads thread host, and the dataplane runtime with every device
 * and transport of this package in worker threads or on the calling thread.
 * VIRTIO 1.2 §5.2.6 (the disk behind the requests).
 *
 * @module virtio-ts/node
 */
export { FileBacking, IOV_MAX, type FileBackingOptions } from "../devices/blk/file-backing.ts";
export type { FallocateFn } from "../devices/blk/fallocate.ts";
export type { NowaitIo } from "../devices/blk/file-nowait.ts";
export type { VectoredIo } from "../devices/blk/file-uring.ts";
export { openNodeBacking } from "../devices/blk/node-backing.ts";
export {
  NbdBacking,
  probeNbd,
  type NbdBackingOptions,
  type NbdProbe,
} from "../devices/blk/nbd-backing.ts";
export type { NbdBackingSpec } from "../devices/blk/backing-spec.ts";
export { NbdClient, type NbdClientOptions } from "../nbd/client.ts";
export type { NbdRequestData } from "../nbd/connection.ts";
export type { NbdExportInfo } from "../nbd/handshake.ts";
export { formatNbdTarget, parseNbdUri, type NbdTarget } from "../nbd/uri.ts";
export {
  nodeParentEndpoint,
  nodeThreadHost,
  type NodeThreadHostOptions,
} from "../dataplane/node-threads.ts";
export * from "../devices/node-dataplane.ts";

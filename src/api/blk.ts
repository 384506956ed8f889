/**
 * `virtio-ts/blk`: virtio-blk (VIRTIO 1.2 §5.2) — the device (request
 * parsing and execution, config space, the per-queue engine, memory backing
 * stores, the device on dataplane runtimes) and the driver
 * ({@link BlkDriver}), with the spec's constants. Portable; the image-file
 * backing store is in `virtio-ts/node`.
 *
 * @module virtio-ts/blk
 */
export * from "../devices/blk/index.ts";
export { DEFAULT_BLK_ENGINE_BUDGET } from "../devices/blk/queue-engine.ts";
export type { BlkOnBackingOptions } from "../devices/blk/runtime-device.ts";
export { openBlk, type OpenBlkOptions, type OpenedBlk } from "../devices/blk/open.ts";
export * from "../spec/blk.ts";

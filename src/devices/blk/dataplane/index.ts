/**
 * virtio-blk dataplane (VIRTIO 1.2 §5.2): queue processing on worker
 * threads, never on the thread that handles control. Portable part; the
 * Node worker entry and the file-backed disk opener are in ./node-worker.ts
 * (import it directly).
 *
 * @module
 */
export { CacheModeWriter, DataplanePolicy, createCacheModeBuffer } from "./cache-mode.ts";
export { BlkDataplaneDevice, type BlkDataplaneStats, type QueueStop } from "./device.ts";
export type { BlkDataplaneDeviceOptions } from "./device-options.ts";
export {
  INPROC_DOORBELLS,
  INPROC_MEMORY,
  attachInprocMemory,
  inprocDataplaneBinding,
  inprocDoorbellOpener,
  type InprocDoorbellDescriptor,
  type InprocMemoryDescriptor,
} from "./inproc-binding.ts";
export { InprocQueueDoorbells, type InprocDoorbellOptions } from "./inproc-doorbells.ts";
export {
  fromWireError,
  toWireError,
  type BackingSpec,
  type BlkDataplaneConfig,
  type ControlMessage,
  type DataplaneQueueStats,
  type DataplaneRing,
  type DoorbellDescriptor,
  type FileBackingSpec,
  type InitMessage,
  type MemoryDescriptor,
  type SharedMemoryBackingSpec,
  type StopResult,
  type WireError,
  type WorkerMessage,
} from "./protocol.ts";
export type {
  BackingContext,
  BackingOpener,
  DataplaneBinding,
  DoorbellOpener,
  MemoryAttacher,
  QueueDoorbells,
} from "./seams.ts";
export { SharedMemoryBacking, type SharedMemoryBackingOptions } from "./shared-memory-backing.ts";
export { DataplaneWorkerHandle, type WorkerEvent, type WorkerReady } from "./worker-handle.ts";
export {
  BlkDataplaneWorker,
  serveBlkDataplane,
  type DataplaneWorkerEnv,
} from "./worker-runtime.ts";

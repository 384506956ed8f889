/**
 * virtio-blk (VIRTIO 1.2 §5.2), portable part: request parsing, execution,
 * config space, the per-queue engine, the memory backing stores, the
 * device's control core, its dataplane half and the device-framework
 * adapters (queues on this thread, or on dataplane runtimes). The Node-only
 * file backing store is in `./file-backing.ts` and `./node-backing.ts`
 * (import them directly).
 *
 * @module
 */
export {
  MemoryBacking,
  checkBackingRange,
  iovLength,
  type BlkBacking,
  type MemoryBackingOptions,
} from "./backing.ts";
export {
  BLK_FEATURES,
  BlkDeviceConfig,
  type BlkDeviceOptions,
  type BlkFeatureName,
  type BlkGeometry,
} from "./config.ts";
export { BlkDevice, VIRTIO_ID_BLOCK, type BlkDeviceBackendOptions } from "./device.ts";
export { BlkDeviceCore } from "./core.ts";
export { CacheModeWriter, DataplanePolicy, createCacheModeBuffer } from "./cache-mode.ts";
export { BlkDataplaneDevice, type BlkDataplaneStats, type QueueStop } from "./dataplane-device.ts";
export type { BlkDataplaneDeviceOptions } from "./dataplane-options.ts";
export {
  openPortableBacking,
  type BackingContext,
  type BackingOpener,
  type BackingSpec,
  type FileBackingSpec,
  type NbdBackingSpec,
  type ObjectBackingSpec,
  type SharedMemoryBackingSpec,
} from "./backing-spec.ts";
export {
  BLK_DEVICE_KIND,
  BlkRuntimeDevice,
  blkDeviceOpener,
  type BlkDataplaneConfig,
  type BlkDeviceInfo,
  type BlkDeviceSpec,
  type BlkEngineLimits,
} from "./runtime-device.ts";
export {
  openModuleBacking,
  type ModuleBackingSpec,
  type OpenBackingFunction,
} from "./module-backing.ts";
export { SharedMemoryBacking, type SharedMemoryBackingOptions } from "./shared-memory-backing.ts";
export { executeBlkRequest, executeGetId, writeStatus, type BlkExecPolicy } from "./execute.ts";
export { blkTypeName } from "./log.ts";
export {
  BlkQueueEngine,
  type BlkEnginePolicy,
  type BlkQueueEngineOptions,
  type BlkVirtqueue,
} from "./queue-engine.ts";
export {
  BLK_STATUS_PENDING,
  BlkRequest,
  parseBlkRequest,
  type BlkRequestPolicy,
} from "./request.ts";
// The driver side (VIRTIO 1.2 §5.2.6.1).
export {
  BlkDriver,
  type BlkDriverOptions,
  type BlkDriverState,
  type BlkDriverStats,
  type BlkDriverTransport,
  type BlkRequestOptions,
  type BlkWriteZeroesOptions,
} from "./driver.ts";
export {
  BLK_DRIVER_FEATURES,
  BLK_DRIVER_FEATURE_NAMES,
  parseBlkConfig,
  selectBlkFeatures,
  type BlkDriverConfig,
  type BlkFeatureSelection,
} from "./driver-config.ts";
export {
  BLK_DRIVER_PAGE_SIZE,
  BLK_DRIVER_SLOT_BYTES,
  blkDriverArenaBytes,
  planBlkDriverMemory,
  type BlkDriverArena,
  type BlkDriverMemoryOptions,
  type BlkDriverMemoryPlan,
} from "./driver-memory.ts";
export type { BlkRange, BlkSegment } from "./driver-plan.ts";
export { BlkIoError } from "./driver-request.ts";

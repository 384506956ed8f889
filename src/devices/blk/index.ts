/**
 * virtio-blk device core (VIRTIO 1.2 §5.2), portable part: request parsing,
 * execution, config space, the per-queue engine, the memory backing store
 * and the device-framework adapter. The Node-only file backing store is in
 * `./file-backing.ts` (import it directly).
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
export { executeBlkRequest, executeGetId, writeStatus, type BlkExecPolicy } from "./execute.ts";
export { blkTypeName, consoleBlkLogger, silentBlkLogger, type BlkLogger } from "./log.ts";
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

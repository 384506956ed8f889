/**
 * `virtio-ts/ring`: virtqueues, both ends — split (VIRTIO 1.2 §2.7) and
 * packed (§2.8) rings on the device side ({@link DeviceRing}, built by
 * {@link openRing}) and the driver side ({@link DriverRing}, built by
 * {@link openDriverRing}), descriptor chains and their cursors, ring
 * placement, the vhost-user inflight logs that let a restarted device
 * resume, and the spec's ring constants. Portable.
 *
 * @module virtio-ts/ring
 */
export { DescriptorChain, ChainReader, ChainWriter } from "../ring/chain.ts";
export { MAX_CHAIN_BYTES } from "../ring/chain-walk.ts";
export type { DeviceRing } from "../ring/device-ring.ts";
export type { DriverRing, Segment, UsedBuffer } from "../ring/driver-ring.ts";
export {
  DEFAULT_MAX_INDIRECT_ENTRIES,
  DeviceQueue,
  type DeviceQueueConfig,
  type InflightTracker,
} from "../ring/device-queue.ts";
export { PackedDeviceQueue, type PackedDeviceQueueConfig } from "../ring/packed-device-queue.ts";
export {
  DriverQueue,
  indirectArenaBytes,
  type DriverQueueConfig,
  type IndirectArena,
} from "../ring/driver-queue.ts";
export { PackedDriverQueue, type PackedDriverQueueConfig } from "../ring/packed-driver-queue.ts";
export { openRing, isPackedLog, type RingInflightLog, type RingStart } from "../ring/open-ring.ts";
export { openDriverRing, type DriverRingOptions } from "../ring/open-driver-ring.ts";
export {
  isPackedRing,
  placeRing,
  ringLayoutOf,
  ringPartAlign,
  ringPartBytes,
  ringSizeProblem,
  type RingAddresses,
  type RingLayout,
  type RingLayoutKind,
} from "../ring/ring-layout.ts";
export { vringLayout, type VringAddresses, type VringLayout } from "../ring/layout.ts";
export {
  packedRingLayout,
  type PackedRingAddresses,
  type PackedRingLayout,
} from "../ring/packed-layout.ts";
export { SplitInflightLog } from "../ring/inflight-split.ts";
export type { PackedListCopy } from "../ring/packed-list-copy.ts";
export type { InflightRecovery } from "../ring/inflight-recovery.ts";
export {
  PackedInflightLog,
  type LoggedList,
  type PackedInflightTracker,
  type PackedInflightRecovery,
  type PackedRingFlags,
} from "../ring/inflight-packed.ts";
export {
  PACKED_RING_START,
  decodePackedVringBase,
  encodePackedVringBase,
  type PackedRingState,
  type WrapCounter,
} from "../ring/packed-ring-state.ts";
export * from "../spec/virtqueue.ts";
export * from "../spec/packed-virtqueue.ts";

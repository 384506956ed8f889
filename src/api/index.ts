/**
 * `virtio-ts`: the portable core every device and transport builds on —
 * errors and logging, guest memory, the device framework (VIRTIO 1.2 §2:
 * feature negotiation, device status, config space, reset), the dataplane
 * that runs queues on threads, and the spec's feature bits and status
 * values (§2.1, §6). The rings are in `virtio-ts/ring`, devices and
 * transports in their own subpaths. Portable: no Node-only import.
 *
 * @module virtio-ts
 */
export * from "../errors.ts";
export { consoleLogger, errorText, silentLogger, type LogFields, type Logger } from "../log.ts";
export {
  GuestMemory,
  GuestSlice,
  MAX_GUEST_ADDRESS,
  MemoryRegion,
  type RegionDescriptor,
  type TransferableGuestMemory,
} from "../memory/guest-memory.ts";
export type { ActivationContext, VirtioDeviceBackend } from "../device/backend.ts";
export { ConfigSpace, type ConfigWriteHook } from "../device/config-space.ts";
export { FeatureNegotiation } from "../device/features.ts";
export { hasStatus, planStatusWrite, type StatusPlan } from "../device/status.ts";
export {
  VirtioDevice,
  type DeviceNotifier,
  type DeviceStats,
  type VirtioDeviceOptions,
} from "../device/virtio-device.ts";
export {
  DataplanePool,
  type DataplanePoolOptions,
  type OpenDeviceOptions,
} from "../dataplane/pool.ts";
export type { DataplaneDeviceHandle, DeviceEvent } from "../dataplane/device-handle.ts";
export type { QueueStats, StopResult } from "../dataplane/protocol.ts";
export type { RequestOptions } from "../dataplane/worker-handle.ts";
export { DataplaneRuntime, serveDataplane, type DataplaneEnv } from "../dataplane/runtime.ts";
export { LOCAL_RUNTIME, localThreadHost } from "../dataplane/local.ts";
export {
  nextMessage,
  type MessageEndpoint,
  type ThreadHost,
  type Transferable,
  type WorkerThread,
} from "../dataplane/threads.ts";
export { webParentEndpoint, webThreadHost } from "../dataplane/web-threads.ts";
export type {
  DataplaneDevice,
  DeviceOpenContext,
  DeviceOpener,
  DeviceSpec,
  OpenedDevice,
  QueueContext,
  QueueHandler,
} from "../dataplane/device.ts";
export type {
  DataplaneBinding,
  DoorbellDescriptor,
  DoorbellOpener,
  MemoryDescriptor,
  MemorySpace,
  MemorySpaceFactory,
  QueueDoorbells,
} from "../dataplane/seams.ts";
export * from "../spec/virtio.ts";

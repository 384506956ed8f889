/**
 * The in-process transport: a virtio driver and device in two threads of one
 * process over one SharedArrayBuffer of guest memory plus a register block
 * of doorbells and control words. Portable (Node worker_threads and Web
 * Workers); the thread hosts are the dataplane's (../../dataplane/node-threads.ts,
 * Node-only, and ../../dataplane/web-threads.ts).
 *
 * @module
 */
export {
  INPROC_DATA_BYTES,
  INPROC_MAX_QUEUES,
  createRegisters,
  type InprocShared,
} from "./registers.ts";
export {
  InprocDeviceTransport,
  stopInprocDevice,
  type DeviceLoopOptions,
  type DeviceTransportStats,
} from "./device-side.ts";
export {
  InprocDriverTransport,
  type ControlReply,
  type ControlRequest,
  type DeviceInfo,
  type DriverTransportStats,
  type InprocDriverOptions,
  type Procedure,
  type QueueSetup,
  type WaitResult,
} from "./driver-side.ts";
export { Doorbell, type SleepResult } from "./doorbell.ts";
export {
  nextMessage,
  type MessageEndpoint,
  type ThreadHost,
  type WorkerThread,
} from "../../dataplane/threads.ts";
export { webParentEndpoint, webThreadHost } from "../../dataplane/web-threads.ts";
export {
  INPROC_DOORBELLS,
  INPROC_MEMORY,
  inprocDataplaneBinding,
  inprocDoorbellOpener,
  inprocMemorySpace,
  type InprocDoorbellDescriptor,
  type InprocMemoryDescriptor,
} from "./dataplane-binding.ts";
export { InprocQueueDoorbells, type InprocDoorbellOptions } from "./dataplane-doorbells.ts";

/**
 * The Node-only system interface of virtio-ts: Unix sockets with fd passing,
 * mmap of guest memory, eventfds, fd watching on the calling thread's event
 * loop, memfd and fallocate — a small N-API addon (`native/`) behind typed
 * functions. It holds no protocol logic.
 *
 * Failed system calls throw {@link NativeError} (a `VirtioError` with code
 * `VIRTIO_ERR_NATIVE` and an `errnoCode` such as `"EAGAIN"`); API misuse
 * throws TypeError / RangeError. Without the built addon every function
 * throws a `VirtioError` saying so; check {@link nativeAvailable} first.
 *
 * @module
 */
export { nativeAvailable, nativeLoadError } from "./addon.ts";
export type { BlockDeviceInfo, DirectIoAlignment, ReceivedMessage } from "./addon.ts";
export { isNativeError, NativeError, type NativeErrorOptions } from "./native-error.ts";
export {
  acceptUnix,
  bindUnixDatagram,
  close,
  connectUnix,
  isListeningSocket,
  listenUnix,
  MAX_FDS_PER_MESSAGE,
  recvmsg,
  sendmsg,
  sendUnixDatagram,
  shutdown,
  socketPair,
  unixSocketAnswers,
} from "./sockets.ts";
export {
  mapAlignment,
  mappingCount,
  mapRegion,
  MAX_WINDOW,
  mmap,
  munmap,
  pageSize,
  planWindows,
  unmapRegion,
  type MappedWindow,
  type MapRegionOptions,
  type WindowPlan,
} from "./memory.ts";
export { guardedMappingCount, guardFaultTotal, mappingFaults } from "./sigbus.ts";
export { EFD_SEMAPHORE, EVENTFD_MAX, eventfd, eventfdRead, eventfdWrite } from "./eventfd.ts";
export { PollEvent, watch, watchCount, type FdWatch, type WatchCallback } from "./watch.ts";
export {
  addSeals,
  blockDeviceInfo,
  blockDiscard,
  blockZeroOut,
  directIoAlignment,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
  fallocate,
  ftruncate,
  getSeals,
  memfdCreate,
  MFD_ALLOW_SEALING,
  MFD_HUGETLB,
  punchHole,
  zeroRange,
} from "./files.ts";
export { IO_NOWAIT_MAX_VIEWS, preadvNowait, pwritevNowait } from "./io.ts";
export {
  uringClose,
  uringOpen,
  uringPrepare,
  uringReap,
  uringSubmit,
  type UringRing,
} from "./uring.ts";

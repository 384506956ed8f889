/**
 * memfd, seals, fallocate and block-device geometry and ranges: what guest
 * RAM, the vhost-user inflight buffer (vhost-user spec, "Inflight I/O
 * tracking": a shared fd from the back-end) and the virtio-blk backing store
 * (VIRTIO 1.2 §5.2.6 DISCARD and WRITE_ZEROES, on files and block devices)
 * need beyond `node:fs`.
 *
 * Node's `fs.open` accepts `fs.constants.O_DIRECT` itself; use
 * {@link directIoAlignment} to learn the buffer and offset alignment it needs.
 *
 * @module
 */
import { native, type BlockDeviceInfo, type DirectIoAlignment } from "./addon.ts";

export type { BlockDeviceInfo, DirectIoAlignment } from "./addon.ts";

/** memfd_create(2) flag: the memfd accepts seals ({@link addSeals}). */
export const MFD_ALLOW_SEALING = 2;
/** memfd_create(2) flag: back the memfd with huge pages. */
export const MFD_HUGETLB = 4;

/** fcntl(2) seal: no further seals may be added. */
export const F_SEAL_SEAL = 1;
/** fcntl(2) seal: the file may not shrink. */
export const F_SEAL_SHRINK = 2;
/** fcntl(2) seal: the file may not grow. */
export const F_SEAL_GROW = 4;
/** fcntl(2) seal: the contents may not change. */
export const F_SEAL_WRITE = 8;

/** fallocate(2) mode bit: do not change the file size. */
export const FALLOC_FL_KEEP_SIZE = 1;
/** fallocate(2) mode bit: deallocate the range (needs KEEP_SIZE); reads return zeroes. */
export const FALLOC_FL_PUNCH_HOLE = 2;
/** fallocate(2) mode bit: zero the range, keeping it allocated. */
export const FALLOC_FL_ZERO_RANGE = 0x10;

/**
 * Creates an anonymous memory file (always `MFD_CLOEXEC`); `flags` may hold
 * {@link MFD_ALLOW_SEALING} and {@link MFD_HUGETLB}. `name` shows up in
 * `/proc/self/fd` as `memfd:<name>`. Size it with {@link ftruncate}.
 */
export function memfdCreate(name: string, flags = 0): number {
  return native.memfdCreate(name, flags);
}

/** Sets the file size to `size` bytes (new bytes read as zeroes). */
export const ftruncate: (fd: number, size: number) => void = (fd, size) =>
  native.ftruncate(fd, size);

/** Adds seals (`F_SEAL_*`) to a memfd created with {@link MFD_ALLOW_SEALING}. */
export const addSeals: (fd: number, seals: number) => void = (fd, seals) =>
  native.addSeals(fd, seals);

/** The seals (`F_SEAL_*`) of a memfd. */
export const getSeals: (fd: number) => number = (fd) => native.getSeals(fd);

/**
 * fallocate(2) with `mode` made of `FALLOC_FL_*` bits, on `[offset, offset +
 * length)` (length >= 1). A file system that does not support the mode throws
 * a `NativeError` with `errnoCode` `"EOPNOTSUPP"`: fall back (e.g. write
 * zeroes).
 */
export const fallocate: (fd: number, mode: number, offset: number, length: number) => void = (
  fd,
  mode,
  offset,
  length,
) => native.fallocate(fd, mode, offset, length);

/** Deallocates `[offset, offset + length)`; it reads as zeroes, the size is unchanged. */
export function punchHole(fd: number, offset: number, length: number): void {
  native.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
}

/**
 * Zeroes `[offset, offset + length)` without writing data (the blocks stay
 * allocated). With `keepSize` false a range past the end grows the file.
 */
export function zeroRange(fd: number, offset: number, length: number, keepSize = true): void {
  native.fallocate(fd, FALLOC_FL_ZERO_RANGE | (keepSize ? FALLOC_FL_KEEP_SIZE : 0), offset, length);
}

/**
 * Size and block sizes of a block device (`fs.fstat` reports size 0 for one).
 * Throws `"ENOTTY"` if `fd` is not a block device.
 */
export const blockDeviceInfo: (fd: number) => BlockDeviceInfo = (fd) => native.blockDeviceInfo(fd);

/**
 * ioctl BLKDISCARD on a block device, on the thread pool: the device may
 * deallocate `[offset, offset + length)` (what it then reads is the device's
 * business). Offset and length must be multiples of its logical block size
 * (rejects `"EINVAL"`); a device without discard rejects `"EOPNOTSUPP"`.
 */
export const blockDiscard: (fd: number, offset: number, length: number) => Promise<void> = (
  fd,
  offset,
  length,
) => native.blockDiscard(fd, offset, length);

/**
 * ioctl BLKZEROOUT on a block device, on the thread pool: `[offset, offset +
 * length)` reads as zeroes afterwards (the device's zeroing command, or
 * zeroes the kernel writes). Offset and length must be multiples of its
 * logical block size.
 */
export const blockZeroOut: (fd: number, offset: number, length: number) => Promise<void> = (
  fd,
  offset,
  length,
) => native.blockZeroOut(fd, offset, length);

/**
 * The alignment O_DIRECT I/O on `fd` needs (statx `STATX_DIOALIGN`), or `null`
 * if the kernel or file system does not say (or does not support O_DIRECT).
 */
export const directIoAlignment: (fd: number) => DirectIoAlignment | null = (fd) =>
  native.directIoAlignment(fd);

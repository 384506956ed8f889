/**
 * Deallocation and zeroing of file ranges for DISCARD and WRITE_ZEROES
 * (VIRTIO 1.2 §5.2.6.2: "For discard commands, the device MAY deallocate the
 * specified range"; "After a write zeroes command is completed, reads of the
 * specified ranges of sectors MUST return zeroes"). Node-only.
 *
 * fallocate(2) comes from the native addon, loaded lazily the first time a
 * file needs it; when the addon is missing or the file system answers
 * EOPNOTSUPP, FileBacking falls back (writes zeroes; a DISCARD does
 * nothing, which the spec allows).
 *
 * @module
 */

/** fallocate(2) mode bits (linux/falloc.h). */
export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;

/**
 * fallocate(2) on a file descriptor. Returns false when the file system does
 * not support `mode` (EOPNOTSUPP); throws for any other failure.
 */
export type FallocateFn = (fd: number, mode: number, offset: number, length: number) => boolean;

/** The addon's fallocate: throws a NativeError (`errnoCode` e.g. "EOPNOTSUPP") on failure. */
type NativeFallocate = (fd: number, mode: number, offset: number, length: number) => void;

/** errno names meaning "this file system cannot do that mode". */
const UNSUPPORTED = new Set(["EOPNOTSUPP", "ENOTSUP", "ENOSYS"]);

/** Wraps the addon's throwing fallocate into a {@link FallocateFn}. */
export function fallocateFromNative(fallocate: NativeFallocate): FallocateFn {
  return (fd, mode, offset, length) => {
    try {
      fallocate(fd, mode, offset, length);
      return true;
    } catch (e) {
      const errno = (e as { errnoCode?: unknown } | null)?.errnoCode;
      if (typeof errno === "string" && UNSUPPORTED.has(errno)) return false;
      throw e;
    }
  };
}

let loaded: Promise<FallocateFn | null> | undefined;

/**
 * The native fallocate, or null when the addon is not built. Imported on
 * first use only, so opening an image never needs the addon.
 */
export function loadNativeFallocate(): Promise<FallocateFn | null> {
  loaded ??= import("../../native/index.ts").then(
    (m) => (m.nativeAvailable() ? fallocateFromNative(m.fallocate) : null),
    () => null,
  );
  return loaded;
}

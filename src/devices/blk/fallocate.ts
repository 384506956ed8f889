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

/** The shape of the native addon module this file needs. */
interface NativeFallocate {
  fallocate(fd: number, mode: number, offset: number, length: number): void;
}

function isNativeFallocate(m: unknown): m is NativeFallocate {
  return typeof (m as { fallocate?: unknown } | null)?.fallocate === "function";
}

/** Wraps the addon's throwing fallocate into a {@link FallocateFn}. */
export function fallocateFromNative(native: NativeFallocate): FallocateFn {
  return (fd, mode, offset, length) => {
    try {
      native.fallocate(fd, mode, offset, length);
      return true;
    } catch (e) {
      const code = (e as { code?: unknown }).code;
      if (code === "EOPNOTSUPP" || code === "ENOTSUP" || code === "ENOSYS") return false;
      throw e;
    }
  };
}

let loaded: Promise<FallocateFn | null> | undefined;

/**
 * The native fallocate, or null when the addon cannot be loaded. Loaded once,
 * on first use.
 */
export function loadNativeFallocate(): Promise<FallocateFn | null> {
  loaded ??= (async () => {
    try {
      // A computed specifier: the addon's wrapper may be absent (a build without native code).
      const spec = "../../native/index.ts";
      const m: unknown = await import(spec);
      const native = (m as { native?: unknown; default?: unknown }).native ?? m;
      return isNativeFallocate(native) ? fallocateFromNative(native) : null;
    } catch {
      return null;
    }
  })();
  return loaded;
}

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
 * {@link FileFallocate} is FileBacking's use of it: DISCARD punches a hole
 * (PUNCH_HOLE | KEEP_SIZE); WRITE_ZEROES uses ZERO_RANGE, or a hole with
 * UNMAP (then ZERO_RANGE if holes are refused). A mode the file system
 * refused is not tried again.
 *
 * @module
 */
import type { FileHandle } from "node:fs/promises";
import type { Logger } from "../../log.ts";

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

/**
 * DISCARD and WRITE_ZEROES without writing data: fallocate for files
 * ({@link FileFallocate}), BLKDISCARD / BLKZEROOUT for block devices
 * (file-blockdev.ts).
 */
export interface ImageRanges {
  /** Deallocates the range if the store can; otherwise does nothing (§5.2.6.2 allows it). */
  discard(offset: number, length: number): Promise<void>;
  /** Zeroes the range without writing; false if the store cannot (the caller writes zeroes). */
  zeroRange(offset: number, length: number, unmap: boolean): Promise<boolean>;
}

/** fallocate for one image file (see the module header). */
export class FileFallocate implements ImageRanges {
  readonly #fh: FileHandle;
  readonly #path: string;
  readonly #log: Logger;
  /** A function, null (never use fallocate), or undefined (load the addon on first use). */
  #fn: FallocateFn | null | undefined;
  /** Modes the file system refused with EOPNOTSUPP: not tried again. */
  readonly #unsupportedModes = new Set<number>();

  constructor(fh: FileHandle, path: string, log: Logger, fn: FallocateFn | null | undefined) {
    this.#fh = fh;
    this.#path = path;
    this.#log = log;
    this.#fn = fn;
  }

  /** DISCARD: punches a hole; does nothing where holes are not supported. */
  async discard(offset: number, length: number): Promise<void> {
    // §5.2.6.2: "the device MAY deallocate": without hole punching a DISCARD does nothing.
    await this.#try(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
  }

  /** WRITE_ZEROES without writing; false if no mode was supported (the caller writes zeroes). */
  async zeroRange(offset: number, length: number, unmap: boolean): Promise<boolean> {
    // A punched hole reads back as zeroes, so both modes satisfy "reads ... MUST return zeroes".
    const mode = unmap ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE : FALLOC_FL_ZERO_RANGE;
    if (await this.#try(mode, offset, length)) return true;
    return unmap && (await this.#try(FALLOC_FL_ZERO_RANGE, offset, length));
  }

  async #load(): Promise<FallocateFn | null> {
    if (this.#fn === undefined) {
      this.#fn = await loadNativeFallocate();
      if (this.#fn === null)
        this.#log.warn(
          `disk image ${this.#path}: native fallocate unavailable; WRITE_ZEROES writes zeroes`,
        );
    }
    return this.#fn;
  }

  /** fallocate, or false if unsupported (then that mode is not tried again). */
  async #try(mode: number, offset: number, length: number): Promise<boolean> {
    if (this.#unsupportedModes.has(mode)) return false;
    const fn = await this.#load();
    if (fn === null) return false;
    if (fn(this.#fh.fd, mode, offset, length)) return true;
    this.#unsupportedModes.add(mode);
    this.#log.warn(
      `disk image ${this.#path}: fallocate mode ${mode} not supported by the file system`,
    );
    return false;
  }
}

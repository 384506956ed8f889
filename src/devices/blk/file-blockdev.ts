/**
 * A block device (a disk, partition, loop or nbd device) as FileBacking's
 * image: its size and logical block size from the device (native addon:
 * BLKGETSIZE64, BLKSSZGET), DISCARD as ioctl BLKDISCARD and WRITE_ZEROES as
 * BLKZEROOUT. Node-only. VIRTIO 1.2 §5.2.4 (`capacity`, `blk_size`: the
 * served block size is at least the device's, so every request the device
 * accepts is aligned for it, also under O_DIRECT) and §5.2.6.2 ("the device
 * MAY deallocate" on DISCARD; reads after WRITE_ZEROES return zeroes).
 *
 * - Writable opens add O_EXCL: Linux then refuses (EBUSY) a device that is
 *   mounted or claimed by another exclusive user (file-open.ts says so in
 *   one line). Read-only opens do not claim the device.
 * - A device without discard (EOPNOTSUPP) makes DISCARD do nothing, which
 *   the spec allows; BLKZEROOUT writes zeroes itself where the device has no
 *   zeroing command, and if it is refused FileBacking writes them.
 * - The ioctls run on the thread pool (they can take long: BLKZEROOUT may
 *   write the zeroes), so the queue's thread goes on meanwhile.
 * - The size cannot change: `resize` is refused.
 *
 * @module
 */
import type { Logger } from "../../log.ts";
import type { ImageRanges } from "./fallocate.ts";
import { imageError } from "./file-open.ts";

/** What FileBacking uses of the addon for a block device. */
export interface BlockDeviceIo {
  readonly info: (fd: number) => { readonly size: number; readonly logicalBlockSize: number };
  /** BLKDISCARD on the thread pool; rejects (errnoCode "EOPNOTSUPP": no discard). */
  readonly discard: (fd: number, offset: number, length: number) => Promise<void>;
  /** BLKZEROOUT on the thread pool; rejects on failure. */
  readonly zeroOut: (fd: number, offset: number, length: number) => Promise<void>;
}

let loaded: Promise<BlockDeviceIo | null> | undefined;

/** The addon's block-device calls, or null when it is not built (imported on first use). */
export function loadBlockDeviceIo(): Promise<BlockDeviceIo | null> {
  loaded ??= import("../../native/index.ts").then(
    (m) =>
      m.nativeAvailable()
        ? { info: m.blockDeviceInfo, discard: m.blockDiscard, zeroOut: m.blockZeroOut }
        : null,
    () => null,
  );
  return loaded;
}

/**
 * The size of an opened block device, checked against the logical block
 * size `lbs` it is to be served with.
 *
 * @throws {VirtioError} `BLK_IMAGE` without the native addon, when the
 *   device's logical block size is larger than `lbs`, or when its size is not
 *   a multiple of `lbs`.
 */
export function blockDeviceSize(
  path: string,
  fd: number,
  lbs: number,
  io: BlockDeviceIo | null,
): number {
  if (io === null)
    throw imageError(path, "is a block device: serving one needs the native addon (npm rebuild)");
  const { size, logicalBlockSize: dev } = io.info(fd);
  if (dev > lbs)
    throw imageError(
      path,
      `has ${dev}-byte logical blocks, larger than the ${lbs}-byte blocks it would be served ` +
        `with: serve it with a logical block size of ${dev} or more (--logical-block-size ${dev})`,
      { deviceBlockSize: dev },
    );
  if (size % lbs !== 0)
    throw imageError(path, `size ${size} is not a multiple of the ${lbs}-byte logical block size`, {
      size,
    });
  return size;
}

/** errno names meaning "this device cannot do that". */
const UNSUPPORTED = new Set(["EOPNOTSUPP", "ENOTSUP", "ENOSYS", "ENOTTY"]);

const errnoOf = (e: unknown): string => {
  const c = (e as { errnoCode?: unknown } | null)?.errnoCode;
  return typeof c === "string" ? c : "";
};

/** DISCARD and WRITE_ZEROES on one block device (see the module header). */
export class BlockDeviceRanges implements ImageRanges {
  readonly #fd: () => number;
  readonly #path: string;
  readonly #log: Logger;
  /** null: never use the ioctls (DISCARD does nothing, WRITE_ZEROES writes zeroes). */
  readonly #io: BlockDeviceIo | null;
  #discardRefused = false;
  #zeroOutRefused = false;

  constructor(fd: () => number, path: string, log: Logger, io: BlockDeviceIo | null) {
    this.#fd = fd;
    this.#path = path;
    this.#log = log;
    this.#io = io;
  }

  /** BLKDISCARD; nothing once the device said it cannot discard. */
  async discard(offset: number, length: number): Promise<void> {
    if (this.#io === null || this.#discardRefused) return;
    try {
      await this.#io.discard(this.#fd(), offset, length);
    } catch (e) {
      if (!UNSUPPORTED.has(errnoOf(e))) throw e;
      this.#discardRefused = true;
      this.#log.warn(`disk image ${this.#path}: the device does not discard; DISCARD does nothing`);
    }
  }

  /**
   * BLKZEROOUT (`unmap` changes nothing: the kernel keeps the blocks
   * allocated); false when refused (the caller writes zeroes).
   */
  async zeroRange(offset: number, length: number, _unmap: boolean): Promise<boolean> {
    if (this.#io === null || this.#zeroOutRefused) return false;
    try {
      await this.#io.zeroOut(this.#fd(), offset, length);
    } catch (e) {
      if (!UNSUPPORTED.has(errnoOf(e))) throw e;
      this.#zeroOutRefused = true;
      this.#log.warn(`disk image ${this.#path}: BLKZEROOUT refused; WRITE_ZEROES writes zeroes`);
      return false;
    }
    return true;
  }
}

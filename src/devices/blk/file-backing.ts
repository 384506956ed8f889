/**
 * A raw disk image, a file or a block device, as a virtio-blk backing store:
 * {@link FileBacking}. Node-only (fs). VIRTIO 1.2 §5.2.6 (requests) and
 * §5.2.6.2 (stable writes; reads after WRITE_ZEROES return zeroes);
 * docs/conformance.md "Lifecycle" (FLUSH reaches stable storage; read-only
 * images never write the file).
 *
 * FileBacking checks each call and hands it to one mechanism:
 * - reads and writes: the non-blocking fast path (file-nowait.ts), then the
 *   transfer loop (file-transfer.ts): positioned, vectored, short transfers
 *   continued, end of file read as zeroes, on the thread pool or io_uring
 *   (file-uring.ts);
 * - `direct: true` (O_DIRECT): guest buffers the kernel refuses are redone
 *   through an aligned bounce buffer (file-direct.ts);
 * - `flush()`: fdatasync, coalesced between concurrent callers, failing for
 *   good after a failed sync (file-datasync.ts);
 * - DISCARD / WRITE_ZEROES: fallocate hole punching and zeroing
 *   (fallocate.ts), BLKDISCARD / BLKZEROOUT on a block device
 *   (file-blockdev.ts); unsupported → DISCARD does nothing, WRITE_ZEROES
 *   writes zeroes;
 * - opening: flags, checks and one-line errors (file-open.ts); a block
 *   device's size and block size come from the device (file-blockdev.ts);
 * - format: an image whose first or last bytes carry a qcow2, VMDK, …
 *   signature is refused unless `format: "raw"` (image-format.ts).
 *
 * Read-only images are opened O_RDONLY; every write-type call rejects.
 *
 * @module
 */
import { open, type FileHandle } from "node:fs/promises";
import { type BlkBacking, checkBackingRange, iovLength } from "./backing.ts";
import { type FallocateFn, FileFallocate, type ImageRanges } from "./fallocate.ts";
import { BlockDeviceRanges, blockDeviceSize, loadBlockDeviceIo } from "./file-blockdev.ts";
import { DatasyncCoalescer } from "./file-datasync.ts";
import { type DirectBounce, probeDirectBounce } from "./file-direct.ts";
import { DONE, loadNativeNowait, type NowaitIo, NowaitPath } from "./file-nowait.ts";
import {
  errnoCode,
  imageError,
  imageOpenFlags,
  imageSize,
  isBlockDevicePath,
  openError,
} from "./file-open.ts";
import { formatRefusal, probeImageFormat } from "./image-format.ts";
import { type Attempt, FileTransfer, NOT_TRIED } from "./file-transfer.ts";
import { loadUringIo, THREAD_POOL_IO, type VectoredIo } from "./file-uring.ts";
import { type Logger, consoleLogger } from "../../log.ts";

export { IOV_MAX } from "./file-transfer.ts";
export type { NowaitIo } from "./file-nowait.ts";

const ZEROES = new Uint8Array(1 << 20);
/** Settled result of a request the fast path completed (awaiting it costs one microtask). */
const RESOLVED: Promise<void> = Promise.resolve();

/** Options for {@link FileBacking.open}. */
export interface FileBackingOptions {
  /** Open O_RDONLY and refuse every write (default false). */
  readonly readOnly?: boolean;
  /** Open with O_DIRECT (Linux), bypassing the page cache (default false). */
  readonly direct?: boolean;
  /**
   * The image size must be a multiple of this (default 512); a block
   * device's own logical block size must not be larger.
   */
  readonly logicalBlockSize?: number;
  /**
   * `"auto"` (default): refuse an image that carries another format's
   * signature (qcow2, VMDK, …: image-format.ts); `"raw"`: serve its bytes as
   * they are.
   */
  readonly format?: "raw" | "auto";
  /** Largest transfer per system call (default 8 MiB). */
  readonly maxIoBytes?: number;
  /**
   * fallocate(2): a function, null to never use it (always write zeroes), or
   * undefined to load the native addon on first use. On a block device,
   * null also leaves out BLKDISCARD / BLKZEROOUT (DISCARD does nothing,
   * WRITE_ZEROES writes zeroes).
   */
  readonly fallocate?: FallocateFn | null;
  /**
   * Non-blocking preadv2/pwritev2 (RWF_NOWAIT) tried before the thread pool,
   * so that page-cache hits complete inline: functions, null to never use it,
   * or undefined to load the native addon (not used with O_DIRECT).
   */
  readonly nowait?: NowaitIo | null;
  /**
   * How transfers that cannot complete without blocking run (QEMU's `aio`):
   * `"threads"`, Node's thread pool (the default), or `"io_uring"`, this
   * thread's io_uring (file-uring.ts; the thread pool where the kernel
   * refuses it). A {@link VectoredIo} object is used as given (tests).
   */
  readonly aio?: "threads" | "io_uring" | VectoredIo;
  readonly logger?: Logger;
}

/** An opened image before the FileBacking around it exists. */
interface OpenedImage {
  readonly fh: FileHandle;
  readonly size: number;
  /** DISCARD / WRITE_ZEROES for a block device; null for a file (fallocate). */
  readonly deviceRanges: BlockDeviceRanges | null;
}

/**
 * Opens the image: a writable block device O_EXCL; its size from the device
 * (file-blockdev.ts) or the file's.
 */
async function openImage(
  path: string,
  o: FileBackingOptions,
  lbs: number,
  log: Logger,
): Promise<OpenedImage> {
  const readOnly = o.readOnly ?? false;
  const direct = o.direct === true;
  const exclusive = !readOnly && (await isBlockDevicePath(path));
  let fh: FileHandle;
  try {
    fh = await open(path, imageOpenFlags(path, readOnly, direct, exclusive));
  } catch (e) {
    throw openError(path, e, readOnly, direct);
  }
  try {
    const st = await fh.stat();
    if (!st.isBlockDevice()) return { fh, size: imageSize(path, st, lbs), deviceRanges: null };
    if (!readOnly && !exclusive) throw imageError(path, "became a block device while opening");
    const io = await loadBlockDeviceIo();
    const size = blockDeviceSize(path, fh.fd, lbs, io);
    const ranges = new BlockDeviceRanges(() => fh.fd, path, log, o.fallocate === null ? null : io);
    return { fh, size, deviceRanges: ranges };
  } catch (e) {
    await fh.close().catch(() => {});
    throw e;
  }
}

/**
 * `length` bytes at `offset` for the format probe, through an aligned
 * bounce slot under O_DIRECT (the probe's reads are whole blocks).
 */
async function readProbe(
  fh: FileHandle,
  bounce: DirectBounce | null,
  offset: number,
  length: number,
): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  const slot = bounce === null ? out : await bounce.acquire();
  try {
    for (let done = 0; done < length;) {
      const n = Math.min(length - done, slot.length);
      const { bytesRead } = await fh.read(slot, 0, n, offset + done);
      if (bytesRead === 0) break; // the image shrank: the rest reads as zeroes
      if (slot !== out) out.set(slot.subarray(0, bytesRead), done);
      done += bytesRead;
    }
  } finally {
    if (slot !== out) bounce?.release(slot);
  }
  return out;
}

/**
 * A raw image: a file or a block device. Open with {@link FileBacking.open}.
 *
 * @example
 * ```ts
 * const disk = await FileBacking.open("disk.img", { readOnly: false });
 * const cfg = new BlkDeviceConfig({ capacityBytes: disk.size });
 * ```
 */
export class FileBacking implements BlkBacking {
  readonly path: string;
  readonly readOnly: boolean;
  readonly direct: boolean;
  /** The image is a block device (its size is fixed; DISCARD is BLKDISCARD). */
  readonly blockDevice: boolean;
  /** The asynchronous path in use (see {@link FileBackingOptions.aio}). */
  readonly aio: VectoredIo["name"];
  readonly #fh: FileHandle;
  readonly #nowait: NowaitPath;
  readonly #xfer: FileTransfer;
  readonly #bounce: DirectBounce | null;
  readonly #sync: DatasyncCoalescer;
  readonly #ranges: ImageRanges;
  #size: number;
  #closed = false;

  private constructor(
    path: string,
    img: OpenedImage,
    o: FileBackingOptions,
    bounce: DirectBounce | null,
    nowait: NowaitIo | null,
    io: VectoredIo,
  ) {
    const fh = img.fh;
    this.path = path;
    this.#fh = fh;
    this.#size = img.size;
    this.readOnly = o.readOnly ?? false;
    this.direct = o.direct ?? false;
    this.blockDevice = img.deviceRanges !== null;
    const maxIo = o.maxIoBytes ?? 8 << 20;
    const log = o.logger ?? consoleLogger;
    this.#nowait = new NowaitPath(nowait, o.readOnly === true, maxIo);
    this.#xfer = new FileTransfer(fh, maxIo, this.#nowait, io);
    this.aio = io.name;
    this.#bounce = bounce;
    this.#sync = new DatasyncCoalescer(fh, path, log);
    this.#ranges = img.deviceRanges ?? new FileFallocate(fh, path, log, o.fallocate);
  }

  /**
   * Opens a raw image: a regular file or a block device.
   *
   * @throws {VirtioError} `BLK_IMAGE` with a one-line message: the image does
   *   not exist, is neither a regular file nor a block device, is not
   *   writable (open it read-only), is a block device in use (mounted) or
   *   with logical blocks larger than `logicalBlockSize`, has a size that is
   *   not a multiple of the logical block size, O_DIRECT is not supported,
   *   or it carries another format's signature (unless `format: "raw"`).
   * @throws {RangeError} for bad options.
   */
  static async open(path: string, options: FileBackingOptions = {}): Promise<FileBacking> {
    const lbs = options.logicalBlockSize ?? 512;
    if (!Number.isInteger(lbs) || lbs < 512 || lbs > 65536 || (lbs & (lbs - 1)) !== 0)
      throw new RangeError(`logicalBlockSize must be a power of two in 512..65536, got ${lbs}`);
    const maxIo = options.maxIoBytes ?? 8 << 20;
    if (!Number.isInteger(maxIo) || maxIo < 512 || maxIo > 0x7fff_f000 || maxIo % 512 !== 0)
      throw new RangeError(`maxIoBytes must be a multiple of 512 in 512..0x7ffff000, got ${maxIo}`);
    const format = options.format ?? "auto";
    if (format !== "auto" && format !== "raw")
      throw new RangeError(`format must be "raw" or "auto", got ${String(format)}`);
    const log = options.logger ?? consoleLogger;
    const img = await openImage(path, options, lbs, log);
    try {
      const direct = options.direct === true;
      const bounce = direct ? await probeDirectBounce(path, img.fh, img.size, lbs) : null;
      const nowait =
        direct || options.nowait === null ? null : (options.nowait ?? (await loadNativeNowait()));
      const aio = options.aio ?? "threads";
      const io =
        aio === "threads" ? THREAD_POOL_IO : aio === "io_uring" ? await loadUringIo(log) : aio;
      const found =
        format === "auto"
          ? await probeImageFormat(img.size, lbs, (o, n) => readProbe(img.fh, bounce, o, n))
          : null;
      if (found !== null) throw imageError(path, formatRefusal(found), { format: found });
      return new FileBacking(path, img, options, bounce, nowait, io);
    } catch (e) {
      await img.fh.close().catch(() => {});
      throw e;
    }
  }

  get size(): number {
    return this.#size;
  }

  /** O_DIRECT requests that went through the bounce buffer (guest buffers the kernel refused). */
  get bouncedRequests(): number {
    return this.#bounce === null ? 0 : this.#bounce.count;
  }

  #check(offset: number, length: number, write: boolean): void {
    if (this.#closed) throw new Error(`disk image ${this.path} is closed`);
    if (write && this.readOnly) throw new Error(`disk image ${this.path} is read-only`);
    checkBackingRange(offset, length, this.#size);
  }

  readv(offset: number, iov: readonly Uint8Array[]): Promise<void> {
    const first = this.#firstAttempt(offset, iov, false);
    return first === DONE ? RESOLVED : this.#transfer(offset, iov, false, first);
  }

  writev(offset: number, iov: readonly Uint8Array[]): Promise<void> {
    const first = this.#firstAttempt(offset, iov, true);
    return first === DONE ? RESOLVED : this.#transfer(offset, iov, true, first);
  }

  /** The fast path's attempt (see file-nowait.ts); NOT_TRIED on a closed or read-only image. */
  #firstAttempt(offset: number, iov: readonly Uint8Array[], write: boolean): Attempt {
    if (this.#closed || (write && this.readOnly)) return NOT_TRIED;
    return this.#nowait.first(this.#fh.fd, offset, iov, write, this.#size);
  }

  /** The usual path: checks, the transfer loop, and the O_DIRECT bounce when the kernel refuses the buffers. */
  async #transfer(
    offset: number,
    iov: readonly Uint8Array[],
    write: boolean,
    first: Attempt,
  ): Promise<void> {
    this.#check(offset, iovLength(iov), write);
    try {
      await this.#xfer.run(offset, iov, write, first);
    } catch (e) {
      if (this.#bounce === null || errnoCode(e) !== "EINVAL") throw e;
      await this.#bounce.redo(this.#xfer, offset, iov, write);
    }
  }

  /** fdatasync, shared between concurrent callers (see file-datasync.ts). */
  flush(): Promise<void> {
    if (this.#closed) return Promise.reject(new Error(`disk image ${this.path} is closed`));
    if (this.readOnly) return Promise.resolve();
    return this.#sync.flush();
  }

  async discard(offset: number, length: number): Promise<void> {
    this.#check(offset, length, true);
    if (length === 0) return;
    await this.#ranges.discard(offset, length);
  }

  async writeZeroes(offset: number, length: number, unmap: boolean): Promise<void> {
    this.#check(offset, length, true);
    if (length === 0) return;
    if (await this.#ranges.zeroRange(offset, length, unmap)) return;
    if (this.#bounce !== null) await this.#bounce.writeZeroes(this.#xfer, offset, length);
    else await this.#xfer.writeZeroes(ZEROES, offset, length);
  }

  /** Truncates or extends the file (new bytes read as zeroes); a block device's size is fixed. */
  async resize(size: number): Promise<void> {
    if (this.readOnly) throw new Error(`disk image ${this.path} is read-only`);
    if (this.blockDevice)
      throw new Error(`disk image ${this.path} is a block device: its size cannot be changed`);
    if (!Number.isSafeInteger(size) || size < 0 || size % 512 !== 0)
      throw new RangeError(`image size must be a multiple of 512, got ${size}`);
    await this.#fh.truncate(size);
    this.#size = size;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#fh.close();
  }
}

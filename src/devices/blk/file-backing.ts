/**
 * A raw disk image file as a virtio-blk backing store. Node-only (fs).
 * VIRTIO 1.2 §5.2.6 (requests) and §5.2.6.2 (stable writes; reads after
 * WRITE_ZEROES return zeroes); docs/conformance.md "Lifecycle" (FLUSH reaches
 * stable storage; read-only devices never write the file).
 *
 * - Fast path: a request that fits one call and moves entirely without
 *   blocking (a page-cache hit, see `nowait`) completes inside readv/writev,
 *   which then return a settled promise: no async frames, no batch array.
 * - I/O is positioned and vectored (preadv/pwritev, callback API) straight
 *   into / out of the views of guest memory the request gives. Each call
 *   covers at most {@link IOV_MAX} views and `maxIoBytes` bytes; short
 *   transfers continue where they stopped (every loop makes progress or ends).
 * - A read that meets end-of-file (the image shrank behind our back) returns
 *   zeroes for the missing part, as QEMU's raw driver does.
 * - `flush()` is fdatasync. Concurrent flushes share one fdatasync when it
 *   started after they were requested (a sync that started earlier may miss
 *   their writes, so they wait for the next). Once an fdatasync has failed,
 *   every later flush fails too: the kernel may have dropped the dirty pages,
 *   and a later fdatasync succeeding would acknowledge lost data.
 * - Read-only images are opened O_RDONLY; every write-type call rejects.
 * - `direct: true` opens with O_DIRECT. Guest buffers are tried directly;
 *   when the kernel refuses them (EINVAL: misaligned), the request is redone
 *   through an aligned bounce buffer (JavaScript cannot see buffer
 *   addresses, so the aligned window inside the bounce allocation is found
 *   once by probing reads). Redoing is safe: reads and writes of the same
 *   bytes at the same place are idempotent.
 * - DISCARD punches a hole (fallocate PUNCH_HOLE | KEEP_SIZE); unsupported →
 *   nothing. WRITE_ZEROES uses ZERO_RANGE (or a hole with UNMAP);
 *   unsupported → zeroes are written.
 *
 * @module
 */
import { constants as fsConstants, readv as fsReadv, writev as fsWritev } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { ErrorCode, VirtioError } from "../../errors.ts";
import { type BlkBacking, checkBackingRange, iovLength } from "./backing.ts";
import {
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
  type FallocateFn,
  loadNativeFallocate,
} from "./fallocate.ts";
import { type Logger, consoleLogger, errorText } from "../../log.ts";

/**
 * One positioned preadv/pwritev through the callback API: about half the CPU
 * per call of FileHandle.readv/writev, which allocate a result object and
 * go through extra promise machinery for every call.
 */
function vectored(
  fd: number,
  iov: Uint8Array[],
  position: number,
  write: boolean,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const done = (err: NodeJS.ErrnoException | null, n: number): void =>
      err ? reject(err) : resolve(n);
    if (write) fsWritev(fd, iov, position, done);
    else fsReadv(fd, iov, position, done);
  });
}

/** Most views passed to one preadv/pwritev (Linux IOV_MAX). */
export const IOV_MAX = 1024;

const ZEROES = new Uint8Array(1 << 20);
/** Settled result of a request the fast path completed (awaiting it costs one microtask). */
const RESOLVED: Promise<void> = Promise.resolve();
/** {@link FileBacking} fast path outcomes besides a byte count or null (would block). */
const DONE = -1;
const NOT_TRIED = -2;
/** Bytes the first non-blocking attempt moved, null (would block), DONE or NOT_TRIED. */
type Attempt = number | null;
const PROBE_BYTES = 8192;
const BOUNCE_SLOT_BYTES = 256 * 1024;
const BOUNCE_SLOTS = 4;

/** Options for {@link FileBacking.open}. */
export interface FileBackingOptions {
  /** Open O_RDONLY and refuse every write (default false). */
  readonly readOnly?: boolean;
  /** Open with O_DIRECT (Linux), bypassing the page cache (default false). */
  readonly direct?: boolean;
  /** The image size must be a multiple of this (default 512). */
  readonly logicalBlockSize?: number;
  /** Largest transfer per system call (default 8 MiB). */
  readonly maxIoBytes?: number;
  /**
   * fallocate(2): a function, null to never use it (always write zeroes), or
   * undefined to load the native addon on first use.
   */
  readonly fallocate?: FallocateFn | null;
  /**
   * Non-blocking preadv2/pwritev2 (RWF_NOWAIT) tried before the thread pool,
   * so that page-cache hits complete inline: functions, null to never use it,
   * or undefined to load the native addon (not used with O_DIRECT).
   */
  readonly nowait?: NowaitIo | null;
  readonly logger?: Logger;
}

/** Non-blocking vectored I/O: bytes transferred, or null if it would block. */
export interface NowaitIo {
  readonly read: (fd: number, iov: readonly Uint8Array[], position: number) => number | null;
  readonly write: (fd: number, iov: readonly Uint8Array[], position: number) => number | null;
}

let nativeNowait: Promise<NowaitIo | null> | undefined;

/** The native RWF_NOWAIT I/O, or null when the addon is not built (imported on first use). */
function loadNativeNowait(): Promise<NowaitIo | null> {
  nativeNowait ??= import("../../native/index.ts").then(
    (m) => (m.nativeAvailable() ? { read: m.preadvNowait, write: m.pwritevNowait } : null),
    () => null,
  );
  return nativeNowait;
}

function imageError(path: string, what: string, details: Record<string, string | number> = {}) {
  return new VirtioError(ErrorCode.BLK_IMAGE, `disk image ${path}: ${what}`, { path, ...details });
}

function errnoCode(e: unknown): string {
  const c = (e as { code?: unknown } | null)?.code;
  return typeof c === "string" ? c : "";
}

/** Aligned bounce buffers for O_DIRECT, handed out one request at a time per slot. */
class BouncePool {
  readonly #slots: Uint8Array[];
  readonly #waiters: ((slot: Uint8Array) => void)[] = [];

  constructor(window: Uint8Array) {
    this.#slots = [];
    for (let i = 0; i < BOUNCE_SLOTS; i++)
      this.#slots.push(window.subarray(i * BOUNCE_SLOT_BYTES, (i + 1) * BOUNCE_SLOT_BYTES));
  }

  acquire(): Promise<Uint8Array> {
    const s = this.#slots.pop();
    if (s !== undefined) return Promise.resolve(s);
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  release(slot: Uint8Array): void {
    const w = this.#waiters.shift();
    if (w !== undefined) w(slot);
    else this.#slots.push(slot);
  }
}

/**
 * A raw image file. Open with {@link FileBacking.open}.
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
  readonly #fh: FileHandle;
  readonly #maxIo: number;
  readonly #log: Logger;
  readonly #bounce: BouncePool | null;
  #size: number;
  #fallocate: FallocateFn | null | undefined;
  #syncRunning: Promise<void> | null = null;
  #syncQueued: Promise<void> | null = null;
  #syncFailed: Error | undefined = undefined;
  #closed = false;
  /** RWF_NOWAIT reads / writes; null once the file system refused them (or never). */
  #nowaitRead: NowaitIo["read"] | null;
  #nowaitWrite: NowaitIo["write"] | null;
  /** fallocate modes the file system refused with EOPNOTSUPP: not tried again. */
  readonly #unsupportedModes = new Set<number>();
  #bounceCount = 0;

  private constructor(
    path: string,
    fh: FileHandle,
    size: number,
    o: FileBackingOptions,
    bounce: BouncePool | null,
    nowait: NowaitIo | null,
  ) {
    this.path = path;
    this.#nowaitRead = nowait === null ? null : nowait.read;
    this.#nowaitWrite = nowait === null || o.readOnly === true ? null : nowait.write;
    this.#fh = fh;
    this.#size = size;
    this.readOnly = o.readOnly ?? false;
    this.direct = o.direct ?? false;
    this.#maxIo = o.maxIoBytes ?? 8 << 20;
    this.#fallocate = o.fallocate;
    this.#log = o.logger ?? consoleLogger;
    this.#bounce = bounce;
  }

  /**
   * Opens a raw image.
   *
   * @throws {VirtioError} `BLK_IMAGE` with a one-line message: the image does
   *   not exist, is not a regular file, is not writable (open it read-only),
   *   has a size that is not a multiple of the logical block size, or
   *   O_DIRECT is not supported.
   * @throws {RangeError} for bad options.
   */
  static async open(path: string, options: FileBackingOptions = {}): Promise<FileBacking> {
    const lbs = options.logicalBlockSize ?? 512;
    if (!Number.isInteger(lbs) || lbs < 512 || lbs > 65536 || (lbs & (lbs - 1)) !== 0)
      throw new RangeError(`logicalBlockSize must be a power of two in 512..65536, got ${lbs}`);
    const maxIo = options.maxIoBytes ?? 8 << 20;
    if (!Number.isInteger(maxIo) || maxIo < 512 || maxIo > 0x7fff_f000 || maxIo % 512 !== 0)
      throw new RangeError(`maxIoBytes must be a multiple of 512 in 512..0x7ffff000, got ${maxIo}`);
    const readOnly = options.readOnly ?? false;
    let flags = readOnly ? fsConstants.O_RDONLY : fsConstants.O_RDWR;
    if (options.direct === true) {
      const O_DIRECT = (fsConstants as { O_DIRECT?: number }).O_DIRECT;
      if (O_DIRECT === undefined)
        throw imageError(path, "O_DIRECT is not available on this platform");
      flags |= O_DIRECT;
    }
    let fh: FileHandle;
    try {
      fh = await open(path, flags);
    } catch (e) {
      throw openError(path, e, readOnly, options.direct === true);
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw imageError(path, "not a regular file");
      if (st.size % lbs !== 0)
        throw imageError(
          path,
          `size ${st.size} is not a multiple of the ${lbs}-byte logical block size`,
          {
            size: st.size,
          },
        );
      const bounce = options.direct === true ? await probeBounce(path, fh, st.size, lbs) : null;
      const nowait =
        options.direct === true || options.nowait === null
          ? null
          : (options.nowait ?? (await loadNativeNowait()));
      return new FileBacking(path, fh, st.size, options, bounce, nowait);
    } catch (e) {
      await fh.close().catch(() => {});
      throw e;
    }
  }

  get size(): number {
    return this.#size;
  }

  /** O_DIRECT requests that went through the bounce buffer (guest buffers the kernel refused). */
  get bouncedRequests(): number {
    return this.#bounceCount;
  }

  #check(offset: number, length: number, write: boolean): void {
    if (this.#closed) throw new Error(`disk image ${this.path} is closed`);
    if (write && this.readOnly) throw new Error(`disk image ${this.path} is read-only`);
    checkBackingRange(offset, length, this.#size);
  }

  readv(offset: number, iov: readonly Uint8Array[]): Promise<void> {
    const first = this.#firstAttempt(offset, iov, false);
    return first === DONE ? RESOLVED : this.#readvAsync(offset, iov, first);
  }

  async #readvAsync(offset: number, iov: readonly Uint8Array[], first: Attempt): Promise<void> {
    this.#check(offset, iovLength(iov), false);
    try {
      await this.#transfer(offset, iov, false, first);
    } catch (e) {
      if (this.#bounce === null || errnoCode(e) !== "EINVAL") throw e;
      await this.#bounced(offset, iov, false);
    }
  }

  writev(offset: number, iov: readonly Uint8Array[]): Promise<void> {
    const first = this.#firstAttempt(offset, iov, true);
    return first === DONE ? RESOLVED : this.#writevAsync(offset, iov, first);
  }

  async #writevAsync(offset: number, iov: readonly Uint8Array[], first: Attempt): Promise<void> {
    this.#check(offset, iovLength(iov), true);
    try {
      await this.#transfer(offset, iov, true, first);
    } catch (e) {
      if (this.#bounce === null || errnoCode(e) !== "EINVAL") throw e;
      await this.#bounced(offset, iov, true);
    }
  }

  /**
   * The fast path of a valid request that fits one system call: its
   * non-blocking attempt, made here, synchronously — the very attempt
   * {@link #transfer} would start with. {@link DONE} when it moved every byte
   * (a page-cache hit: the caller returns a settled promise, with no async
   * frames and no batch array); otherwise its result for #transfer to go on
   * from; NOT_TRIED when the request is not eligible (invalid, too large, no
   * non-blocking I/O), leaving validation and errors to the usual path.
   */
  #firstAttempt(offset: number, iov: readonly Uint8Array[], write: boolean): Attempt {
    if ((write ? this.#nowaitWrite : this.#nowaitRead) === null || iov.length > IOV_MAX)
      return NOT_TRIED;
    if (this.#closed || (write && this.readOnly)) return NOT_TRIED;
    const total = iovLength(iov);
    if (total === 0 || total > this.#maxIo) return NOT_TRIED;
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + total > this.#size)
      return NOT_TRIED;
    const n = this.#tryNowait(iov as Uint8Array[], offset, write);
    return n === total ? DONE : n;
  }

  /**
   * Moves all bytes of `iov` from/to the file at `offset`, in calls of at most
   * IOV_MAX views and maxIoBytes bytes, continuing after short transfers.
   * `first` is the outcome of the first non-blocking attempt when
   * {@link #firstAttempt} already made it (same views, same position).
   */
  async #transfer(
    offset: number,
    iov: readonly Uint8Array[],
    write: boolean,
    first: Attempt = NOT_TRIED,
  ): Promise<void> {
    const total = iovLength(iov);
    let done = 0;
    let idx = 0; // first view not fully transferred
    let skip = 0; // bytes of iov[idx] already transferred
    const batch: Uint8Array[] = [];
    while (done < total) {
      batch.length = 0;
      let bytes = 0;
      for (let i = idx; i < iov.length && batch.length < IOV_MAX && bytes < this.#maxIo; i++) {
        let v = i === idx && skip > 0 ? iov[i]!.subarray(skip) : iov[i]!;
        if (bytes + v.length > this.#maxIo) v = v.subarray(0, this.#maxIo - bytes);
        batch.push(v);
        bytes += v.length;
      }
      let n = first === NOT_TRIED ? this.#tryNowait(batch, offset + done, write) : first;
      first = NOT_TRIED;
      if (n === null) n = await vectored(this.#fh.fd, batch, offset + done, write);
      if (n === 0) {
        if (write) throw new Error(`write at ${offset + done} made no progress`);
        zeroFrom(iov, idx, skip); // end of file: the rest reads as zeroes
        return;
      }
      done += n;
      // Advance (idx, skip) by n bytes; bounded by the views in this batch.
      let left = n;
      while (left > 0) {
        const rest = iov[idx]!.length - skip;
        if (left < rest) {
          skip += left;
          left = 0;
        } else {
          left -= rest;
          idx++;
          skip = 0;
        }
      }
      while (idx < iov.length && iov[idx]!.length === 0) idx++;
    }
  }

  /**
   * One non-blocking attempt: the bytes moved (> 0), or null to go through
   * the thread pool (would block, end of file, not supported, or an error the
   * asynchronous call will report properly).
   */
  #tryNowait(iov: Uint8Array[], position: number, write: boolean): number | null {
    const fn = write ? this.#nowaitWrite : this.#nowaitRead;
    if (fn === null) return null;
    try {
      const n = fn(this.#fh.fd, iov, position);
      return n !== null && n > 0 ? n : null;
    } catch (e) {
      const { errnoCode: code } = (e ?? {}) as { errnoCode?: string };
      if (code === "EOPNOTSUPP" || code === "EINVAL" || code === "ENOSYS") {
        if (write) this.#nowaitWrite = null;
        else this.#nowaitRead = null;
      }
      return null;
    }
  }

  /** The O_DIRECT fallback: the whole request again through an aligned bounce slot. */
  async #bounced(offset: number, iov: readonly Uint8Array[], write: boolean): Promise<void> {
    const pool = this.#bounce!;
    this.#bounceCount++;
    const slot = await pool.acquire();
    try {
      const total = iovLength(iov);
      const cursor = { idx: 0, skip: 0 };
      for (let done = 0; done < total;) {
        const n = Math.min(slot.length, total - done);
        const chunk = slot.subarray(0, n);
        if (write) {
          gather(iov, cursor, chunk);
          await this.#transfer(offset + done, [chunk], true);
        } else {
          await this.#transfer(offset + done, [chunk], false);
          scatter(chunk, iov, cursor);
        }
        done += n;
      }
    } finally {
      pool.release(slot);
    }
  }

  /** fdatasync, shared between concurrent callers (see the module notes). */
  flush(): Promise<void> {
    if (this.#closed) return Promise.reject(new Error(`disk image ${this.path} is closed`));
    if (this.readOnly) return Promise.resolve();
    if (this.#syncFailed !== undefined) return Promise.reject(this.#syncFailed);
    // A queued sync has not started yet, so it will cover this caller's completed writes.
    if (this.#syncQueued !== null) return this.#syncQueued;
    if (this.#syncRunning === null) return this.#startSync();
    const queued = this.#syncRunning
      .catch(() => {})
      .then(() => {
        this.#syncQueued = null;
        return this.#syncFailed !== undefined
          ? Promise.reject(this.#syncFailed)
          : this.#startSync();
      });
    this.#syncQueued = queued;
    return queued;
  }

  #startSync(): Promise<void> {
    const p: Promise<void> = this.#fh.datasync().then(
      () => {
        if (this.#syncRunning === p) this.#syncRunning = null;
      },
      (e: unknown) => {
        if (this.#syncRunning === p) this.#syncRunning = null;
        this.#syncFailed = e instanceof Error ? e : new Error(String(e));
        this.#log.error(
          `disk image ${this.path}: fdatasync failed, flushes fail from now on: ${errorText(e)}`,
        );
        throw e;
      },
    );
    this.#syncRunning = p;
    return p;
  }

  async #fallocateFn(): Promise<FallocateFn | null> {
    if (this.#fallocate === undefined) {
      this.#fallocate = await loadNativeFallocate();
      if (this.#fallocate === null)
        this.#log.warn(
          `disk image ${this.path}: native fallocate unavailable; WRITE_ZEROES writes zeroes`,
        );
    }
    return this.#fallocate;
  }

  /** fallocate, or false if unsupported (then that mode is not tried again). */
  async #tryFallocate(mode: number, offset: number, length: number): Promise<boolean> {
    if (this.#unsupportedModes.has(mode)) return false;
    const fn = await this.#fallocateFn();
    if (fn === null) return false;
    if (fn(this.#fh.fd, mode, offset, length)) return true;
    this.#unsupportedModes.add(mode);
    this.#log.warn(
      `disk image ${this.path}: fallocate mode ${mode} not supported by the file system`,
    );
    return false;
  }

  async discard(offset: number, length: number): Promise<void> {
    this.#check(offset, length, true);
    if (length === 0) return;
    // §5.2.6.2: "the device MAY deallocate": without hole punching a DISCARD does nothing.
    await this.#tryFallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
  }

  async writeZeroes(offset: number, length: number, unmap: boolean): Promise<void> {
    this.#check(offset, length, true);
    if (length === 0) return;
    // A punched hole reads back as zeroes, so both modes satisfy "reads ... MUST return zeroes".
    const mode = unmap ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE : FALLOC_FL_ZERO_RANGE;
    if (await this.#tryFallocate(mode, offset, length)) return;
    if (unmap && (await this.#tryFallocate(FALLOC_FL_ZERO_RANGE, offset, length))) return;
    await this.#writeZeroesByWriting(offset, length);
  }

  async #writeZeroesByWriting(offset: number, length: number): Promise<void> {
    if (this.#bounce !== null) {
      const slot = await this.#bounce.acquire();
      try {
        slot.fill(0);
        for (let done = 0; done < length;) {
          const n = Math.min(slot.length, length - done);
          await this.#transfer(offset + done, [slot.subarray(0, n)], true);
          done += n;
        }
      } finally {
        this.#bounce.release(slot);
      }
      return;
    }
    for (let done = 0; done < length;) {
      const n = Math.min(ZEROES.length, length - done);
      await this.#transfer(offset + done, [ZEROES.subarray(0, n)], true);
      done += n;
    }
  }

  /** Truncates or extends the file (new bytes read as zeroes). */
  async resize(size: number): Promise<void> {
    if (this.readOnly) throw new Error(`disk image ${this.path} is read-only`);
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

function openError(path: string, e: unknown, readOnly: boolean, direct: boolean): VirtioError {
  const code = errnoCode(e);
  switch (code) {
    case "ENOENT":
      return imageError(path, "does not exist", { errno: code });
    case "EACCES":
    case "EPERM":
    case "EROFS":
      return imageError(
        path,
        readOnly ? `cannot be opened (${code})` : `is not writable (${code}); open it read-only`,
        { errno: code },
      );
    case "EISDIR":
      return imageError(path, "not a regular file", { errno: code });
    case "EINVAL":
      if (direct)
        return imageError(path, "the file system does not support O_DIRECT", { errno: code });
      break;
  }
  return imageError(path, `cannot be opened: ${errorText(e)}`, { errno: code });
}

/**
 * Finds, inside a fresh allocation, a window where O_DIRECT reads succeed
 * (probing 16-byte steps with page-crossing reads), and checks that the
 * device accepts transfers of the logical block size.
 */
async function probeBounce(
  path: string,
  fh: FileHandle,
  size: number,
  lbs: number,
): Promise<BouncePool> {
  if (size < PROBE_BYTES)
    throw imageError(path, `O_DIRECT needs an image of at least ${PROBE_BYTES} bytes`, { size });
  const bytes = BOUNCE_SLOTS * BOUNCE_SLOT_BYTES;
  const raw = new Uint8Array(new ArrayBuffer(bytes + 4096));
  for (let off = 0; off < 4096; off += 16) {
    try {
      await fh.read(raw.subarray(off, off + PROBE_BYTES), 0, PROBE_BYTES, 0);
    } catch (e) {
      if (errnoCode(e) === "EINVAL") continue;
      throw imageError(path, `O_DIRECT probe failed: ${errorText(e)}`);
    }
    try {
      await fh.read(raw.subarray(off, off + lbs), 0, lbs, lbs);
    } catch (e) {
      throw imageError(
        path,
        `O_DIRECT refuses ${lbs}-byte blocks; use a larger logical block size (${errorText(e)})`,
      );
    }
    return new BouncePool(raw.subarray(off, off + bytes));
  }
  throw imageError(path, "O_DIRECT: found no aligned buffer");
}

/** Zero-fills iov from view `idx`, byte `skip` on. */
function zeroFrom(iov: readonly Uint8Array[], idx: number, skip: number): void {
  for (let i = idx; i < iov.length; i++) iov[i]!.fill(0, i === idx ? skip : 0);
}

/** Copies from the views at `cursor` into `dst` (dst.length bytes), advancing the cursor. */
function gather(
  iov: readonly Uint8Array[],
  cursor: { idx: number; skip: number },
  dst: Uint8Array,
): void {
  let o = 0;
  while (o < dst.length && cursor.idx < iov.length) {
    const v = iov[cursor.idx]!;
    const n = Math.min(v.length - cursor.skip, dst.length - o);
    dst.set(v.subarray(cursor.skip, cursor.skip + n), o);
    o += n;
    cursor.skip += n;
    if (cursor.skip === v.length) {
      cursor.idx++;
      cursor.skip = 0;
    }
  }
}

/** Copies `src` into the views at `cursor`, advancing the cursor. */
function scatter(
  src: Uint8Array,
  iov: readonly Uint8Array[],
  cursor: { idx: number; skip: number },
): void {
  let o = 0;
  while (o < src.length && cursor.idx < iov.length) {
    const v = iov[cursor.idx]!;
    const n = Math.min(v.length - cursor.skip, src.length - o);
    v.set(src.subarray(o, o + n), cursor.skip);
    o += n;
    cursor.skip += n;
    if (cursor.skip === v.length) {
      cursor.idx++;
      cursor.skip = 0;
    }
  }
}

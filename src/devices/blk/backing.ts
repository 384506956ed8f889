/**
 * The backing store behind a virtio-blk device: the interface every store
 * implements, and {@link MemoryBacking}, the portable store for tests and for
 * emulators running in a browser. VIRTIO 1.2 §5.2.6 (what each request type
 * does to the disk).
 *
 * Offsets and lengths reaching a store have already been validated against
 * the device's capacity by the request parser; stores still check them and
 * reject (the request then completes with IOERR), never write out of range.
 *
 * @module
 */

/**
 * A block store: asynchronous, vectored. Every method may reject; the device
 * then answers the request with VIRTIO_BLK_S_IOERR and stays usable.
 *
 * `iov` views may alias guest memory: a store uses them only until the
 * returned promise settles.
 */
export interface BlkBacking {
  /** Current size in bytes (a safe integer, a multiple of 512). */
  readonly size: number;
  /** True if the store refuses every write. */
  readonly readOnly: boolean;
  /** Fills `iov` (in order) with the bytes at `offset`. */
  readv(offset: number, iov: readonly Uint8Array[]): Promise<void>;
  /** Writes the bytes of `iov` (in order) at `offset`. */
  writev(offset: number, iov: readonly Uint8Array[]): Promise<void>;
  /** Makes every completed write durable (fdatasync for files). */
  flush(): Promise<void>;
  /** May deallocate [offset, offset + length); later reads return old data or zeroes. */
  discard(offset: number, length: number): Promise<void>;
  /**
   * Makes [offset, offset + length) read back as zeroes; with `unmap` the
   * store may deallocate the range instead of writing.
   */
  writeZeroes(offset: number, length: number, unmap: boolean): Promise<void>;
  /** Grows or shrinks the store (the device's capacity follows separately). */
  resize?(size: number): Promise<void>;
  /** Releases the store; later calls reject. */
  close(): Promise<void>;
}

/** Throws a RangeError unless [offset, offset + length) lies inside `size`. */
export function checkBackingRange(offset: number, length: number, size: number): void {
  if (
    !(Number.isSafeInteger(offset) && Number.isSafeInteger(length)) ||
    offset < 0 ||
    length < 0 ||
    offset + length > size
  ) {
    throw new RangeError(`range [${offset}, +${length}) is outside the ${size}-byte store`);
  }
}

/** Total bytes of a list of views. */
export function iovLength(iov: readonly Uint8Array[]): number {
  let n = 0;
  for (const v of iov) n += v.length;
  return n;
}

/** Runs `fn` now; its outcome as a settled promise (a throw becomes a rejection). */
function settle(fn: () => void): Promise<void> {
  try {
    fn();
    return Promise.resolve();
  } catch (e) {
    return Promise.reject(e instanceof Error ? e : new Error(String(e)));
  }
}

/** Options for {@link MemoryBacking}. */
export interface MemoryBackingOptions {
  /** Refuse every write (default false). */
  readonly readOnly?: boolean;
  /**
   * Use the given bytes in place instead of copying them (e.g. a view of a
   * SharedArrayBuffer several workers serve); the size is then fixed.
   */
  readonly inPlace?: boolean;
}

/**
 * A disk held in memory (portable). Completions resolve asynchronously, in
 * submission order.
 *
 * @example
 * ```ts
 * const disk = new MemoryBacking(1 << 20); // 1 MiB of zeroes
 * ```
 */
export class MemoryBacking implements BlkBacking {
  #data: Uint8Array;
  #closed = false;
  readonly readOnly: boolean;
  readonly #inPlace: boolean;

  /**
   * @param content a size in bytes (zero-filled) or the initial bytes (copied,
   *   unless `inPlace`). The size must be a multiple of 512.
   */
  constructor(content: number | Uint8Array, options: MemoryBackingOptions = {}) {
    const size = typeof content === "number" ? content : content.length;
    if (!Number.isSafeInteger(size) || size < 0 || size % 512 !== 0)
      throw new RangeError(`memory disk size must be a multiple of 512, got ${size}`);
    this.#inPlace = options.inPlace === true && typeof content !== "number";
    this.#data =
      typeof content === "number"
        ? new Uint8Array(size)
        : this.#inPlace
          ? content
          : content.slice();
    this.readOnly = options.readOnly ?? false;
  }

  get size(): number {
    return this.#data.length;
  }

  /** A copy of the disk's bytes (for tests and snapshots). */
  snapshot(): Uint8Array {
    return this.#data.slice();
  }

  #check(offset: number, length: number, write: boolean): void {
    if (this.#closed) throw new Error("memory disk is closed");
    if (write && this.readOnly) throw new Error("memory disk is read-only");
    checkBackingRange(offset, length, this.#data.length);
  }

  readv(offset: number, iov: readonly Uint8Array[]): Promise<void> {
    return settle(() => {
      this.#check(offset, iovLength(iov), false);
      let pos = offset;
      for (const v of iov) {
        v.set(this.#data.subarray(pos, pos + v.length));
        pos += v.length;
      }
    });
  }

  writev(offset: number, iov: readonly Uint8Array[]): Promise<void> {
    return settle(() => {
      this.#check(offset, iovLength(iov), true);
      let pos = offset;
      for (const v of iov) {
        this.#data.set(v, pos);
        pos += v.length;
      }
    });
  }

  flush(): Promise<void> {
    return this.#closed ? Promise.reject(new Error("memory disk is closed")) : Promise.resolve();
  }

  discard(offset: number, length: number): Promise<void> {
    return this.writeZeroes(offset, length, true);
  }

  writeZeroes(offset: number, length: number, _unmap: boolean): Promise<void> {
    return settle(() => {
      this.#check(offset, length, true);
      this.#data.fill(0, offset, offset + length);
    });
  }

  resize(size: number): Promise<void> {
    if (this.#inPlace) return Promise.reject(new Error("a disk used in place cannot be resized"));
    if (!Number.isSafeInteger(size) || size < 0 || size % 512 !== 0)
      return Promise.reject(new RangeError(`memory disk size must be a multiple of 512`));
    const next = new Uint8Array(size);
    next.set(this.#data.subarray(0, Math.min(size, this.#data.length)));
    this.#data = next;
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.#closed = true;
    return Promise.resolve();
  }
}

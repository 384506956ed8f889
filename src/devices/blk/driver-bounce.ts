/**
 * The virtio-blk driver's bounce pool: a fixed window of guest memory the
 * driver owns, handed out in contiguous runs of pages for request payloads
 * the device must see (copied user data, DISCARD / WRITE_ZEROES segment
 * tables, the GET_ID buffer). VIRTIO 1.2 §2.7.13 (the driver places buffers
 * in guest memory before making them available).
 *
 * First fit over a page map, starting where the last allocation ended (next
 * fit: requests complete roughly in order, so the next free run is usually
 * right there). Every scan is bounded by the page count. No allocation of
 * JS objects per call.
 *
 * @module
 */

/** A contiguous run of pages in guest memory, first fit; `alloc` returns -1 when nothing fits. */
export class BouncePool {
  /** Guest-physical address of the first page. */
  readonly addr: number;
  readonly pageSize: number;
  readonly pages: number;
  /** 1 = page in use. */
  readonly #used: Uint8Array;
  #hint = 0;
  #freePages: number;

  /**
   * @param addr guest address of the window (a multiple of `pageSize` is not required).
   * @param bytes window size; the pool holds `floor(bytes / pageSize)` pages.
   * @throws {RangeError} for a page size that is not a power of two ≥ 16, or a window without a page.
   */
  constructor(addr: number, bytes: number, pageSize: number) {
    if (!Number.isInteger(pageSize) || pageSize < 16 || (pageSize & (pageSize - 1)) !== 0)
      throw new RangeError(`bounce page size ${pageSize} must be a power of two >= 16`);
    const pages = Math.floor(bytes / pageSize);
    if (!Number.isSafeInteger(addr) || addr < 0 || pages < 1)
      throw new RangeError(`bounce window [${addr}, +${bytes}) holds no ${pageSize}-byte page`);
    this.addr = addr;
    this.pageSize = pageSize;
    this.pages = pages;
    this.#used = new Uint8Array(pages);
    this.#freePages = pages;
  }

  /** Total bytes of the pool. */
  get bytes(): number {
    return this.pages * this.pageSize;
  }

  /** Bytes not handed out (possibly fragmented). */
  get freeBytes(): number {
    return this.#freePages * this.pageSize;
  }

  /** Pages a request of `bytes` takes. */
  pagesFor(bytes: number): number {
    return Math.max(1, Math.ceil(bytes / this.pageSize));
  }

  /**
   * A contiguous run for `bytes` (rounded up to whole pages), or -1 if no
   * free run is long enough right now.
   *
   * @throws {RangeError} if `bytes` could never fit (more than the pool).
   */
  alloc(bytes: number): number {
    const n = this.pagesFor(bytes);
    if (n > this.pages) throw new RangeError(`${bytes} bytes exceed the ${this.bytes}-byte pool`);
    if (n > this.#freePages) return -1;
    const last = this.pages - n;
    let at = this.#find(Math.min(this.#hint, last), last, n);
    if (at < 0) at = this.#find(0, last, n);
    if (at < 0) return -1;
    this.#used.fill(1, at, at + n);
    this.#freePages -= n;
    this.#hint = at + n === this.pages ? 0 : at + n;
    return this.addr + at * this.pageSize;
  }

  /**
   * Returns a run given out by {@link alloc} for the same `bytes`.
   *
   * @throws {RangeError} if the run is not a live allocation of this pool.
   */
  free(addr: number, bytes: number): void {
    const n = this.pagesFor(bytes);
    const off = addr - this.addr;
    const at = off / this.pageSize;
    if (!Number.isInteger(at) || at < 0 || at + n > this.pages)
      throw new RangeError(`[${addr}, +${bytes}) is not a run of this bounce pool`);
    for (let i = at; i < at + n; i++)
      if (this.#used[i] !== 1) throw new RangeError(`bounce page ${i} freed twice`);
    this.#used.fill(0, at, at + n);
    this.#freePages += n;
  }

  /** Start of the first run of `n` free pages starting in [from, lastStart]; -1 if none. Bounded by the page count. */
  #find(from: number, lastStart: number, n: number): number {
    const used = this.#used;
    const limit = lastStart + n;
    let run = 0;
    for (let i = from; i < limit; i++) {
      if (used[i] === 1) {
        run = 0;
        continue;
      }
      run++;
      if (run === n) return i - n + 1;
    }
    return -1;
  }
}

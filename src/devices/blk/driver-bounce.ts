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
 * {@link FairBounce} shares the pool between the driver's queues first come,
 * first served: a queue that found no room waits in line, and no queue
 * behind it takes memory until it was served (so a large request is not
 * starved by small ones on other queues).
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

/** A queue as the bounce line sees it. */
export interface BounceQueue {
  readonly index: number;
  /** True while the queue is in the line. */
  waitingForBounce: boolean;
}

/** The bounce pool shared fairly between queues (see the module header). */
export class FairBounce {
  readonly pool: BouncePool;
  /** Queues waiting for bounce memory, first come first served. */
  readonly #waiters: number[] = [];
  /** The queue being served by {@link serve}, or -1. */
  #serving = -1;
  /** Memory went back while queues may be waiting: the owner calls {@link serve}. */
  freed = false;

  constructor(pool: BouncePool) {
    this.pool = pool;
  }

  /**
   * Bounce memory for `q`: a queue may take memory only when no other queue
   * waits before it. -1 = wait (the queue is then in the line).
   */
  alloc(q: BounceQueue, bytes: number): number {
    const waiters = this.#waiters;
    const mayTake = waiters.length === 0 || this.#serving === q.index || waiters[0] === q.index;
    const addr = mayTake ? this.pool.alloc(bytes) : -1;
    if (addr >= 0) {
      if (waiters[0] === q.index) {
        waiters.shift();
        q.waitingForBounce = false;
      }
      return addr;
    }
    if (!q.waitingForBounce) {
      q.waitingForBounce = true;
      waiters.push(q.index);
    }
    return -1;
  }

  /** Returns a run taken for a request that did not start; queues waiting behind it get a turn. */
  undo(addr: number, bytes: number): void {
    if (addr < 0) return;
    this.pool.free(addr, bytes);
    if (this.#waiters.length > 0) this.freed = true;
  }

  /** Returns the run of a request that is over. */
  release(addr: number, bytes: number): void {
    this.pool.free(addr, bytes);
    this.freed = true;
  }

  /** Takes `q` out of the line (its queue failed); the queues behind it may fit now. */
  leave(q: BounceQueue): void {
    const i = this.#waiters.indexOf(q.index);
    if (i >= 0) {
      this.#waiters.splice(i, 1);
      this.freed = true;
    }
    q.waitingForBounce = false;
  }

  /** Empties the line (device reset). */
  clear(): void {
    this.#waiters.length = 0;
  }

  /**
   * Lets waiting queues retry in order (`retry` submits what `q` waits
   * with), stopping at the first that still does not fit.
   */
  serve<Q extends BounceQueue>(queues: readonly Q[], retry: (q: Q) => void): void {
    const waiters = this.#waiters;
    // Bounded by the number of queues: each round removes a waiter or stops.
    for (let n = waiters.length; n > 0 && waiters.length > 0; n--) {
      const qi = waiters.shift()!;
      const q = queues[qi]!;
      q.waitingForBounce = false;
      this.#serving = qi;
      try {
        retry(q);
      } finally {
        this.#serving = -1;
      }
      if (q.waitingForBounce) {
        // Still does not fit: back to the head of the line.
        waiters.splice(waiters.indexOf(qi), 1);
        waiters.unshift(qi);
        break;
      }
    }
  }
}

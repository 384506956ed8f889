/**
 * Driver side of a split virtqueue. VIRTIO 1.2 §2.7 (Split Virtqueues), driver
 * requirements: §2.7.5.2 / §2.7.5.3.1 (descriptor table, indirect
 * descriptors), §2.7.13 (supplying buffers to the device), §2.7.7 / §2.7.10
 * (notification suppression), §2.7.14 (receiving used buffers).
 *
 * The shape follows Linux's split ring driver: a free list of descriptors
 * threaded through driver-private state (never through guest-visible memory,
 * which the device could scribble over), shadow copies of the indexes the
 * driver writes, `kickNeeded` = kick_prepare, `enableCallbacks` = enable_cb
 * (prepare + poll), `enableCallbacksDelayed` = enable_cb_delayed.
 *
 * The device is untrusted: every used entry is validated against the
 * driver's own record of outstanding heads before anything is freed. A bad
 * entry makes the queue *broken* (sticky until {@link DriverQueue.detachAll}):
 * nothing more is consumed, `getUsed` returns null, `kickNeeded` false, and
 * `add` throws the recorded {@link VirtioError}.
 *
 * Concurrency contract: one DriverQueue is used from one thread (the driver's
 * owner). The device runs concurrently on another thread over the same
 * SharedArrayBuffer; the two sides meet only at the Atomics lines below.
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../errors.ts";
import type { ErrorCodeValue } from "../errors.ts";
import type { GuestMemory, GuestSlice } from "../memory/guest-memory.ts";
import {
  VIRTQ_AVAIL_ALIGN,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_AVAIL_OFF_FLAGS,
  VIRTQ_AVAIL_OFF_IDX,
  VIRTQ_AVAIL_OFF_RING,
  VIRTQ_DESC_ALIGN,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_DESC_OFF_ADDR,
  VIRTQ_DESC_OFF_FLAGS,
  VIRTQ_DESC_OFF_LEN,
  VIRTQ_DESC_OFF_NEXT,
  VIRTQ_DESC_SIZE,
  VIRTQ_USED_ALIGN,
  VIRTQ_USED_ELEM_SIZE,
  VIRTQ_USED_F_NO_NOTIFY,
  VIRTQ_USED_OFF_FLAGS,
  VIRTQ_USED_OFF_IDX,
  VIRTQ_USED_OFF_RING,
  availEventOffset,
  availRingSize,
  descTableSize,
  isValidQueueSize,
  usedEventOffset,
  usedRingSize,
  vringNeedEvent,
} from "../spec/virtqueue.ts";

/** Guest memory the driver owns for indirect tables: one table slot per head. */
export interface IndirectArena {
  /** Guest-physical address (16-aligned) of `size * entriesPerChain * 16` bytes in one region. */
  readonly addr: number;
  /** Descriptors per table (2..32768, at most the queue size). */
  readonly entriesPerChain: number;
}

/** Where the ring lives and which ring features were negotiated. */
export interface DriverQueueConfig {
  /** Queue size: a power of two in 1..32768. */
  readonly size: number;
  readonly descAddr: number;
  readonly availAddr: number;
  readonly usedAddr: number;
  /** VIRTIO_F_EVENT_IDX negotiated. */
  readonly eventIdx?: boolean;
  /** VIRTIO_F_INDIRECT_DESC negotiated (needs {@link indirectArena}). */
  readonly indirect?: boolean;
  readonly indirectArena?: IndirectArena;
  /** Called once when the device breaks the protocol and the queue becomes broken. */
  readonly onBroken?: (err: VirtioError) => void;
  /**
   * Free-running index (u16) the ring starts at: the constructor writes it to
   * both avail.idx and used.idx (default 0, the spec's state after reset).
   * For tests that need the 16-bit wrap early, and for resuming a ring; the
   * device must start at the same index (DeviceQueue `nextAvail` plus
   * `usedIdxFromMemory`). {@link DriverQueue.detachAll} returns to 0.
   */
  readonly initialIndex?: number;
}

/** A buffer in guest memory: `len` bytes at guest-physical `addr`. */
export interface Segment {
  readonly addr: number;
  readonly len: number;
}

/** A completed request as {@link DriverQueue.getUsed} returns it. */
export interface UsedBuffer<T> {
  readonly token: T;
  /** Bytes the device says it wrote into the chain's writable part. */
  readonly len: number;
}

/** Bytes of the indirect arena for `size` heads of `entriesPerChain` descriptors. */
export function indirectArenaBytes(size: number, entriesPerChain: number): number {
  return size * entriesPerChain * VIRTQ_DESC_SIZE;
}

/** §2.7.5.2: "Drivers MUST NOT add a descriptor chain longer than 2^32 bytes in total". */
const MAX_CHAIN_BYTES = 0xffff_ffff;
/** Linux forces a kick after this many adds without one so 16-bit windows stay exact. */
const FORCE_KICK_ADDED = 0xffff;

function checkedSlice(
  memory: GuestMemory,
  what: string,
  addr: number,
  len: number,
  align: number,
): GuestSlice {
  if (!Number.isSafeInteger(addr) || addr < 0 || addr % align !== 0)
    throw new RangeError(`${what} address ${addr} is not a ${align}-aligned guest address`);
  if (!memory.isInOneRegion(addr, len))
    throw new RangeError(
      `${what} [0x${addr.toString(16)}, +${len}) is not inside one guest memory region`,
    );
  return memory.slice(addr, len);
}

/**
 * The driver end of one split virtqueue.
 *
 * @example
 * ```ts
 * const q = new DriverQueue<string>(mem, { size: 256, ...vringLayout(256, 0x10000) });
 * q.add([{ addr: 0x1000, len: 16 }], [{ addr: 0x2000, len: 512 }], "req-1");
 * if (q.kickNeeded()) notifyDevice();
 * // later, on a used-buffer notification:
 * for (let u = q.getUsed(); u !== null; u = q.getUsed()) complete(u.token, u.len);
 * ```
 */
export class DriverQueue<T> {
  /** Queue size (number of descriptors and ring entries). */
  readonly size: number;
  readonly #desc: GuestSlice;
  readonly #avail: GuestSlice;
  readonly #used: GuestSlice;
  readonly #arena: GuestSlice | null;
  readonly #entriesPerChain: number;
  readonly #eventIdx: boolean;
  readonly #memory: GuestMemory;
  readonly #onBroken: ((err: VirtioError) => void) | undefined;
  readonly #usedEventOff: number;
  readonly #availEventOff: number;

  // Driver-private free list (Linux desc_extra[].next): never read back from guest memory.
  readonly #next: Uint16Array;
  #freeHead = 0;
  #numFree: number;

  // Per-head record of each outstanding chain; headCount 0 = not an outstanding head.
  readonly #headCount: Uint16Array;
  readonly #headTail: Uint16Array;
  readonly #headWritable: Float64Array;
  readonly #headIndirect: Uint8Array;
  readonly #token: (T | undefined)[];
  #outstanding = 0;

  // Shadows of what this side writes, and how far it has read.
  #availIdxShadow = 0;
  #availIdxPublished = 0;
  #numAdded = 0;
  #lastUsedIdx = 0;
  /** used.idx as last loaded: entries in [lastUsedIdx, usedShadow) are known published (one load per batch). */
  #usedShadow = 0;
  #callbacksDisabled = false;
  #broken: VirtioError | null = null;

  /** Writable bytes of the request #validateSegments last accepted. */
  #validatedWritable = 0;

  // Zero-allocation results of nextUsed().
  #usedToken: T | undefined = undefined;
  #usedLen = 0;

  /**
   * Takes ownership of the ring in `memory` and initialises it: descriptor
   * table, available ring and used ring are zeroed (flags 0, idx 0).
   *
   * @throws {RangeError} for a bad size, misaligned parts, parts outside
   *   guest memory, or an inconsistent indirect configuration.
   */
  constructor(memory: GuestMemory, config: DriverQueueConfig) {
    const n = config.size;
    if (!isValidQueueSize(n))
      throw new RangeError(`queue size ${n} is not a power of two in 1..32768`);
    this.size = n;
    this.#memory = memory;
    // §2.7 alignment table: descriptor table 16, available ring 2, used ring 4.
    this.#desc = checkedSlice(
      memory,
      "descriptor table",
      config.descAddr,
      descTableSize(n),
      VIRTQ_DESC_ALIGN,
    );
    this.#avail = checkedSlice(
      memory,
      "available ring",
      config.availAddr,
      availRingSize(n),
      VIRTQ_AVAIL_ALIGN,
    );
    this.#used = checkedSlice(
      memory,
      "used ring",
      config.usedAddr,
      usedRingSize(n),
      VIRTQ_USED_ALIGN,
    );
    this.#eventIdx = config.eventIdx === true;
    this.#onBroken = config.onBroken;
    this.#usedEventOff = usedEventOffset(n);
    this.#availEventOff = availEventOffset(n);
    this.#arena = null;
    this.#entriesPerChain = 0;
    if (config.indirect === true) {
      const a = config.indirectArena;
      if (a === undefined) throw new RangeError("indirect descriptors need an indirectArena");
      const e = a.entriesPerChain;
      if (!Number.isInteger(e) || e < 2 || e > n)
        throw new RangeError(
          `indirectArena.entriesPerChain ${e} must be an integer in 2..${n} (queue size)`,
        );
      this.#arena = checkedSlice(
        memory,
        "indirect arena",
        a.addr,
        indirectArenaBytes(n, e),
        VIRTQ_DESC_ALIGN,
      );
      this.#entriesPerChain = e;
    }
    this.#next = new Uint16Array(n);
    this.#headCount = new Uint16Array(n);
    this.#headTail = new Uint16Array(n);
    this.#headWritable = new Float64Array(n);
    this.#headIndirect = new Uint8Array(n);
    this.#token = new Array<T | undefined>(n).fill(undefined);
    this.#numFree = n;
    const start = config.initialIndex ?? 0;
    if (!Number.isInteger(start) || start < 0 || start > 0xffff)
      throw new RangeError(`initialIndex ${start} is not a u16`);
    this.#resetState(start);
  }

  /** Free descriptors in the table. */
  get numFree(): number {
    return this.#numFree;
  }

  /** Requests added and not yet returned by {@link getUsed} (staged ones included). */
  get numOutstanding(): number {
    return this.#outstanding;
  }

  /** The protocol violation that broke the queue, or null. */
  get broken(): VirtioError | null {
    return this.#broken;
  }

  /** VIRTIO_F_INDIRECT_DESC is in use (an arena was given). */
  get indirect(): boolean {
    return this.#arena !== null;
  }

  /**
   * Adds a request and publishes it to the device at once (like Linux's
   * virtqueue_add_sgs): {@link stage} followed by {@link publish}. Call
   * {@link kickNeeded} afterwards (once per batch) to learn whether to notify.
   *
   * @returns false if there are not enough free descriptors (nothing changed).
   * @throws {RangeError|TypeError} for API misuse (see {@link stage});
   *   the recorded {@link VirtioError} if the queue is broken.
   */
  add(readable: readonly Segment[], writable: readonly Segment[], token: T): boolean {
    if (!this.stage(readable, writable, token)) return false;
    this.publish();
    return true;
  }

  /**
   * Writes a request's descriptors and its available-ring entry without
   * publishing `avail.idx`: the device cannot see it until {@link publish}
   * (or {@link kickNeeded}, which publishes first). Staging many requests and
   * publishing once saves one atomic store per request.
   *
   * Uses one indirect table when VIRTIO_F_INDIRECT_DESC is in use, the request
   * has more than one segment and fits the table; otherwise direct
   * descriptors. The head goes on the available ring exactly once.
   *
   * @returns false if there are not enough free descriptors (nothing changed).
   * @throws {RangeError} no segments, more segments than the queue size, a
   *   zero-length or out-of-memory segment, or more than 2^32 − 1 bytes.
   * @throws {TypeError} if `readable` / `writable` are not arrays.
   * @throws {VirtioError} the recorded violation if the queue is broken.
   */
  stage(readable: readonly Segment[], writable: readonly Segment[], token: T): boolean {
    if (this.#broken !== null) throw this.#broken;
    const total = this.#validateSegments(readable, writable);
    const useIndirect = this.#arena !== null && total > 1 && total <= this.#entriesPerChain;
    const needed = useIndirect ? 1 : total;
    if (needed > this.#numFree) return false;
    const head = this.#freeHead;
    if (useIndirect) this.#writeIndirect(head, readable, writable);
    else this.#writeDirect(head, readable, writable);
    this.#headWritable[head] = this.#validatedWritable;
    this.#token[head] = token;
    this.#outstanding++;
    // Plain write: ordered before the device can read it by the avail.idx store in publish().
    this.#avail.writeU16(VIRTQ_AVAIL_OFF_RING + 2 * (this.#availIdxShadow & (this.size - 1)), head);
    this.#availIdxShadow = (this.#availIdxShadow + 1) & 0xffff;
    this.#numAdded++;
    return true;
  }

  /** Makes every staged request visible to the device (one atomic store). */
  publish(): void {
    if (this.#availIdxPublished === this.#availIdxShadow) return;
    // §2.7.13.3.1 "The driver MUST perform a suitable memory barrier before the idx update, to ensure the device sees the most up-to-date copy."
    // Atomics.store (SeqCst, release): descriptors, indirect tables and avail.ring entries written above become visible before the new idx.
    this.#avail.atomicStoreU16(VIRTQ_AVAIL_OFF_IDX, this.#availIdxShadow);
    this.#availIdxPublished = this.#availIdxShadow;
  }

  /**
   * Publishes staged requests, then says whether the device wants an
   * available-buffer notification for the requests added since the last
   * call (Linux virtqueue_kick_prepare). Resets the count of added requests.
   * Returns false when nothing was added or the queue is broken.
   */
  kickNeeded(): boolean {
    if (this.#broken !== null) return false;
    this.publish();
    const added = this.#numAdded;
    this.#numAdded = 0;
    if (added === 0) return false;
    // Beyond 65535 adds the 16-bit window (old, new] no longer tells; a spurious kick is harmless (§2.7.10).
    if (added >= FORCE_KICK_ADDED) return true;
    const newIdx = this.#availIdxShadow;
    if (this.#eventIdx) {
      // Atomics.load (SeqCst): ordered after the avail.idx store in publish() (full barrier), so a device that
      // re-armed avail_event before seeing our idx is seen here (Linux: virtio_mb before reading avail_event).
      const availEvent = this.#used.atomicLoadU16(this.#availEventOff);
      // §2.7.10 "the driver MUST ... check avail_event ... [notify] if the new idx ... passed avail_event".
      return vringNeedEvent(availEvent, newIdx, (newIdx - added) & 0xffff);
    }
    // Atomics.load (SeqCst): ordered after the avail.idx store (same full barrier as above).
    const flags = this.#used.atomicLoadU16(VIRTQ_USED_OFF_FLAGS);
    // §2.7.10 "If flags is 1, the driver SHOULD NOT send a notification"; otherwise it MUST.
    return (flags & VIRTQ_USED_F_NO_NOTIFY) === 0;
  }

  /** True if the device has published used entries not yet taken (false when broken). */
  hasUsed(): boolean {
    if (this.#broken !== null) return false;
    // Atomics.load (SeqCst, acquire): a fresh look at the device's used.idx.
    return this.#used.atomicLoadU16(VIRTQ_USED_OFF_IDX) !== this.#lastUsedIdx;
  }

  /**
   * Takes the next used buffer, or null if none is pending (or the queue is
   * broken). Allocates the result object; see {@link nextUsed} for the
   * zero-allocation form.
   */
  getUsed(): UsedBuffer<T> | null {
    if (!this.nextUsed()) return null;
    return { token: this.#usedToken as T, len: this.#usedLen };
  }

  /**
   * Takes the next used buffer without allocating: on true, {@link usedToken}
   * and {@link usedLen} hold it until the next call. On a protocol violation
   * the queue becomes broken (codes `USED_IDX_JUMP`, `USED_ID_OUT_OF_RANGE`,
   * `USED_ID_NOT_OUTSTANDING`, `USED_LEN_TOO_LONG`), nothing is consumed, and
   * false is returned.
   */
  nextUsed(): boolean {
    if (this.#broken !== null) return false;
    const last = this.#lastUsedIdx;
    let usedIdx = this.#usedShadow;
    if (usedIdx === last) {
      // Atomics.load (SeqCst, acquire): the used entries (and payload) the device wrote before storing this idx
      // are visible to the plain reads below. §2.7.8: the device updates idx after writing the entry. Loaded
      // once per batch: entries below an index already loaded need no new load.
      usedIdx = this.#used.atomicLoadU16(VIRTQ_USED_OFF_IDX);
      this.#usedShadow = usedIdx;
      if (usedIdx === last) return false;
    }
    const pending = (usedIdx - last) & 0xffff;
    if (pending > this.#outstanding)
      return this.#fail(
        ErrorCode.USED_IDX_JUMP,
        `device moved used.idx from ${last} to ${usedIdx} with ${this.#outstanding} requests outstanding`,
        { last, usedIdx, outstanding: this.#outstanding },
      );
    const off = VIRTQ_USED_OFF_RING + VIRTQ_USED_ELEM_SIZE * (last & (this.size - 1));
    // Read each device-written field once, validate the copy, use the copy.
    const id = this.#used.readU32(off);
    const len = this.#used.readU32(off + 4);
    if (id >= this.size)
      return this.#fail(
        ErrorCode.USED_ID_OUT_OF_RANGE,
        `used id ${id} is out of range (size ${this.size})`,
        { id, size: this.size },
      );
    if (this.#headCount[id] === 0)
      return this.#fail(
        ErrorCode.USED_ID_NOT_OUTSTANDING,
        `used id ${id} is not an outstanding head`,
        { id },
      );
    const max = this.#headWritable[id]!;
    // §2.7.8.2 "The device MUST NOT write more than len bytes" is the device's side; a len larger than the
    // writable part is a device claim the driver cannot honour: the queue is broken, not clamped.
    if (len > max)
      return this.#fail(
        ErrorCode.USED_LEN_TOO_LONG,
        `used len ${len} for head ${id} exceeds its ${max} writable bytes`,
        { id, len, max },
      );
    this.#usedToken = this.#token[id];
    this.#usedLen = len;
    this.#detach(id);
    this.#lastUsedIdx = (last + 1) & 0xffff;
    if (this.#eventIdx && !this.#callbacksDisabled) {
      // Atomics.store (SeqCst): re-arm used_event at the next entry we will read (Linux get_buf), so the
      // device notifies for the very next completion.
      this.#avail.atomicStoreU16(this.#usedEventOff, this.#lastUsedIdx);
    }
    return true;
  }

  /** Token of the buffer the last successful {@link nextUsed} returned. */
  get usedToken(): T {
    return this.#usedToken as T;
  }

  /** Used length of the buffer the last successful {@link nextUsed} returned. */
  get usedLen(): number {
    return this.#usedLen;
  }

  /**
   * Asks the device not to send used-buffer notifications (a hint: they may
   * still come). Without EVENT_IDX sets VIRTQ_AVAIL_F_NO_INTERRUPT in
   * avail.flags. With EVENT_IDX (§2.7.7: "The driver MUST set flags to 0")
   * it parks used_event one behind the last index read: the device can only
   * reach it after 65535 more completions, which it cannot make while the
   * driver takes none (Linux writes 0 here instead).
   */
  disableCallbacks(): void {
    if (this.#callbacksDisabled) return;
    this.#callbacksDisabled = true;
    if (this.#eventIdx) {
      // Atomics.store (SeqCst): publish the parked event index.
      this.#avail.atomicStoreU16(this.#usedEventOff, (this.#lastUsedIdx - 1) & 0xffff);
    } else {
      // Atomics.store (SeqCst): publish NO_INTERRUPT.
      this.#avail.atomicStoreU16(VIRTQ_AVAIL_OFF_FLAGS, VIRTQ_AVAIL_F_NO_INTERRUPT);
    }
  }

  /**
   * Re-enables used-buffer notifications and closes the race with the device
   * (Linux virtqueue_enable_cb): arms used_event = last index read (or clears
   * NO_INTERRUPT), then re-reads used.idx.
   *
   * @returns true if nothing is pending (wait for a notification); false if
   *   used buffers arrived meanwhile: drain again (callbacks stay enabled).
   *   True when broken (there is nothing more to drain).
   */
  enableCallbacks(): boolean {
    this.#callbacksDisabled = false;
    if (this.#broken !== null) return true;
    this.#armUsedEvent(this.#lastUsedIdx);
    return !this.#pollUsed();
  }

  /**
   * Like {@link enableCallbacks} but asks for a notification only after about
   * 3/4 of the outstanding requests completed (Linux enable_cb_delayed);
   * without EVENT_IDX the same as {@link enableCallbacks}.
   *
   * @returns false if that many buffers are already used: drain again.
   */
  enableCallbacksDelayed(): boolean {
    if (!this.#eventIdx) return this.enableCallbacks();
    this.#callbacksDisabled = false;
    if (this.#broken !== null) return true;
    const bufs = Math.floor((this.#outstanding * 3) / 4);
    this.#armUsedEvent((this.#lastUsedIdx + bufs) & 0xffff);
    // Atomics.load (SeqCst): after the used_event store above (full barrier), as in #pollUsed.
    const usedIdx = this.#used.atomicLoadU16(VIRTQ_USED_OFF_IDX);
    return ((usedIdx - this.#lastUsedIdx) & 0xffff) <= bufs;
  }

  /**
   * Forgets every outstanding request and returns their tokens (ascending
   * head order), then re-initialises the ring to its just-constructed state
   * (zeroed, indexes 0, callbacks enabled, not broken). Call it only when
   * the device no longer uses the ring: after a device (or queue) reset, or
   * before the ring was handed over.
   */
  detachAll(): T[] {
    const tokens: T[] = [];
    for (let h = 0; h < this.size; h++) {
      if (this.#headCount[h] !== 0) tokens.push(this.#token[h] as T);
    }
    this.#resetState(0);
    return tokens;
  }

  // ---- internals ----

  #resetState(start: number): void {
    const n = this.size;
    for (let i = 0; i < n; i++) this.#next[i] = (i + 1) & 0xffff;
    this.#freeHead = 0;
    this.#numFree = n;
    this.#headCount.fill(0);
    this.#headIndirect.fill(0);
    this.#headWritable.fill(0);
    this.#token.fill(undefined);
    this.#outstanding = 0;
    this.#availIdxShadow = start;
    this.#availIdxPublished = start;
    this.#numAdded = 0;
    this.#lastUsedIdx = start;
    this.#usedShadow = start;
    this.#callbacksDisabled = false;
    this.#broken = null;
    this.#usedToken = undefined;
    this.#usedLen = 0;
    // The device does not use the ring now (constructor, or after a reset): plain zeroing, then the
    // index and event fields with SeqCst stores so a device thread started later sees a clean ring.
    this.#desc.fill(0, this.#desc.length);
    this.#avail.fill(0, this.#avail.length);
    this.#used.fill(0, this.#used.length);
    // Atomics.store (SeqCst): avail.idx published after the zeroing above.
    this.#avail.atomicStoreU16(VIRTQ_AVAIL_OFF_IDX, start);
    // Atomics.store (SeqCst): used.idx, ordered likewise (the device reads it when it starts).
    this.#used.atomicStoreU16(VIRTQ_USED_OFF_IDX, start);
    if (this.#eventIdx) {
      // Atomics.store (SeqCst): used_event = the first used entry, so the first completion is notified.
      this.#avail.atomicStoreU16(this.#usedEventOff, start);
    }
  }

  /**
   * Validates both lists (before anything changes) and returns the segment
   * count; leaves the writable byte count in #validatedWritable. No allocation.
   */
  #validateSegments(readable: readonly Segment[], writable: readonly Segment[]): number {
    if (!isArray(readable) || !isArray(writable))
      throw new TypeError("readable and writable must be arrays of segments");
    const nr = readable.length;
    const total = nr + writable.length;
    if (total === 0) throw new RangeError("a request needs at least one segment");
    // §2.7.5.3.1 "A driver MUST NOT create a descriptor chain longer than the Queue Size of the device."
    if (total > this.size)
      throw new RangeError(`${total} segments exceed the queue size ${this.size}`);
    let bytes = 0;
    for (let k = 0; k < total; k++) {
      const { addr, len } = k < nr ? readable[k]! : writable[k - nr]!;
      if (!Number.isSafeInteger(len) || len <= 0 || len > MAX_CHAIN_BYTES)
        throw new RangeError(`segment length ${len} must be an integer in 1..2^32-1`);
      if (!this.#memory.isValidRange(addr, len))
        throw new RangeError(`segment [${addr}, +${len}) is not inside guest memory`);
      if (k === nr) this.#validatedWritable = bytes;
      bytes += len;
    }
    // §2.7.5.2 "Drivers MUST NOT add a descriptor chain longer than 2^32 bytes in total".
    if (bytes > MAX_CHAIN_BYTES) throw new RangeError(`request of ${bytes} bytes exceeds 2^32-1`);
    this.#validatedWritable = nr === total ? 0 : bytes - this.#validatedWritable;
    return total;
  }

  /** Takes `count` descriptors off the free list for a chain at `head` (the current free head). */
  #take(head: number, count: number): number {
    let tail = head;
    for (let i = 1; i < count; i++) tail = this.#next[tail]!;
    this.#freeHead = this.#next[tail]!;
    this.#numFree -= count;
    this.#headCount[head] = count;
    this.#headTail[head] = tail;
    return tail;
  }

  #writeDirect(head: number, readable: readonly Segment[], writable: readonly Segment[]): void {
    const nr = readable.length;
    const total = nr + writable.length;
    this.#take(head, total);
    this.#headIndirect[head] = 0;
    let i = head;
    for (let k = 0; k < total; k++) {
      const last = k === total - 1;
      // §2.7.4.2 "The driver MUST place any device-writable descriptor elements after any device-readable" ones.
      const flags = (k < nr ? 0 : VIRTQ_DESC_F_WRITE) | (last ? 0 : VIRTQ_DESC_F_NEXT);
      const next = last ? 0 : this.#next[i]!;
      writeDesc(
        this.#desc,
        i * VIRTQ_DESC_SIZE,
        k < nr ? readable[k]! : writable[k - nr]!,
        flags,
        next,
      );
      i = next;
    }
  }

  #writeIndirect(head: number, readable: readonly Segment[], writable: readonly Segment[]): void {
    const arena = this.#arena!;
    const nr = readable.length;
    const total = nr + writable.length;
    const base = head * this.#entriesPerChain * VIRTQ_DESC_SIZE;
    for (let k = 0; k < total; k++) {
      const last = k === total - 1;
      // §2.7.5.3.1 "The driver MUST NOT set the VIRTQ_DESC_F_INDIRECT flag within an indirect descriptor".
      const flags = (k < nr ? 0 : VIRTQ_DESC_F_WRITE) | (last ? 0 : VIRTQ_DESC_F_NEXT);
      const seg = k < nr ? readable[k]! : writable[k - nr]!;
      writeDesc(arena, base + k * VIRTQ_DESC_SIZE, seg, flags, last ? 0 : k + 1);
    }
    this.#take(head, 1);
    this.#headIndirect[head] = 1;
    // §2.7.5.3.1 "The driver MUST NOT set both VIRTQ_DESC_F_INDIRECT and VIRTQ_DESC_F_NEXT in flags."
    writeIndirectHead(
      this.#desc,
      head * VIRTQ_DESC_SIZE,
      arena.addr + base,
      total * VIRTQ_DESC_SIZE,
    );
  }

  /** Returns head's chain to the front of the free list (Linux detach_buf_split). */
  #detach(head: number): void {
    const tail = this.#headTail[head]!;
    this.#next[tail] = this.#freeHead;
    this.#freeHead = head;
    this.#numFree += this.#headCount[head]!;
    this.#headCount[head] = 0;
    this.#headIndirect[head] = 0;
    this.#headWritable[head] = 0;
    this.#token[head] = undefined;
    this.#outstanding--;
  }

  #armUsedEvent(event: number): void {
    if (this.#eventIdx) {
      // Atomics.store (SeqCst): used_event must be visible before the used.idx re-check that follows (store→load
      // full barrier; Linux enable_cb_prepare + virtqueue_poll's mb).
      this.#avail.atomicStoreU16(this.#usedEventOff, event);
    } else {
      // Atomics.store (SeqCst): clear NO_INTERRUPT before the re-check (same store→load ordering).
      this.#avail.atomicStoreU16(VIRTQ_AVAIL_OFF_FLAGS, 0);
    }
  }

  /** True if used.idx moved past what was read (re-check after arming). */
  #pollUsed(): boolean {
    // Atomics.load (SeqCst): after the arming store, so either the device sees our used_event/flags or we see its idx.
    return this.#used.atomicLoadU16(VIRTQ_USED_OFF_IDX) !== this.#lastUsedIdx;
  }

  #fail(code: ErrorCodeValue, message: string, details: Record<string, number>): false {
    const err = new VirtioError(code, message, details);
    this.#broken = err;
    this.#onBroken?.(err);
    return false;
  }
}

/** Array.isArray without narrowing readonly arrays to any[]. */
function isArray(v: unknown): boolean {
  return Array.isArray(v);
}

/** Writes one descriptor (plain writes: published later by the avail.idx store). */
function writeDesc(s: GuestSlice, off: number, seg: Segment, flags: number, next: number): void {
  s.writeU64(off + VIRTQ_DESC_OFF_ADDR, seg.addr);
  s.writeU32(off + VIRTQ_DESC_OFF_LEN, seg.len);
  s.writeU16(off + VIRTQ_DESC_OFF_FLAGS, flags);
  s.writeU16(off + VIRTQ_DESC_OFF_NEXT, next);
}

/** Writes the main-table descriptor that points to an indirect table. */
function writeIndirectHead(s: GuestSlice, off: number, tableAddr: number, tableLen: number): void {
  s.writeU64(off + VIRTQ_DESC_OFF_ADDR, tableAddr);
  s.writeU32(off + VIRTQ_DESC_OFF_LEN, tableLen);
  s.writeU16(off + VIRTQ_DESC_OFF_FLAGS, VIRTQ_DESC_F_INDIRECT);
  s.writeU16(off + VIRTQ_DESC_OFF_NEXT, 0);
}

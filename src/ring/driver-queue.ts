/**
 * Driver side of a split virtqueue. VIRTIO 1.2 §2.7 (Split Virtqueues), driver
 * requirements: §2.7.5.2 / §2.7.5.3.1 (descriptor table, indirect
 * descriptors), §2.7.13 (supplying buffers to the device), §2.7.7 / §2.7.10
 * (notification suppression), §2.7.14 (receiving used buffers).
 *
 * The shape follows Linux's split ring driver: shadow copies of the indexes
 * the driver writes, `kickNeeded` = kick_prepare, `enableCallbacks` =
 * enable_cb (prepare + poll), `enableCallbacksDelayed` = enable_cb_delayed.
 * This module keeps the split ring's indexes; the rest of the split layout
 * is the configuration and its checks (./driver-queue-config.ts), the
 * descriptor table writes (./driver-desc.ts) and the suppression fields
 * (./driver-suppression.ts). What does not depend on the layout is in
 * modules of its own, for a packed-ring driver queue to share: the free list
 * of buffer IDs and the record of outstanding chains (./driver-ids.ts), the
 * indirect table arena (./driver-indirect.ts), the request checks
 * (./driver-segments.ts) and the kick decision (./driver-kick.ts).
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
import type { GuestMemory, GuestSlice } from "../memory/guest-memory.ts";
import {
  VIRTQ_AVAIL_OFF_IDX,
  VIRTQ_AVAIL_OFF_RING,
  VIRTQ_USED_ELEM_SIZE,
  VIRTQ_USED_OFF_IDX,
  VIRTQ_USED_OFF_RING,
  isValidQueueSize,
} from "../spec/virtqueue.ts";
import { writeDirectChain, writeIndirectHead, writeIndirectTable } from "./driver-desc.ts";
import { DriverIds } from "./driver-ids.ts";
import { IndirectTables } from "./driver-indirect.ts";
import { kickByCount } from "./driver-kick.ts";
import { driverRingParts, initialIndex, type DriverQueueConfig } from "./driver-queue-config.ts";
import { checkSegments, type Segment, type UsedBuffer } from "./driver-segments.ts";
import { SplitDriverSuppression } from "./driver-suppression.ts";
import type { DriverRing } from "./driver-ring.ts";

export { indirectArenaBytes, type IndirectArena } from "./driver-indirect.ts";
export type { DriverQueueConfig } from "./driver-queue-config.ts";
export type { Segment, UsedBuffer } from "./driver-segments.ts";

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
export class DriverQueue<T> implements DriverRing<T> {
  /** The split layout (§2.7). */
  readonly layout = "split";
  /** Queue size (number of descriptors and ring entries). */
  readonly size: number;
  readonly #desc: GuestSlice;
  readonly #avail: GuestSlice;
  readonly #used: GuestSlice;
  readonly #arena: IndirectTables | null;
  readonly #memory: GuestMemory;
  readonly #onBroken: ((err: VirtioError) => void) | undefined;
  /** avail_event / used_event and the flags: whom to notify when. */
  readonly #suppression: SplitDriverSuppression;
  /** Free IDs (= descriptors) and the outstanding chains: never read back from guest memory. */
  readonly #ids: DriverIds<T>;

  // Shadows of what this side writes, and how far it has read.
  #availIdxShadow = 0;
  #availIdxPublished = 0;
  #numAdded = 0;
  #lastUsedIdx = 0;
  /** used.idx as last loaded: entries in [lastUsedIdx, usedShadow) are known published (one load per batch). */
  #usedShadow = 0;
  #broken: VirtioError | null = null;

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
    const parts = driverRingParts(memory, config);
    this.#desc = parts.desc;
    this.#avail = parts.avail;
    this.#used = parts.used;
    this.#suppression = new SplitDriverSuppression(
      parts.avail,
      parts.used,
      n,
      config.eventIdx === true,
    );
    this.#onBroken = config.onBroken;
    this.#arena =
      config.indirect === true ? new IndirectTables(memory, config.indirectArena, n) : null;
    this.#ids = new DriverIds<T>(n);
    this.#resetState(initialIndex(config));
  }

  /** Free descriptors in the table. */
  get numFree(): number {
    return this.#ids.numFree;
  }

  /** Requests added and not yet returned by {@link getUsed} (staged ones included). */
  get numOutstanding(): number {
    return this.#ids.outstanding;
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
   * The published avail.idx: what a notification carries with
   * VIRTIO_F_NOTIFICATION_DATA on a split ring (§2.9: next_off its 15 low
   * bits, next_wrap its bit 15).
   */
  get notificationData(): number {
    return this.#availIdxPublished;
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
    const writableBytes = checkSegments(this.#memory, this.size, readable, writable);
    const total = readable.length + writable.length;
    const arena = this.#arena;
    const useIndirect = arena !== null && total > 1 && total <= arena.entriesPerChain;
    const ids = this.#ids;
    if ((useIndirect ? 1 : total) > ids.numFree) return false;
    const head = ids.freeHead;
    if (useIndirect) this.#writeIndirect(arena, head, readable, writable);
    else this.#writeDirect(head, readable, writable);
    ids.own(head, writableBytes, token);
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
    return kickByCount(added) ?? this.#suppression.kickWanted(this.#availIdxShadow, added);
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
    const ids = this.#ids;
    if (((usedIdx - last) & 0xffff) > ids.outstanding) return this.#idxJump(last, usedIdx);
    const off = VIRTQ_USED_OFF_RING + VIRTQ_USED_ELEM_SIZE * (last & (this.size - 1));
    // Read each device-written field once, validate the copy, use the copy.
    const id = this.#used.readU32(off);
    const len = this.#used.readU32(off + 4);
    const violation = ids.checkUsed(id, len);
    if (violation !== null) return this.#fail(violation);
    this.#usedLen = len;
    this.#usedToken = ids.release(id);
    this.#lastUsedIdx = (last + 1) & 0xffff;
    this.#suppression.rearm(this.#lastUsedIdx);
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
    this.#suppression.disable(this.#lastUsedIdx);
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
    return this.#suppression.enable(this.#lastUsedIdx, this.#broken !== null);
  }

  /**
   * Like {@link enableCallbacks} but asks for a notification only after about
   * 3/4 of the outstanding requests completed (Linux enable_cb_delayed);
   * without EVENT_IDX the same as {@link enableCallbacks}.
   *
   * @returns false if that many buffers are already used: drain again.
   */
  enableCallbacksDelayed(): boolean {
    const outstanding = this.#ids.outstanding;
    return this.#suppression.enableDelayed(this.#lastUsedIdx, outstanding, this.#broken !== null);
  }

  /**
   * Forgets every outstanding request and returns their tokens (ascending
   * head order), then re-initialises the ring to its just-constructed state
   * (zeroed, indexes 0, callbacks enabled, not broken). Call it only when
   * the device no longer uses the ring: after a device (or queue) reset, or
   * before the ring was handed over.
   */
  detachAll(): T[] {
    const tokens = this.#ids.tokens();
    this.#resetState(0);
    return tokens;
  }

  // ---- internals ----

  #resetState(start: number): void {
    this.#ids.reset();
    this.#availIdxShadow = start;
    this.#availIdxPublished = start;
    this.#numAdded = 0;
    this.#lastUsedIdx = start;
    this.#usedShadow = start;
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
    this.#suppression.reset(start);
  }

  #writeDirect(head: number, readable: readonly Segment[], writable: readonly Segment[]): void {
    const total = readable.length + writable.length;
    this.#ids.take(head, total, false);
    // The chain's descriptors are the IDs taken, linked as on the free list.
    writeDirectChain(this.#desc, this.#ids.next, head, readable, writable);
  }

  #writeIndirect(
    arena: IndirectTables,
    head: number,
    readable: readonly Segment[],
    writable: readonly Segment[],
  ): void {
    writeIndirectTable(arena, head, readable, writable);
    this.#ids.take(head, 1, true);
    writeIndirectHead(this.#desc, arena, head, readable.length + writable.length);
  }

  #idxJump(last: number, usedIdx: number): false {
    const outstanding = this.#ids.outstanding;
    return this.#fail(
      new VirtioError(
        ErrorCode.USED_IDX_JUMP,
        `device moved used.idx from ${last} to ${usedIdx} with ${outstanding} requests outstanding`,
        { last, usedIdx, outstanding },
      ),
    );
  }

  #fail(err: VirtioError): false {
    this.#broken = err;
    this.#onBroken?.(err);
    return false;
  }
}

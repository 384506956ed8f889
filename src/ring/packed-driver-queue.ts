/**
 * Driver side of a packed virtqueue (VIRTIO_F_RING_PACKED). VIRTIO 1.2 §2.8
 * (Packed Virtqueues): §2.8.1 (Driver Ring Wrap Counter, and the used wrap
 * counter the driver keeps for reading), §2.8.2 (polling the next slot),
 * §2.8.6 / §2.8.7 (lists and indirect tables), §2.8.10 (event suppression),
 * §2.8.16 (driver requirements: the descriptor table), §2.8.21 (supplying
 * buffers to the device), §2.8.22 (receiving used buffers).
 *
 * Enforced here:
 * - §2.8.16 "A driver MUST NOT change a descriptor unless it observes the
 *   VIRTQ_DESC_F_USED bit in its flags being changed." and "A driver MUST NOT
 *   change a descriptor after changing the VIRTQ_DESC_F_AVAIL bit in its
 *   flags." — only free slots (given back by used descriptors read) are
 *   written, each once per lap.
 * - §2.8.17 "A driver MUST make sure there's enough space in the ring for
 *   the whole list before making the first descriptor in the list available
 *   to the device." and "A driver MUST NOT create a descriptor list longer
 *   than the Queue Size." — `stage` refuses a request the free slots cannot
 *   hold, and longer than the queue size (./driver-segments.ts).
 * - §2.8.16 "When notifying the device, driver MUST set next_off and
 *   next_wrap to match the next descriptor not yet made available to the
 *   device." — {@link PackedDriverQueue.notificationData}.
 *
 * The shape follows Linux's packed ring driver and the split driver queue
 * (./driver-queue.ts), whose public surface it has: `kickNeeded` =
 * kick_prepare, `enableCallbacks` = enable_cb, `enableCallbacksDelayed` =
 * enable_cb_delayed. Buffer IDs and ring slots are ./packed-driver-ids.ts,
 * descriptor writes ./packed-driver-desc.ts, the next slot and the open
 * batch ./packed-driver-avail.ts, the event structures
 * ./packed-driver-suppression.ts, the configuration
 * ./packed-driver-queue-config.ts; shared with the split driver: the indirect
 * arena (./driver-indirect.ts) and the request checks (./driver-segments.ts).
 *
 * The device is untrusted: every used descriptor is validated against the
 * driver's own record before anything is freed. A bad one makes the queue
 * *broken* (sticky until {@link PackedDriverQueue.detachAll}): nothing more is
 * consumed, `getUsed` returns null, `kickNeeded` false, and `add` throws the
 * recorded {@link VirtioError}.
 *
 * Concurrency contract: one PackedDriverQueue is used from one thread. The
 * device runs concurrently on another thread over the same SharedArrayBuffer;
 * the two sides meet only at the Atomics lines here and in the suppression.
 *
 * @module
 */
import type { VirtioError } from "../errors.ts";
import type { GuestMemory, GuestSlice } from "../memory/guest-memory.ts";
import {
  PVIRTQ_DESC_OFF_ID,
  PVIRTQ_DESC_OFF_LEN,
  PVIRTQ_DESC_SIZE,
  isPackedDescUsed,
  isValidPackedQueueSize,
} from "../spec/packed-virtqueue.ts";
import { VIRTQ_DESC_F_WRITE } from "../spec/virtqueue.ts";
import { IndirectTables } from "./driver-indirect.ts";
import { kickByCount } from "./driver-kick.ts";
import { checkSegments, type Segment, type UsedBuffer } from "./driver-segments.ts";
import { PackedAvail } from "./packed-driver-avail.ts";
import {
  flagsOffset,
  writePackedIndirectHead,
  writePackedIndirectTable,
  writePackedList,
} from "./packed-driver-desc.ts";
import { PackedDriverIds } from "./packed-driver-ids.ts";
import {
  packedDriverRingParts,
  type PackedDriverQueueConfig,
} from "./packed-driver-queue-config.ts";
import { PackedDriverSuppression } from "./packed-driver-suppression.ts";
import type { DriverRing } from "./driver-ring.ts";

export { indirectArenaBytes, type IndirectArena } from "./driver-indirect.ts";
export type { Segment, UsedBuffer } from "./driver-segments.ts";
export type { PackedDriverQueueConfig } from "./packed-driver-queue-config.ts";

/**
 * The driver end of one packed virtqueue.
 *
 * @example
 * ```ts
 * const q = new PackedDriverQueue<string>(mem, packedRingLayout(100, 0x10000));
 * q.add([{ addr: 0x1000, len: 16 }], [{ addr: 0x2000, len: 512 }], "req-1");
 * if (q.kickNeeded()) notifyDevice(q.notificationData);
 * // later, on a used buffer notification:
 * for (let u = q.getUsed(); u !== null; u = q.getUsed()) complete(u.token, u.len);
 * ```
 */
export class PackedDriverQueue<T> implements DriverRing<T> {
  /** The packed layout (§2.8). */
  readonly layout = "packed";
  /** Queue size (descriptors in the ring, and Buffer IDs). */
  readonly size: number;
  readonly #desc: GuestSlice;
  readonly #driver: GuestSlice;
  readonly #device: GuestSlice;
  readonly #arena: IndirectTables | null;
  readonly #memory: GuestMemory;
  readonly #onBroken: ((err: VirtioError) => void) | undefined;
  readonly #suppression: PackedDriverSuppression;
  /** Free Buffer IDs, free ring slots, outstanding requests: never read back from guest memory. */
  readonly #ids: PackedDriverIds<T>;

  /** Where the next request goes, the Driver Ring Wrap Counter, the open batch. */
  readonly #avail: PackedAvail;
  /** Where the device writes the next used descriptor, and the wrap counter it writes it with. */
  #lastUsed = 0;
  #usedWrap = 1;
  #broken: VirtioError | null = null;

  // Zero-allocation results of nextUsed().
  #usedToken: T | undefined = undefined;
  #usedLen = 0;

  /**
   * Takes ownership of the ring in `memory` and initialises it: the
   * Descriptor Ring and both Event Suppression structures are zeroed
   * (§2.8.13: "The descriptor ring is zero-initialized."), wrap counters 1.
   *
   * @throws {RangeError} for a bad size, misaligned parts, parts outside
   *   guest memory, or an inconsistent indirect configuration.
   */
  constructor(memory: GuestMemory, config: PackedDriverQueueConfig) {
    const n = config.size;
    if (!isValidPackedQueueSize(n))
      throw new RangeError(`packed queue size ${n} is not an integer in 1..32768`);
    this.size = n;
    this.#memory = memory;
    const parts = packedDriverRingParts(memory, config);
    this.#desc = parts.desc;
    this.#driver = parts.driver;
    this.#device = parts.device;
    this.#suppression = new PackedDriverSuppression(
      parts.desc,
      parts.driver,
      parts.device,
      n,
      config.eventIdx === true,
    );
    this.#onBroken = config.onBroken;
    this.#arena =
      config.indirect === true ? new IndirectTables(memory, config.indirectArena, n) : null;
    this.#ids = new PackedDriverIds<T>(n);
    this.#avail = new PackedAvail(parts.desc, n);
    this.#resetState();
  }

  /** Free descriptors (ring slots). */
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
   * The next slot not yet made available: `next_off` (bits 0–14) and
   * `next_wrap` (bit 15), the value a notification carries when
   * VIRTIO_F_NOTIFICATION_DATA is negotiated (§2.8.16).
   */
  get notificationData(): number {
    return this.#avail.published;
  }

  /**
   * Adds a request and makes it available at once: {@link stage} followed
   * by {@link publish}. Call {@link kickNeeded} afterwards (once per batch).
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
   * Writes a request's descriptors into the next free slots without making
   * it available: the first descriptor of the batch (the requests staged
   * since the last {@link publish}) keeps its old flags until
   * {@link publish} (or {@link kickNeeded}) stores them; every other
   * descriptor is complete. Staging many requests and publishing once saves
   * one atomic store per request.
   *
   * Uses one indirect table when VIRTIO_F_INDIRECT_DESC is in use, the
   * request has more than one segment and fits the table; otherwise a list
   * of direct descriptors in consecutive slots (wrapping at the ring end).
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
    const slots = useIndirect ? 1 : total;
    const ids = this.#ids;
    if (slots > ids.numFree) return false;
    const avail = this.#avail;
    const pos = avail.next;
    const wrap = avail.wrap;
    const id = ids.take(slots, writableBytes, useIndirect, token);
    let headFlags: number;
    if (useIndirect) {
      writePackedIndirectTable(arena, id, readable, writable);
      headFlags = writePackedIndirectHead(this.#desc, arena, pos, wrap, id, total);
    } else {
      headFlags = writePackedList(this.#desc, this.size, pos, wrap, id, readable, writable);
    }
    avail.staged(slots, headFlags);
    return true;
  }

  /** Makes every staged request available to the device (one atomic store). */
  publish(): void {
    // The one atomic store (./packed-driver-avail.ts); a new batch of Buffer IDs starts.
    if (this.#avail.publish()) this.#ids.publishBatch();
  }

  /**
   * Makes staged requests available, then says whether the device wants an
   * available buffer notification for the descriptors added since the last
   * call (Linux virtqueue_kick_prepare). Resets the count of added
   * descriptors. Returns false when nothing was added or the queue is broken.
   */
  kickNeeded(): boolean {
    if (this.#broken !== null) return false;
    this.publish();
    const avail = this.#avail;
    const added = avail.takeAdded();
    return kickByCount(added) ?? this.#suppression.kickWanted(avail.next, avail.wrap, added);
  }

  /** True if the device has marked the next slot used (false when broken). */
  hasUsed(): boolean {
    if (this.#broken !== null) return false;
    // Atomics.load (SeqCst, acquire): a fresh look at the flags of the next used slot (§2.8.2: the one location to poll).
    return isPackedDescUsed(this.#desc.atomicLoadU16(flagsOffset(this.#lastUsed)), this.#usedWrap);
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
   * the queue becomes broken (codes `USED_ID_OUT_OF_RANGE`,
   * `USED_ID_NOT_OUTSTANDING`, `USED_LEN_TOO_LONG`), nothing is consumed,
   * and false is returned.
   */
  nextUsed(): boolean {
    if (this.#broken !== null) return false;
    const pos = this.#lastUsed;
    const wrap = this.#usedWrap;
    // Atomics.load (SeqCst, acquire): the id and len the device wrote before marking the slot used (§2.8.1) are
    // visible to the plain reads below.
    const flags = this.#desc.atomicLoadU16(flagsOffset(pos));
    if (!isPackedDescUsed(flags, wrap)) return false;
    // Read each device-written field once, validate the copy, use the copy.
    const off = pos * PVIRTQ_DESC_SIZE;
    const id = this.#desc.readU16(off + PVIRTQ_DESC_OFF_ID);
    const rawLen = this.#desc.readU32(off + PVIRTQ_DESC_OFF_LEN);
    const ids = this.#ids;
    const len = ids.checkUsed(id, rawLen, (flags & VIRTQ_DESC_F_WRITE) !== 0);
    if (typeof len !== "number") return this.#fail(len);
    // §2.8.6: skip the list's descriptors to where the device writes the next used descriptor.
    const next = pos + ids.slotsOf(id);
    this.#lastUsed = next >= this.size ? next - this.size : next;
    if (next >= this.size) this.#usedWrap = wrap ^ 1;
    this.#usedLen = len;
    this.#usedToken = ids.release(id);
    this.#suppression.rearm(this.#lastUsed, this.#usedWrap);
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
   * Asks the device not to send used buffer notifications (a hint: they may
   * still come): the Driver Event Suppression flags become
   * RING_EVENT_FLAGS_DISABLE.
   */
  disableCallbacks(): void {
    this.#suppression.disable();
  }

  /**
   * Re-enables used buffer notifications and closes the race with the device
   * (Linux virtqueue_enable_cb; §2.8.22 "re-checking for more used buffers
   * after notifications are re-enabled"): with EVENT_IDX, RING_EVENT_FLAGS_DESC
   * at the next used slot, else RING_EVENT_FLAGS_ENABLE; then the next slot
   * is re-tested.
   *
   * @returns true if nothing is pending (wait for a notification); false if a
   *   used buffer arrived meanwhile: drain again (callbacks stay enabled).
   *   True when broken (there is nothing more to drain).
   */
  enableCallbacks(): boolean {
    return this.#suppression.enable(this.#lastUsed, this.#usedWrap, this.#broken !== null);
  }

  /**
   * Like {@link enableCallbacks} but, with EVENT_IDX, asks for a
   * notification only once the device used about 3/4 of the slots in flight
   * (Linux enable_cb_delayed); without EVENT_IDX the same as
   * {@link enableCallbacks}.
   *
   * @returns false if a used buffer is already pending: drain again.
   */
  enableCallbacksDelayed(): boolean {
    const inFlight = this.size - this.#ids.numFree;
    const broken = this.#broken !== null;
    return this.#suppression.enableDelayed(this.#lastUsed, this.#usedWrap, inFlight, broken);
  }

  /**
   * Forgets every outstanding request and returns their tokens (ascending
   * Buffer ID order), then re-initialises the ring to its just-constructed
   * state (zeroed, wrap counters 1, callbacks enabled, not broken). Call it
   * only when the device no longer uses the ring: after a device (or queue)
   * reset, or before the ring was handed over.
   */
  detachAll(): T[] {
    const tokens = this.#ids.tokens();
    this.#resetState();
    return tokens;
  }

  // ---- internals ----

  #resetState(): void {
    this.#ids.reset();
    this.#avail.reset();
    this.#lastUsed = 0;
    this.#usedWrap = 1;
    this.#broken = null;
    this.#usedToken = undefined;
    this.#usedLen = 0;
    // The device does not use the ring now (constructor, or after a reset): plain zeroing; the suppression's
    // SeqCst stores that follow publish it to a device thread started later.
    this.#desc.fill(0, this.#desc.length);
    this.#device.fill(0, this.#device.length);
    this.#driver.fill(0, this.#driver.length);
    this.#suppression.reset();
  }

  #fail(err: VirtioError): false {
    this.#broken = err;
    this.#onBroken?.(err);
    return false;
  }
}

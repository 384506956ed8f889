/**
 * The device side of a packed virtqueue (VIRTIO_F_RING_PACKED). VIRTIO 1.2
 * §2.8: wrap counters §2.8.1, polling §2.8.2, chaining §2.8.6, indirect
 * descriptors §2.8.7, event suppression §2.8.10 / §2.8.14, the descriptor
 * format §2.8.13, the device requirements §2.8.12, §2.8.15, §2.8.18.
 *
 * Everything the driver wrote is untrusted (docs/conformance.md "Packed
 * ring"): every guest-written field is read once, validated, and the copy
 * is used; every loop is bounded by the queue size or a table length; a
 * violation makes the queue *broken* (sticky until a new queue is
 * configured), calls `onBroken` once and throws a {@link VirtioError} with a
 * stable code. While broken the queue reads and writes nothing.
 *
 * Requirements enforced here (the chain's own are in packed-chain-walk.ts):
 * - §2.8.12: "The device MUST start processing driver descriptors in the
 *   order in which they appear in the ring" (one avail position, moved by
 *   each list's length) and "The device MUST start writing device
 *   descriptors into the ring in the order in which they complete" (used
 *   descriptors go out in `addUsed` order, packed-used-batch.ts).
 * - §2.8.15: "A device MUST NOT use a descriptor unless it observes the
 *   VIRTQ_DESC_F_AVAIL bit in its flags being changed": a list is taken only
 *   when its first descriptor is available for the avail wrap counter.
 * - §2.8.17 (what the device checks of the driver): "A driver MUST NOT create
 *   a descriptor list longer than the Queue Size", and the ring holds at most
 *   size outstanding descriptors: a first descriptor marked available while
 *   every ring descriptor is outstanding is `TOO_MANY_IN_FLIGHT`; a list
 *   that runs into outstanding ones is `CHAIN_TOO_LONG`.
 * - §2.8 buffer IDs: an ID must name one of `size` buffers
 *   (`HEAD_OUT_OF_RANGE`) that the device does not hold — in flight, or used
 *   and not yet published (`HEAD_IN_USE`) (packed-buffer-ids.ts).
 * - §2.8.15: "A device MUST NOT write to a device-readable buffer": a
 *   chain's writer covers only its device-writable segments (chain.ts).
 *
 * Chains are walked by {@link PackedChainWalker}, buffer IDs kept by
 * {@link PackedBufferIds}, used descriptors batched by
 * {@link PackedUsedBatch}, event suppression is
 * {@link PackedDeviceSuppression}; the resume state and its vhost-user
 * encoding are in packed-ring-state.ts.
 *
 * The vhost-user inflight log (config `inflight`) is kept by
 * {@link PackedTracking}: lists an earlier device left in flight are handed
 * out again first, from the log's copies, and the ring resumes where the log
 * says ({@link PackedDeviceQueue.recovery}). Without a log, a ring resumed
 * with its used position behind its avail position keeps those descriptors
 * outstanding (nothing can complete them).
 *
 * `addUsed` for an ID that is not in flight: VirtioError
 * `USED_HEAD_NOT_IN_FLIGHT`, nothing written, the queue is *not* broken (it
 * is the device program's mistake, not the driver's).
 *
 * @module
 */
import { ErrorCode, VirtioError, type ErrorCodeValue } from "../errors.ts";
import type { GuestMemory, GuestSlice } from "../memory/guest-memory.ts";
import {
  PVIRTQ_DESC_OFF_FLAGS,
  PVIRTQ_DESC_SIZE,
  isPackedDescAvail,
} from "../spec/packed-virtqueue.ts";
import type { DescriptorChain } from "./chain.ts";
import type { DeviceRing } from "./device-ring.ts";
import { PackedBufferIds } from "./packed-buffer-ids.ts";
import { PackedChainWalker } from "./packed-chain-walk.ts";
import {
  mapPackedDeviceQueue,
  type PackedDeviceQueueConfig,
} from "./packed-device-queue-config.ts";
import { PackedDeviceSuppression } from "./packed-device-suppression.ts";
import type { PackedInflightRecovery } from "./inflight-packed.ts";
import {
  encodePackedVringBase,
  outstandingSlots,
  type PackedRingState,
  type WrapCounter,
} from "./packed-ring-state.ts";
import { PackedTracking } from "./packed-tracking.ts";
import { PackedUsedBatch } from "./packed-used-batch.ts";

export type { PackedDeviceQueueConfig } from "./packed-device-queue-config.ts";
export {
  PACKED_RING_START,
  decodePackedVringBase,
  encodePackedVringBase,
  type PackedRingState,
  type WrapCounter,
} from "./packed-ring-state.ts";

/**
 * The device side of one packed virtqueue: pops validated descriptor lists
 * from the descriptor ring, writes used descriptors back in completion order,
 * and answers the event-suppression questions. It never delivers
 * notifications itself. Used the same way as the split ring's `DeviceQueue`
 * (see the loop in its documentation), `head` being the buffer ID.
 */
export class PackedDeviceQueue implements DeviceRing {
  /** Queue size (ring descriptors, and buffer IDs 0..size-1). */
  readonly size: number;
  readonly #desc: GuestSlice;
  readonly #driverEvent: GuestSlice;
  readonly #deviceEvent: GuestSlice;
  readonly #walker: PackedChainWalker;
  readonly #ids: PackedBufferIds;
  readonly #used: PackedUsedBatch;
  readonly #notify: PackedDeviceSuppression;
  readonly #tracking: PackedTracking;
  /**
   * What the inflight log held at the start (config `inflight`): the lists
   * an earlier device left in flight, which {@link popAvail} hands out again
   * first, and where the ring resumed. Null without a log or with a fresh one.
   */
  readonly recovery: PackedInflightRecovery | null;
  readonly #onBroken: ((err: VirtioError) => void) | undefined;
  #availPos: number;
  #availWrap: WrapCounter;
  /** Ring descriptors read by the device and not yet covered by a published used descriptor. */
  #outstanding: number;
  #broken: VirtioError | null = null;

  /**
   * Validates the configuration and maps the three ring parts once.
   *
   * @throws {VirtioError} `QUEUE_CONFIG` if the size is not an integer in
   *   1..32768, a part is misaligned (16/4/4) or not inside one guest memory
   *   region, or the resume state does not fit the ring.
   * @throws {RangeError} for a bad `maxIndirectEntries`.
   */
  constructor(memory: GuestMemory, config: PackedDeviceQueueConfig) {
    const parts = mapPackedDeviceQueue(memory, config);
    const { size, desc } = parts;
    this.#tracking = new PackedTracking(config.inflight ?? null, size);
    // vhost-user "When reconnecting": the log, not the front-end, says where the ring resumes.
    this.recovery = this.#tracking.recover(parts.resume, size, desc);
    const resume = this.recovery?.ring ?? parts.resume;
    this.size = size;
    this.#desc = desc;
    this.#driverEvent = parts.driverEvent;
    this.#deviceEvent = parts.deviceEvent;
    const indirect = config.indirect ?? false;
    this.#walker = new PackedChainWalker(this, memory, desc, size, indirect, parts.maxIndirect);
    this.#ids = new PackedBufferIds(memory, size);
    this.#used = new PackedUsedBatch(desc, size, resume.usedPos, resume.usedWrap);
    this.#notify = new PackedDeviceSuppression(
      parts.driverEvent,
      parts.deviceEvent,
      size,
      config.eventIdx ?? false,
      this.#used.nextCycle,
    );
    this.#onBroken = config.onBroken;
    this.#availPos = resume.availPos;
    this.#availWrap = resume.availWrap;
    this.#outstanding = outstandingSlots(resume, size);
  }

  /**
   * Where the ring stands: the next descriptor to read and the next used
   * descriptor to write (published or not), with their wrap counters. After
   * a stop with everything published this is what vhost-user GET_VRING_BASE
   * reports (`encodePackedVringBase`).
   */
  get ringState(): PackedRingState {
    return {
      availPos: this.#availPos,
      availWrap: this.#availWrap,
      usedPos: this.#used.nextPos,
      usedWrap: this.#used.nextWrap,
    };
  }

  /** vhost-user's vring base of a packed ring: {@link ringState}, encoded (`encodePackedVringBase`). */
  get vringBase(): number {
    return encodePackedVringBase(this.ringState);
  }

  /** The Driver Area's address ({@link driverEventAddr}), by the name the transports give it. */
  get availAddr(): number {
    return this.driverEventAddr;
  }

  /** The Device Area's address ({@link deviceEventAddr}), by the name the transports give it. */
  get usedAddr(): number {
    return this.deviceEventAddr;
  }

  /** Ring position of the next descriptor the device reads. */
  get availPos(): number {
    return this.#availPos;
  }

  /** The device's copy of the Driver Ring Wrap Counter at {@link availPos}. */
  get availWrap(): WrapCounter {
    return this.#availWrap;
  }

  /** Ring position where {@link addUsed} writes the next used descriptor. */
  get usedPos(): number {
    return this.#used.nextPos;
  }

  /** The Device Ring Wrap Counter at {@link usedPos}. */
  get usedWrap(): WrapCounter {
    return this.#used.nextWrap;
  }

  /** Lists popped and not yet returned with {@link addUsed}. */
  get inFlight(): number {
    return this.#ids.count;
  }

  /** Guest-physical address of the Descriptor Ring (as configured). */
  get descAddr(): number {
    return this.#desc.addr;
  }

  /** Guest-physical address of the Driver Event Suppression structure (as configured). */
  get driverEventAddr(): number {
    return this.#driverEvent.addr;
  }

  /** Guest-physical address of the Device Event Suppression structure (as configured). */
  get deviceEventAddr(): number {
    return this.#deviceEvent.addr;
  }

  /** The violation that broke the queue, or null. */
  get broken(): VirtioError | null {
    return this.#broken;
  }

  /**
   * Makes the queue broken (sticky): nothing more is consumed or written.
   * Calls `onBroken` the first time only; later calls keep the first error.
   */
  markBroken(err: VirtioError): void {
    if (this.#broken !== null) return;
    this.#broken = err;
    this.#onBroken?.(err);
  }

  /**
   * True if the descriptor at the avail position is available (§2.8.1: AVAIL
   * equal to the wrap counter, USED not). Consumes nothing, checks nothing
   * else ({@link popAvail} does). False when broken.
   */
  hasAvailable(): boolean {
    if (this.#broken !== null) return false;
    if (this.#tracking.pendingResubmit > 0) return true;
    return isPackedDescAvail(this.#loadAvailFlags(), this.#availWrap);
  }

  /**
   * Pops the next available list, validated: every descriptor of it
   * available, every buffer inside guest memory, readable buffers before
   * writable ones, bounded length, a free buffer ID. Lists the inflight log
   * says an earlier device left in flight come first, oldest first. Returns
   * null when nothing is available or the queue is broken. `head` of the
   * result is the buffer ID; the chain is reused after {@link addUsed}.
   *
   * @throws {VirtioError} one of `TOO_MANY_IN_FLIGHT`, `DESC_NOT_AVAIL`,
   *   `CHAIN_TOO_LONG`, `DESC_OUT_OF_BOUNDS`, `READ_AFTER_WRITE`,
   *   `INDIRECT_TABLE`, `INDIRECT_NESTED`, `INDIRECT_NEXT`,
   *   `HEAD_OUT_OF_RANGE`, `HEAD_IN_USE`; the queue is then broken.
   */
  popAvail(): DescriptorChain | null {
    if (this.#broken !== null) return null;
    const again = this.#tracking.takeAgain(this.#walker, this.#ids);
    if (again !== null) return again;
    const pos = this.#availPos;
    const flags = this.#loadAvailFlags();
    if (!isPackedDescAvail(flags, this.#availWrap)) return null;
    const free = this.size - this.#outstanding;
    if (free <= 0) {
      throw this.#fail(
        ErrorCode.TOO_MANY_IN_FLIGHT,
        `descriptor at ring position ${pos} is marked available, but all ${this.size} ring descriptors are outstanding`,
        { pos, size: this.size },
      );
    }
    const chain = this.#ids.scratch();
    const ndescs = this.#walker.walk(chain, pos, this.#availWrap, flags, free, this.#tracking.copy);
    const id = this.#walker.id;
    const bad = this.#ids.check(id, pos);
    if (bad !== null) throw this.#fail(...bad);
    this.#outstanding += ndescs;
    let next = pos + ndescs;
    if (next >= this.size) {
      next -= this.size;
      this.#availWrap = (this.#availWrap ^ 1) as WrapCounter;
    }
    this.#availPos = next;
    this.#tracking.fetched(id);
    return this.#ids.take(id, ndescs);
  }

  /**
   * Writes the used descriptor `{ id, len }` at the used position (not yet
   * visible to the driver: see {@link publishUsed}) and releases the chain.
   * Writes nothing when the queue is broken.
   *
   * @param len bytes written to the chain's writable part (§2.8.4: "Element
   *   Length specifies the length of the buffer that has been initialized
   *   (written to) by the device"); WRITE is set in the used flags iff > 0.
   * @throws {RangeError} if `id` is not a buffer ID of this queue or `len`
   *   is not a u32 no larger than the chain's writable bytes.
   * @throws {VirtioError} `USED_HEAD_NOT_IN_FLIGHT` if `id` is not in flight
   *   (nothing written; the queue is not broken).
   */
  addUsed(id: number, len: number): void {
    this.#ids.checkUsed(id, len);
    if (this.#broken !== null) {
      this.#ids.dropped(id);
      return;
    }
    this.#used.add(id, len, this.#ids.used(id));
    this.#tracking.used(id);
  }

  /**
   * Publishes every used descriptor added so far: their flags are stored,
   * the first one last (so a batch becomes visible at once, in completion
   * order). Writes nothing when broken or when there is nothing new.
   */
  publishUsed(): void {
    if (this.#broken !== null) return;
    const n = this.#used.pending;
    if (n === 0) return;
    for (let k = 0; k < n; k++) this.#ids.published(this.#used.idAt(k));
    this.#tracking.publishing(this.#used.nextPos, this.#used.nextWrap);
    const slots = this.#used.publish();
    this.#tracking.published();
    this.#outstanding -= slots;
    this.#notify.published(this.#used.nextCycle, slots);
  }

  /**
   * Should the device send a used buffer notification for what was
   * published since the last call? Call it after {@link publishUsed}. False
   * when nothing was published since the last call, or when broken.
   * Driver flags DISABLE: false; ENABLE: true; DESC with EVENT_IDX: true iff
   * the event descriptor is among those the used position passed since the
   * last call (§2.8.10).
   */
  needsNotification(): boolean {
    return this.#broken === null && this.#notify.needsNotification();
  }

  /**
   * EVENT_IDX: true if the driver asks (flags DESC) to hear of a descriptor
   * that is not the published used position — on an idle queue, a
   * notification it missed. False when broken.
   */
  notificationOwed(): boolean {
    return this.#broken === null && this.#notify.owed();
  }

  /** Makes the next {@link needsNotification} true (the device may notify more often). */
  forceNotification(): void {
    this.#notify.force();
  }

  /**
   * Asks the driver for available buffer notifications again, then re-checks
   * the ring: returns true iff work slipped in (the caller must drain again
   * instead of waiting). False when broken.
   *
   * EVENT_IDX: the Device Area's event descriptor becomes the avail position
   * and wrap counter, flags DESC; otherwise flags ENABLE.
   */
  enableNotification(): boolean {
    if (this.#broken !== null) return false;
    this.#notify.enable(this.#availPos, this.#availWrap);
    return this.hasAvailable();
  }

  /**
   * Tells the driver that available buffer notifications are not needed (a
   * hint: the driver may notify anyway): flags DISABLE in the Device Area.
   * Writes nothing when broken.
   */
  disableNotification(): void {
    if (this.#broken === null) this.#notify.disable();
  }

  /** Loads the flags of the descriptor at the avail position. */
  #loadAvailFlags(): number {
    const off = PVIRTQ_DESC_SIZE * this.#availPos + PVIRTQ_DESC_OFF_FLAGS;
    // Atomics.load (SeqCst): later plain reads of this list's descriptors see what the driver wrote before
    // its store of these flags (§2.8.21: the first descriptor's flags are written last).
    return this.#desc.atomicLoadU16(off);
  }

  /** Breaks the queue and returns the error for the caller to throw. */
  #fail(
    code: ErrorCodeValue,
    message: string,
    details: Record<string, number | string | boolean>,
  ): VirtioError {
    const err = new VirtioError(code, message, details);
    this.markBroken(err);
    return err;
  }
}

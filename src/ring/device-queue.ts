/**
 * The device side of a split virtqueue. VIRTIO 1.2 §2.7: descriptor table
 * §2.7.5, indirect descriptors §2.7.5.3, available ring §2.7.6, used ring
 * §2.7.8, notification suppression §2.7.7 (used buffer notifications) and
 * §2.7.10 (available buffer notifications).
 *
 * Everything the driver wrote is untrusted (docs/conformance.md "Ring
 * violations"): every guest-written field is read once, validated, and the
 * copy is used; every loop is bounded by the queue size or a table length; a
 * violation makes the queue *broken* (sticky until a new queue is configured),
 * calls `onBroken` once and throws a {@link VirtioError} with a stable code.
 * While broken the queue reads and writes nothing.
 *
 * Chains are walked by {@link ChainWalker} (chain-walk.ts); heads in flight
 * and the inflight log are kept by {@link InFlightChains}
 * (in-flight-chains.ts); notification suppression is
 * {@link DeviceSuppression} (device-suppression.ts). Decisions where the spec leaves room (see
 * docs/conformance.md):
 * - `disableNotification` with EVENT_IDX is a no-op: `avail_event` is only
 *   moved by {@link DeviceQueue.enableNotification}, so the driver kicks at
 *   most once more after the device stopped re-arming. The device must follow
 *   the loop `disable → drain → if (enable()) drain again` before it waits.
 * - `addUsed` for a head that is not in flight: VirtioError
 *   `USED_HEAD_NOT_IN_FLIGHT`, nothing written, the queue is *not* broken
 *   (it is the device program's mistake, not the driver's).
 *
 * @module
 */
import { ErrorCode, VirtioError, type ErrorCodeValue } from "../errors.ts";
import type { GuestMemory, GuestSlice } from "../memory/guest-memory.ts";
import {
  VIRTQ_AVAIL_OFF_IDX,
  VIRTQ_AVAIL_OFF_RING,
  VIRTQ_USED_ELEM_SIZE,
  VIRTQ_USED_OFF_IDX,
  VIRTQ_USED_OFF_RING,
} from "../spec/virtqueue.ts";
import type { DescriptorChain } from "./chain.ts";
import { ChainWalker, MAX_CHAIN_BYTES } from "./chain-walk.ts";
import { mapDeviceQueue, type DeviceQueueConfig } from "./device-queue-config.ts";
import type { DeviceRing } from "./device-ring.ts";
import { DeviceSuppression } from "./device-suppression.ts";
import { InFlightChains } from "./in-flight-chains.ts";
import type { InflightRecovery } from "./inflight-split.ts";

export { DEFAULT_MAX_INDIRECT_ENTRIES, type DeviceQueueConfig } from "./device-queue-config.ts";
export type { InflightTracker } from "./in-flight-chains.ts";

/**
 * The device side of one split virtqueue: pops validated descriptor chains
 * from the available ring, returns them on the used ring, and answers the
 * notification-suppression questions. It never delivers notifications
 * itself.
 *
 * Typical use (one thread, the queue's only consumer):
 * ```ts
 * q.disableNotification();
 * for (;;) {
 *   for (let c = q.popAvail(); c !== null; c = q.popAvail()) handle(c); // later: q.addUsed(c.head, n)
 *   if (!q.enableNotification()) break; // nothing slipped in: wait for the next kick
 *   q.disableNotification();
 * }
 * q.publishUsed();
 * if (q.needsNotification()) call();
 * ```
 */
export class DeviceQueue implements DeviceRing {
  /** Queue size (number of descriptors and ring entries). */
  readonly size: number;
  readonly #desc: GuestSlice;
  readonly #avail: GuestSlice;
  readonly #used: GuestSlice;
  readonly #mask: number;
  readonly #walker: ChainWalker;
  readonly #onBroken: ((err: VirtioError) => void) | undefined;
  readonly #notify: DeviceSuppression;

  readonly #chains: InFlightChains;
  /**
   * What the inflight log held at the start (config `inflight`): the chains
   * an earlier device left in flight, which {@link popAvail} hands out again
   * first. Null without a log or with a fresh one.
   */
  readonly recovery: InflightRecovery | null;

  #nextAvail: number;
  /** Last avail.idx loaded and validated; entries in [nextAvail, shadow) are published. */
  #availShadow: number;
  #nextUsed: number;
  /** Used elements added but not yet published. */
  #pendingUsed = 0;
  #broken: VirtioError | null = null;

  /**
   * Validates the configuration and maps the three ring parts once.
   *
   * @throws {VirtioError} `QUEUE_CONFIG` if the size is not a power of two in
   *   1..32768, a part is misaligned (16/2/4) or not inside one guest memory
   *   region, or `nextAvail` is not a u16.
   * @throws {RangeError} for a bad `maxIndirectEntries`.
   */
  constructor(memory: GuestMemory, config: DeviceQueueConfig) {
    const { size, desc, avail, used, maxIndirect, nextAvail } = mapDeviceQueue(memory, config);
    this.size = size;
    this.#desc = desc;
    this.#avail = avail;
    this.#used = used;
    this.#mask = size - 1;
    this.#walker = new ChainWalker(this, memory, desc, size, config.indirect ?? false, maxIndirect);
    this.#onBroken = config.onBroken;
    this.#chains = new InFlightChains(memory, size, config.inflight ?? null);
    const resume = config.usedIdxFromMemory === true || config.inflight !== undefined;
    // Atomics.load (SeqCst): the used index the other side last saw, when resuming a ring.
    this.#nextUsed = resume ? this.#used.atomicLoadU16(VIRTQ_USED_OFF_IDX) : 0;
    this.#notify = new DeviceSuppression(
      avail,
      used,
      size,
      config.eventIdx ?? false,
      this.#nextUsed,
    );
    // vhost-user "When reconnecting": the log, not the front-end, says where the available ring resumes.
    this.recovery = this.#chains.recover(this.#nextUsed, size);
    this.#nextAvail = this.recovery?.nextAvail ?? nextAvail;
    this.#availShadow = this.#nextAvail;
  }

  /** Free-running index of the next available-ring entry to consume (last_avail_idx). */
  get nextAvail(): number {
    return this.#nextAvail;
  }

  /** vhost-user's vring base of a split ring: {@link nextAvail}. */
  get vringBase(): number {
    return this.#nextAvail;
  }

  /** Free-running index of the next used-ring entry {@link addUsed} writes (published or not). */
  get nextUsed(): number {
    return this.#nextUsed;
  }

  /** Chains popped and not yet returned with {@link addUsed}. */
  get inFlight(): number {
    return this.#chains.count;
  }

  /** Guest-physical address of the descriptor table (as configured). */
  get descAddr(): number {
    return this.#desc.addr;
  }

  /** Guest-physical address of the available ring (as configured). */
  get availAddr(): number {
    return this.#avail.addr;
  }

  /** Guest-physical address of the used ring (as configured). */
  get usedAddr(): number {
    return this.#used.addr;
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
   * True if the driver has made chains available that were not popped yet.
   * False when broken.
   *
   * @throws {VirtioError} `AVAIL_IDX_JUMP` (and the queue is broken).
   */
  hasAvailable(): boolean {
    if (this.#broken !== null) return false;
    if (this.#chains.pendingResubmit > 0) return true;
    this.#availShadow = this.#loadAvailIdx();
    return this.#availShadow !== this.#nextAvail;
  }

  /**
   * Pops the next available chain, validated: every buffer inside guest
   * memory, readable buffers before writable ones, bounded length. Chains
   * the inflight log says an earlier device left in flight come first,
   * oldest first (their descriptors are walked again). Returns
   * null when nothing is available or the queue is broken. The chain object
   * is owned by the queue and reused after its head is given to
   * {@link addUsed}.
   *
   * @throws {VirtioError} one of `AVAIL_IDX_JUMP`, `HEAD_OUT_OF_RANGE`,
   *   `TOO_MANY_IN_FLIGHT`, `HEAD_IN_USE`, `NEXT_OUT_OF_RANGE`, `DESC_LOOP`,
   *   `CHAIN_TOO_LONG`, `DESC_OUT_OF_BOUNDS`, `READ_AFTER_WRITE`,
   *   `INDIRECT_TABLE`, `INDIRECT_NESTED`, `INDIRECT_NEXT`; the queue is then broken.
   */
  popAvail(): DescriptorChain | null {
    if (this.#broken !== null) return null;
    const again = this.#chains.nextResubmit();
    if (again >= 0) return this.#take(again, true);
    if (this.#nextAvail === this.#availShadow) {
      // Read avail.idx once per batch: only when every entry seen so far is consumed.
      this.#availShadow = this.#loadAvailIdx();
      if (this.#nextAvail === this.#availShadow) return null;
    }
    const pos = this.#nextAvail & this.#mask;
    // Plain read, ordered after the Atomics.load of avail.idx that published this entry.
    const head = this.#avail.readU16(VIRTQ_AVAIL_OFF_RING + 2 * pos);
    const bad = this.#chains.checkHead(head, this.#nextAvail);
    if (bad !== null) throw this.#fail(...bad);
    const chain = this.#take(head, false);
    this.#nextAvail = (this.#nextAvail + 1) & 0xffff;
    return chain;
  }

  /** Walks `head`'s chain and puts it in flight (`again`: handed out again from the inflight log). */
  #take(head: number, again: boolean): DescriptorChain {
    const chain = this.#chains.chainFor(head);
    this.#walker.walk(chain);
    this.#chains.take(head, again);
    return chain;
  }

  /**
   * Writes a used element `{ id: head, len }` (not yet visible to the driver:
   * see {@link publishUsed}) and releases the chain. Writes nothing when the
   * queue is broken.
   *
   * @param len bytes written to the chain's writable part (§2.7.8.1: the
   *   device MUST write at least `len` bytes before updating the used idx).
   * @throws {RangeError} if `head` is not a queue index or `len` is not a u32
   *   no larger than the chain's writable bytes.
   * @throws {VirtioError} `USED_HEAD_NOT_IN_FLIGHT` if `head` is not in flight
   *   (nothing written; the queue is not broken).
   */
  addUsed(head: number, len: number): void {
    if (!Number.isInteger(head) || head < 0 || head >= this.size)
      throw new RangeError(`used head ${head} is not an index of a queue of size ${this.size}`);
    if (!Number.isInteger(len) || len < 0 || len > MAX_CHAIN_BYTES)
      throw new RangeError(`used length ${len} is not a u32`);
    if (!this.#chains.isInFlight(head)) {
      throw new VirtioError(
        ErrorCode.USED_HEAD_NOT_IN_FLIGHT,
        `used head ${head} is not in flight`,
        { head },
      );
    }
    const chain = this.#chains.get(head);
    if (len > chain.writableBytes) {
      throw new RangeError(
        `used length ${len} for head ${head} exceeds its ${chain.writableBytes} writable bytes`,
      );
    }
    if (this.#broken !== null) {
      this.#chains.release(head, false);
      return;
    }
    const off = VIRTQ_USED_OFF_RING + VIRTQ_USED_ELEM_SIZE * (this.#nextUsed & this.#mask);
    // Plain writes: made visible by the Atomics.store of used.idx in publishUsed.
    this.#used.writeU32(off, head);
    this.#used.writeU32(off + 4, len);
    this.#chains.release(head, true);
    this.#nextUsed = (this.#nextUsed + 1) & 0xffff;
    this.#pendingUsed++;
  }

  /**
   * Publishes every used element added so far by storing used.idx (so a
   * batch becomes visible at once). Writes nothing when broken or when there
   * is nothing new.
   */
  publishUsed(): void {
    if (this.#broken !== null || this.#pendingUsed === 0) return;
    // Atomics.store (SeqCst): used elements and the data written into buffers become visible before the new used.idx.
    this.#used.atomicStoreU16(VIRTQ_USED_OFF_IDX, this.#nextUsed);
    this.#chains.published(this.#nextUsed);
    this.#notify.published(this.#nextUsed, this.#pendingUsed);
    this.#pendingUsed = 0;
  }

  /**
   * Should the device send a used buffer notification for what was
   * published since the last call? Call it after {@link publishUsed}.
   * False when nothing was published since the last call, or when broken.
   * With EVENT_IDX, true iff `used_event` lies among the used indexes
   * published since the last call; otherwise true unless avail.flags has
   * NO_INTERRUPT (§2.7.7.2).
   */
  needsNotification(): boolean {
    return this.#broken === null && this.#notify.needsNotification();
  }

  /**
   * EVENT_IDX: true if the driver still asks to hear of work already
   * published (`used_event` is not the published used.idx) — on an idle
   * queue, a notification it missed. False when broken, and false once a
   * notification was forced for this used.idx.
   */
  notificationOwed(): boolean {
    return this.#broken === null && this.#notify.owed();
  }

  /** Makes the next {@link needsNotification} true (§2.7.7.2 lets the device notify more often). */
  forceNotification(): void {
    this.#notify.force();
  }

  /**
   * Asks the driver for available buffer notifications again, then re-checks
   * the available ring: returns true iff work slipped in (the caller must
   * drain again instead of waiting). False when broken.
   *
   * EVENT_IDX: writes `avail_event = nextAvail`; otherwise clears
   * VIRTQ_USED_F_NO_NOTIFY.
   *
   * @throws {VirtioError} `AVAIL_IDX_JUMP` from the re-check (queue broken).
   */
  enableNotification(): boolean {
    if (this.#broken !== null) return false;
    this.#notify.enable(this.#nextAvail);
    return this.hasAvailable();
  }

  /**
   * Tells the driver that available buffer notifications are not needed
   * (a hint: §2.7.10 lets the driver notify anyway). Without EVENT_IDX this
   * sets VIRTQ_USED_F_NO_NOTIFY; with EVENT_IDX it does nothing
   * (`avail_event` simply stops moving). Writes nothing when broken.
   */
  disableNotification(): void {
    if (this.#broken === null) this.#notify.disable();
  }

  /** Loads and validates avail.idx; a jump breaks the queue. */
  #loadAvailIdx(): number {
    // Atomics.load (SeqCst): later plain reads of ring entries and descriptors see what the driver wrote before its store.
    const idx = this.#avail.atomicLoadU16(VIRTQ_AVAIL_OFF_IDX);
    const pending = (idx - this.#nextAvail) & 0xffff;
    // The driver can have at most `size` entries outstanding; exactly `size` ahead is a full ring.
    if (pending > this.size) {
      throw this.#fail(
        ErrorCode.AVAIL_IDX_JUMP,
        `avail.idx ${idx} is ${pending} entries ahead of the device's next index ${this.#nextAvail}, queue size is ${this.size}`,
        { availIdx: idx, nextAvail: this.#nextAvail, size: this.size },
      );
    }
    return idx;
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

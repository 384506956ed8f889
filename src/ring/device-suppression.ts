/**
 * Notification suppression on the device side of a split virtqueue: when
 * the device must send a used buffer notification, how it asks the driver
 * for available buffer notifications or not, and the notification a driver
 * can miss. VIRTIO 1.2 §2.7.7 (used buffer notifications: `avail.flags`
 * NO_INTERRUPT, or `used_event` with VIRTIO_F_EVENT_IDX), §2.7.10
 * (available buffer notifications: `used.flags` NO_NOTIFY, or
 * `avail_event`).
 *
 * Each decision pairs a store with a load against the driver's mirror-image
 * pair (store→load, "Dekker"): every access here is an `Atomics` access,
 * sequentially consistent. Single-threaded: the queue's thread.
 *
 * @module
 */
import type { GuestSlice } from "../memory/guest-memory.ts";
import {
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_AVAIL_OFF_FLAGS,
  VIRTQ_USED_F_NO_NOTIFY,
  VIRTQ_USED_OFF_FLAGS,
  availEventOffset,
  usedEventOffset,
  vringNeedEvent,
} from "../spec/virtqueue.ts";

/** The device's suppression state for one ring. */
export class DeviceSuppression {
  readonly #avail: GuestSlice;
  readonly #used: GuestSlice;
  readonly #eventIdx: boolean;
  readonly #usedEventOff: number;
  readonly #availEventOff: number;
  /** used.idx as last stored. */
  #publishedUsed: number;
  /** used.idx at the last needsNotification call ("old"), and elements published since. */
  #lastSignalUsed: number;
  #publishedSinceSignal = 0;
  #usedFlags = 0;
  /** The next needsNotification is true whatever was published ({@link force}). */
  #forced = false;
  /** The used.idx a forced notification was last sent for (-1: none); one per published index. */
  #forcedAt = -1;

  /** `usedIdx`: the used ring's idx the queue starts from. */
  constructor(
    avail: GuestSlice,
    used: GuestSlice,
    size: number,
    eventIdx: boolean,
    usedIdx: number,
  ) {
    this.#avail = avail;
    this.#used = used;
    this.#eventIdx = eventIdx;
    this.#usedEventOff = usedEventOffset(size);
    this.#availEventOff = availEventOffset(size);
    this.#publishedUsed = usedIdx;
    this.#lastSignalUsed = usedIdx;
  }

  /** used.idx was stored as `usedIdx`, `count` elements more than before. */
  published(usedIdx: number, count: number): void {
    this.#publishedUsed = usedIdx;
    this.#publishedSinceSignal += count;
  }

  /**
   * Should the device notify for what was published since the last call?
   *
   * - EVENT_IDX (§2.7.7.2): true iff `used_event` lies in the window of used
   *   indexes published since the last call (`vring_need_event`); forced true
   *   if more than 65535 were published, since the window then covers every
   *   u16 value. The window start is the exact used.idx of the previous call
   *   (starting at the initial used idx), so no "signalled_used_valid" flag
   *   is needed.
   * - otherwise (§2.7.7.2): true unless avail.flags has NO_INTERRUPT.
   */
  needsNotification(): boolean {
    const count = this.#publishedSinceSignal;
    const old = this.#lastSignalUsed;
    const now = this.#publishedUsed;
    this.#publishedSinceSignal = 0;
    this.#lastSignalUsed = now;
    if (this.#forced) {
      this.#forced = false;
      return true;
    }
    if (count === 0) return false;
    if (!this.#eventIdx) {
      // Atomics.load (SeqCst): ordered after the used.idx store; pairs with the driver's flags store then used.idx load.
      const flags = this.#avail.atomicLoadU16(VIRTQ_AVAIL_OFF_FLAGS);
      // §2.7.7.2: "If flags is 1, the device SHOULD NOT send a notification. If flags is 0, the device MUST send a notification."
      return (flags & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
    }
    if (count > 0xffff) return true;
    // Atomics.load (SeqCst): ordered after the used.idx store (store→load Dekker pair with the driver's used_event store → used.idx load).
    const usedEvent = this.#avail.atomicLoadU16(this.#usedEventOff);
    // §2.7.7.2: "If the idx field in the used ring (which determined where that descriptor index was placed)
    // was equal to used_event, the device MUST send a notification."
    return vringNeedEvent(usedEvent, now, old);
  }

  /**
   * EVENT_IDX: true if `used_event` is not the published used.idx — the
   * driver asked to hear of an index that is already published. A driver
   * that consumed everything re-arms at used.idx, so on an idle queue this
   * means a notification was lost: the driver's used_event store and its
   * re-check of used.idx were reordered against ours (as a TCG guest with
   * one vCPU can let happen), so it went to sleep on work that is there.
   * The caller decides when to look (only when idle, twice). False once a
   * notification was forced for this used.idx: a driver that keeps
   * used_event elsewhere on purpose (callbacks off) is notified once, not
   * at every look.
   */
  owed(): boolean {
    if (!this.#eventIdx || this.#forcedAt === this.#publishedUsed) return false;
    // Atomics.load (SeqCst): the driver's latest used_event, after our used.idx store.
    return this.#avail.atomicLoadU16(this.#usedEventOff) !== this.#publishedUsed;
  }

  /** Makes the next {@link needsNotification} true (§2.7.7.2 lets the device notify more often). */
  force(): void {
    this.#forced = true;
    this.#forcedAt = this.#publishedUsed;
  }

  /** Asks for available buffer notifications from `nextAvail` on (the caller re-checks the ring after). */
  enable(nextAvail: number): void {
    if (this.#eventIdx) {
      // Atomics.store (SeqCst): publishes avail_event before the caller's avail.idx re-load (store→load Dekker pair
      // with the driver's avail.idx store → avail_event load).
      this.#used.atomicStoreU16(this.#availEventOff, nextAvail);
    } else {
      this.#usedFlags &= ~VIRTQ_USED_F_NO_NOTIFY;
      // Atomics.store (SeqCst): clears NO_NOTIFY before the caller's avail.idx re-load (same Dekker pair with flags).
      this.#used.atomicStoreU16(VIRTQ_USED_OFF_FLAGS, this.#usedFlags);
    }
  }

  /** Without EVENT_IDX sets NO_NOTIFY (a hint); with it does nothing: `avail_event` simply stops moving. */
  disable(): void {
    // §2.7.10: with EVENT_IDX "The device MUST set flags to 0", so only avail_event may suppress.
    if (this.#eventIdx) return;
    this.#usedFlags |= VIRTQ_USED_F_NO_NOTIFY;
    // Atomics.store (SeqCst): a hint; no ordering needed beyond the field being written whole.
    this.#used.atomicStoreU16(VIRTQ_USED_OFF_FLAGS, this.#usedFlags);
  }
}

/**
 * Notification suppression as the driver of a split ring sees it: whether
 * the device wants a kick (avail_event, or the used ring's NO_NOTIFY flag),
 * and whether the driver wants used-buffer notifications (used_event, or the
 * available ring's NO_INTERRUPT flag), with the re-check that closes the race
 * when they are re-enabled. VIRTIO 1.2 §2.7.7 (used buffer notification
 * suppression), §2.7.10 (available buffer notification suppression).
 *
 * Linux's split ring driver: `kickWanted` is the device side of
 * virtqueue_kick_prepare, `enable` = enable_cb (prepare + poll),
 * `enableDelayed` = enable_cb_delayed. The fields are shared with the device
 * thread; every access is an Atomics one, in the order the comments give.
 *
 * @module
 */
import type { GuestSlice } from "../memory/guest-memory.ts";
import {
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_AVAIL_OFF_FLAGS,
  VIRTQ_USED_F_NO_NOTIFY,
  VIRTQ_USED_OFF_FLAGS,
  VIRTQ_USED_OFF_IDX,
  availEventOffset,
  usedEventOffset,
} from "../spec/virtqueue.ts";
import { kickByEvent } from "./driver-kick.ts";

/** The suppression fields of one split ring, from the driver's side. */
export class SplitDriverSuppression {
  readonly #avail: GuestSlice;
  readonly #used: GuestSlice;
  readonly #eventIdx: boolean;
  readonly #usedEventOff: number;
  readonly #availEventOff: number;
  #disabled = false;

  /**
   * @param avail the available ring (flags, used_event).
   * @param used the used ring (flags, idx, avail_event).
   * @param size the queue size.
   * @param eventIdx VIRTIO_F_EVENT_IDX negotiated.
   */
  constructor(avail: GuestSlice, used: GuestSlice, size: number, eventIdx: boolean) {
    this.#avail = avail;
    this.#used = used;
    this.#eventIdx = eventIdx;
    this.#usedEventOff = usedEventOffset(size);
    this.#availEventOff = availEventOffset(size);
  }

  /** VIRTIO_F_EVENT_IDX is in use. */
  get eventIdx(): boolean {
    return this.#eventIdx;
  }

  /**
   * Whether the device wants a notification for the `added` requests
   * published up to `newIdx` (call after the avail.idx store).
   */
  kickWanted(newIdx: number, added: number): boolean {
    if (this.#eventIdx) {
      // Atomics.load (SeqCst): ordered after the avail.idx store in publish() (full barrier), so a device that
      // re-armed avail_event before seeing our idx is seen here (Linux: virtio_mb before reading avail_event).
      const availEvent = this.#used.atomicLoadU16(this.#availEventOff);
      return kickByEvent(availEvent, newIdx, added);
    }
    // Atomics.load (SeqCst): ordered after the avail.idx store (same full barrier as above).
    const flags = this.#used.atomicLoadU16(VIRTQ_USED_OFF_FLAGS);
    // §2.7.10 "If flags is 1, the driver SHOULD NOT send a notification"; otherwise it MUST.
    return (flags & VIRTQ_USED_F_NO_NOTIFY) === 0;
  }

  /** After taking the used entry before `lastUsed`: ask for a notification for the next one. */
  rearm(lastUsed: number): void {
    if (this.#eventIdx && !this.#disabled) {
      // Atomics.store (SeqCst): re-arm used_event at the next entry we will read (Linux get_buf), so the
      // device notifies for the very next completion.
      this.#avail.atomicStoreU16(this.#usedEventOff, lastUsed);
    }
  }

  /** See {@link DriverQueue.disableCallbacks}; `lastUsed` is the next used index to read. */
  disable(lastUsed: number): void {
    if (this.#disabled) return;
    this.#disabled = true;
    if (this.#eventIdx) {
      // Atomics.store (SeqCst): publish the parked event index.
      this.#avail.atomicStoreU16(this.#usedEventOff, (lastUsed - 1) & 0xffff);
    } else {
      // Atomics.store (SeqCst): publish NO_INTERRUPT.
      this.#avail.atomicStoreU16(VIRTQ_AVAIL_OFF_FLAGS, VIRTQ_AVAIL_F_NO_INTERRUPT);
    }
  }

  /** See {@link DriverQueue.enableCallbacks}; a `broken` queue arms nothing. */
  enable(lastUsed: number, broken: boolean): boolean {
    this.#disabled = false;
    if (broken) return true;
    this.#arm(lastUsed);
    return !this.#pollUsed(lastUsed);
  }

  /** See {@link DriverQueue.enableCallbacksDelayed}. */
  enableDelayed(lastUsed: number, outstanding: number, broken: boolean): boolean {
    if (!this.#eventIdx) return this.enable(lastUsed, broken);
    this.#disabled = false;
    if (broken) return true;
    const bufs = Math.floor((outstanding * 3) / 4);
    this.#arm((lastUsed + bufs) & 0xffff);
    // Atomics.load (SeqCst): after the used_event store above (full barrier), as in #pollUsed.
    const usedIdx = this.#used.atomicLoadU16(VIRTQ_USED_OFF_IDX);
    return ((usedIdx - lastUsed) & 0xffff) <= bufs;
  }

  /** A ring just (re)initialised at index `start`: notifications enabled from the first completion. */
  reset(start: number): void {
    this.#disabled = false;
    if (this.#eventIdx) {
      // Atomics.store (SeqCst): used_event = the first used entry, so the first completion is notified.
      this.#avail.atomicStoreU16(this.#usedEventOff, start);
    }
  }

  #arm(event: number): void {
    if (this.#eventIdx) {
      // Atomics.store (SeqCst): used_event must be visible before the used.idx re-check that follows (store→load
      // full barrier; Linux enable_cb_prepare + virtqueue_poll's mb).
      this.#avail.atomicStoreU16(this.#usedEventOff, event);
    } else {
      // Atomics.store (SeqCst): clear NO_INTERRUPT before the re-check (same store→load ordering).
      this.#avail.atomicStoreU16(VIRTQ_AVAIL_OFF_FLAGS, 0);
    }
  }

  /** True if used.idx moved past `lastUsed` (re-check after arming). */
  #pollUsed(lastUsed: number): boolean {
    // Atomics.load (SeqCst): after the arming store, so either the device sees our used_event/flags or we see its idx.
    return this.#used.atomicLoadU16(VIRTQ_USED_OFF_IDX) !== lastUsed;
  }
}

/**
 * Event suppression as the driver of a packed ring sees it: whether the
 * device wants an available buffer notification (the Device Event
 * Suppression structure, read), and whether the driver wants used buffer
 * notifications (the Driver Event Suppression structure, written), with the
 * re-check that closes the race when they are re-enabled. VIRTIO 1.2 §2.8.10
 * (Driver and Device Event Suppression), §2.8.14 (struct
 * pvirtq_event_suppress), §2.8.21.2 / §2.8.21.3.1 (sending available buffer
 * notifications), §2.8.22 (receiving used buffers: disable, drain, enable,
 * re-test).
 *
 * Enforced here:
 * - §2.8.21.3.1 "The driver MUST perform a suitable memory barrier before
 *   reading the Event Suppression structure occupying the Device Area." —
 *   the Device Area loads are SeqCst and follow the SeqCst flags store that
 *   made the requests available (a store→load full barrier).
 * - §2.8.10: RING_EVENT_FLAGS_DESC is "Only valid if VIRTIO_F_EVENT_IDX has
 *   been negotiated" — without it the driver never writes DESC, and reads a
 *   device's DESC as "enabled" (a spurious notification is harmless).
 *
 * Linux's packed ring driver: `kickWanted` is the device side of
 * virtqueue_kick_prepare_packed, `enable` = enable_cb_prepare + poll,
 * `enableDelayed` = enable_cb_delayed, `rearm` the off_wrap store of
 * get_buf. The structures are shared with the device thread; every access
 * is an Atomics one, in the order the comments give.
 *
 * @module
 */
import type { GuestSlice } from "../memory/guest-memory.ts";
import {
  PVIRTQ_EVENT_OFF_DESC,
  PVIRTQ_EVENT_OFF_FLAGS,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  RING_EVENT_FLAGS_MASK,
  RING_EVENT_OFF_MASK,
  RING_EVENT_WRAP_SHIFT,
  isPackedDescUsed,
} from "../spec/packed-virtqueue.ts";
import { kickByEvent } from "./driver-kick.ts";
import { flagsOffset } from "./packed-driver-desc.ts";

/** The two Event Suppression structures of one packed ring, from the driver's side. */
export class PackedDriverSuppression {
  readonly #desc: GuestSlice;
  readonly #driver: GuestSlice;
  readonly #device: GuestSlice;
  readonly #size: number;
  readonly #eventIdx: boolean;
  /** The Driver Event Suppression flags last written (Linux event_flags_shadow). */
  #flags = RING_EVENT_FLAGS_ENABLE;

  /**
   * @param desc the Descriptor Ring (for the re-check after enabling).
   * @param driver the Driver Area (written here).
   * @param device the Device Area (read here).
   * @param size the queue size.
   * @param eventIdx VIRTIO_F_EVENT_IDX negotiated.
   */
  constructor(
    desc: GuestSlice,
    driver: GuestSlice,
    device: GuestSlice,
    size: number,
    eventIdx: boolean,
  ) {
    this.#desc = desc;
    this.#driver = driver;
    this.#device = device;
    this.#size = size;
    this.#eventIdx = eventIdx;
  }

  /**
   * Whether the device wants a notification for the `added` descriptors made
   * available up to ring slot `nextAvail` (Driver Ring Wrap Counter `wrap`
   * there); call after the flags store that made them available.
   */
  kickWanted(nextAvail: number, wrap: number, added: number): boolean {
    // Atomics.load (SeqCst): after the SeqCst flags store in publish() (store→load full barrier, §2.8.21.3.1), so
    // a device that re-enabled events before seeing our descriptors is seen here (Linux: virtio_mb first).
    const flags = this.#device.atomicLoadU16(PVIRTQ_EVENT_OFF_FLAGS) & RING_EVENT_FLAGS_MASK;
    if (flags === RING_EVENT_FLAGS_DISABLE) return false;
    if (flags !== RING_EVENT_FLAGS_DESC || !this.#eventIdx) return true;
    // A whole ring or more made available since the last decision: the event slot was passed, wherever it is.
    if (added >= this.#size) return true;
    // Atomics.load (SeqCst): after the flags load; the device stores desc before flags, so this desc is at least
    // as new as the DESC we saw.
    const offWrap = this.#device.atomicLoadU16(PVIRTQ_EVENT_OFF_DESC);
    return kickByEvent(this.#eventIndex(offWrap, wrap), nextAvail, added);
  }

  /** After taking a used buffer: in DESC mode, ask for a notification for the next used slot. */
  rearm(lastUsed: number, usedWrap: number): void {
    if (this.#flags === RING_EVENT_FLAGS_DESC) {
      // Atomics.store (SeqCst): re-arm the event at the next slot we will read (Linux get_buf), so the device
      // notifies for the very next used descriptor.
      this.#driver.atomicStoreU16(PVIRTQ_EVENT_OFF_DESC, offWrap(lastUsed, usedWrap));
    }
  }

  /** See {@link PackedDriverQueue.disableCallbacks}. */
  disable(): void {
    if (this.#flags === RING_EVENT_FLAGS_DISABLE) return;
    this.#flags = RING_EVENT_FLAGS_DISABLE;
    // Atomics.store (SeqCst): publish RING_EVENT_FLAGS_DISABLE.
    this.#driver.atomicStoreU16(PVIRTQ_EVENT_OFF_FLAGS, RING_EVENT_FLAGS_DISABLE);
  }

  /** See {@link PackedDriverQueue.enableCallbacks}; a `broken` queue arms nothing. */
  enable(lastUsed: number, usedWrap: number, broken: boolean): boolean {
    if (broken) return true;
    this.#arm(lastUsed, usedWrap);
    return !this.#usedAt(lastUsed, usedWrap);
  }

  /** See {@link PackedDriverQueue.enableCallbacksDelayed}; `inFlight` ring slots are in use. */
  enableDelayed(lastUsed: number, usedWrap: number, inFlight: number, broken: boolean): boolean {
    if (!this.#eventIdx) return this.enable(lastUsed, usedWrap, broken);
    if (broken) return true;
    // Linux enable_cb_delayed_packed: an event about 3/4 of the slots in flight ahead.
    let pos = lastUsed + Math.floor((inFlight * 3) / 4);
    let wrap = usedWrap;
    if (pos >= this.#size) {
      pos -= this.#size;
      wrap ^= 1;
    }
    this.#arm(pos, wrap);
    return !this.#usedAt(lastUsed, usedWrap);
  }

  /** A ring just (re)initialised: events enabled (flags ENABLE, desc 0), as after a reset. */
  reset(): void {
    this.#flags = RING_EVENT_FLAGS_ENABLE;
    // Atomics.store (SeqCst): the event offset, before the flags (as the device reads them).
    this.#driver.atomicStoreU16(PVIRTQ_EVENT_OFF_DESC, 0);
    // Atomics.store (SeqCst): flags ENABLE, published after the descriptor ring was zeroed.
    this.#driver.atomicStoreU16(PVIRTQ_EVENT_OFF_FLAGS, RING_EVENT_FLAGS_ENABLE);
  }

  /** With EVENT_IDX: DESC at (`pos`, `wrap`); else ENABLE. */
  #arm(pos: number, wrap: number): void {
    if (this.#eventIdx) {
      // Atomics.store (SeqCst): the event offset and wrap first, so a device that sees flags DESC sees them too;
      // ordered before the re-check load that follows (store→load full barrier: Linux enable_cb_prepare + mb).
      this.#driver.atomicStoreU16(PVIRTQ_EVENT_OFF_DESC, offWrap(pos, wrap));
      if (this.#flags === RING_EVENT_FLAGS_DESC) return;
      this.#flags = RING_EVENT_FLAGS_DESC;
    } else {
      if (this.#flags === RING_EVENT_FLAGS_ENABLE) return;
      this.#flags = RING_EVENT_FLAGS_ENABLE;
    }
    // Atomics.store (SeqCst): the new flags, before the re-check load that follows (store→load full barrier).
    this.#driver.atomicStoreU16(PVIRTQ_EVENT_OFF_FLAGS, this.#flags);
  }

  /** True if ring slot `pos` holds a used descriptor for wrap counter `wrap` (the re-test). */
  #usedAt(pos: number, wrap: number): boolean {
    // Atomics.load (SeqCst): after the arming stores, so either the device sees our event structure or we see
    // its used descriptor.
    return isPackedDescUsed(this.#desc.atomicLoadU16(flagsOffset(pos)), wrap);
  }

  /**
   * The device's event as a position comparable with this lap's slots: its
   * offset, or offset − size when it names the previous lap (Linux
   * kick_prepare_packed), as a u16.
   */
  #eventIndex(offWrapValue: number, wrap: number): number {
    const off = offWrapValue & RING_EVENT_OFF_MASK;
    const w = offWrapValue >>> RING_EVENT_WRAP_SHIFT;
    return (w === wrap ? off : off - this.#size) & 0xffff;
  }
}

/** §2.8.14: desc = offset in bits 0–14, wrap counter in bit 15. */
export function offWrap(pos: number, wrap: number): number {
  return (pos & RING_EVENT_OFF_MASK) | (wrap << RING_EVENT_WRAP_SHIFT);
}

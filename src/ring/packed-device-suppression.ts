/**
 * Event suppression on the device side of a packed virtqueue: when the
 * device must send a used buffer notification (it reads the Driver Event
 * Suppression structure), and how it asks the driver for available buffer
 * notifications or not (it writes the Device Event Suppression structure).
 * VIRTIO 1.2 §2.8.10 (RING_EVENT_FLAGS_ENABLE / DISABLE / DESC; DESC "Only
 * valid if VIRTIO_F_EVENT_IDX has been negotiated"; the event "will only
 * trigger when Ring Wrap Counter matches this value and a descriptor is made
 * available/used respectively"), §2.8.14 (`struct pvirtq_event_suppress`:
 * `desc` = offset in bits 0–14, wrap counter in bit 15; `flags` bits 0–1).
 *
 * Each decision pairs a store with a load against the driver's mirror-image
 * pair (store→load, "Dekker"): every access to the two structures here is an
 * `Atomics` access, sequentially consistent. Single-threaded: the queue's
 * thread.
 *
 * Decisions where the spec leaves room (docs/conformance.md "Packed ring"):
 * - An event descriptor is "made used" when the device's used position
 *   passes it: a used descriptor is written there, or it is one of the ring
 *   descriptors a longer list skips (as Linux and QEMU count it).
 * - Driver flags DESC without VIRTIO_F_EVENT_IDX, the reserved value 0x3, or
 *   DESC naming an offset outside the ring: notify (a notification too many
 *   is allowed; one too few can stall the driver). Never a violation.
 * - disableNotification writes RING_EVENT_FLAGS_DISABLE, also with EVENT_IDX
 *   (any value is legal in the Device Area; the split ring has no such flag
 *   with EVENT_IDX).
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
} from "../spec/packed-virtqueue.ts";
import { cyclePos, type WrapCounter } from "./packed-ring-state.ts";

/** The device's event suppression state for one packed ring. */
export class PackedDeviceSuppression {
  readonly #driver: GuestSlice;
  readonly #device: GuestSlice;
  readonly #size: number;
  readonly #eventIdx: boolean;
  /** Used position (in the cycle of 2·size, see `cyclePos`) as last published. */
  #published: number;
  /** Ring descriptors published since the queue started (free-running). */
  #publishedTotal = 0;
  /** Published position at the last needsNotification call, and descriptors published since. */
  #lastSignal: number;
  #sinceSignal = 0;
  /** The next needsNotification is true whatever was published ({@link force}). */
  #forced = false;
  /** `#publishedTotal` when a notification was last forced (-1: none); one per published state. */
  #forcedAt = -1;

  /** `usedCycle`: the used position the queue starts from, as `cyclePos`. */
  constructor(
    driverEvent: GuestSlice,
    deviceEvent: GuestSlice,
    size: number,
    eventIdx: boolean,
    usedCycle: number,
  ) {
    this.#driver = driverEvent;
    this.#device = deviceEvent;
    this.#size = size;
    this.#eventIdx = eventIdx;
    this.#published = usedCycle;
    this.#lastSignal = usedCycle;
  }

  /** Used descriptors covering `slots` ring descriptors were published; the used position is now `usedCycle`. */
  published(usedCycle: number, slots: number): void {
    this.#published = usedCycle;
    this.#publishedTotal += slots;
    this.#sinceSignal += slots;
  }

  /**
   * Should the device notify for what was published since the last call?
   * DISABLE: no; ENABLE: yes; DESC with EVENT_IDX: yes iff the event
   * descriptor (offset, wrap) is among the ring descriptors the used
   * position passed since the last call — all of them once 2·size or more
   * were passed. Nothing published since the last call: no (unless forced).
   */
  needsNotification(): boolean {
    const count = this.#sinceSignal;
    const old = this.#lastSignal;
    this.#sinceSignal = 0;
    this.#lastSignal = this.#published;
    if (this.#forced) {
      this.#forced = false;
      return true;
    }
    if (count === 0) return false;
    // Atomics.load (SeqCst): ordered after the used flags store (store→load Dekker pair with the driver's
    // event store → used flags load), so a driver that re-enabled after our store is seen.
    const flags = this.#driver.atomicLoadU16(PVIRTQ_EVENT_OFF_FLAGS) & RING_EVENT_FLAGS_MASK;
    if (flags === RING_EVENT_FLAGS_DISABLE) return false;
    if (flags !== RING_EVENT_FLAGS_DESC || !this.#eventIdx) return true;
    const event = this.#eventCycle();
    const cycle = 2 * this.#size;
    if (event < 0 || count >= cycle) return true;
    return (event - old + cycle) % cycle < count;
  }

  /**
   * EVENT_IDX: true if the driver's flags are DESC and the event descriptor
   * is not the published used position — it asked to hear of a descriptor
   * already used. A driver that consumed everything re-arms at the used
   * position, so on an idle queue this means a notification was lost (see
   * `DeviceSuppression.owed`, the split ring's twin). False once a
   * notification was forced for this published state.
   */
  owed(): boolean {
    if (!this.#eventIdx || this.#forcedAt === this.#publishedTotal) return false;
    // Atomics.load (SeqCst): the driver's latest flags, after our used flags store.
    const flags = this.#driver.atomicLoadU16(PVIRTQ_EVENT_OFF_FLAGS) & RING_EVENT_FLAGS_MASK;
    if (flags !== RING_EVENT_FLAGS_DESC) return false;
    return this.#eventCycle() !== this.#published;
  }

  /** Makes the next {@link needsNotification} true (the device may always notify more often). */
  force(): void {
    this.#forced = true;
    this.#forcedAt = this.#publishedTotal;
  }

  /**
   * Asks for available buffer notifications from descriptor (`availPos`,
   * `availWrap`) on (the caller re-checks the ring after): EVENT_IDX writes
   * that descriptor as the event, then flags DESC; otherwise flags ENABLE.
   */
  enable(availPos: number, availWrap: WrapCounter): void {
    if (this.#eventIdx) {
      const desc = availPos | (availWrap << RING_EVENT_WRAP_SHIFT);
      // Atomics.store (SeqCst): the event descriptor is visible before the DESC flags that make it meaningful.
      this.#device.atomicStoreU16(PVIRTQ_EVENT_OFF_DESC, desc);
      // Atomics.store (SeqCst): publishes the flags before the caller's re-load of the next descriptor's flags
      // (store→load Dekker pair with the driver's descriptor flags store → device event load).
      this.#device.atomicStoreU16(PVIRTQ_EVENT_OFF_FLAGS, RING_EVENT_FLAGS_DESC);
    } else {
      // Atomics.store (SeqCst): ENABLE before the caller's re-load of the next descriptor's flags (same Dekker pair).
      this.#device.atomicStoreU16(PVIRTQ_EVENT_OFF_FLAGS, RING_EVENT_FLAGS_ENABLE);
    }
  }

  /** Tells the driver available buffer notifications are not needed (a hint: it may notify anyway). */
  disable(): void {
    // Atomics.store (SeqCst): a hint; no ordering needed beyond the field being written whole.
    this.#device.atomicStoreU16(PVIRTQ_EVENT_OFF_FLAGS, RING_EVENT_FLAGS_DISABLE);
  }

  /** The driver's event descriptor as `cyclePos`, or -1 if its offset is not a ring position. */
  #eventCycle(): number {
    // Atomics.load (SeqCst): read after the flags (the driver writes the offset first, then the flags).
    const desc = this.#driver.atomicLoadU16(PVIRTQ_EVENT_OFF_DESC);
    const off = desc & RING_EVENT_OFF_MASK;
    if (off >= this.#size) return -1;
    return cyclePos(off, (desc >>> RING_EVENT_WRAP_SHIFT) as WrapCounter, this.#size);
  }
}

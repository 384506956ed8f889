/**
 * What every driver-side virtqueue offers the code that drives it, whatever
 * its layout: the split ring (VIRTIO 1.2 §2.7, {@link DriverQueue}) and the
 * packed ring (§2.8, {@link PackedDriverQueue}). Supplying buffers
 * (§2.7.13 / §2.8.21), receiving used buffers (§2.7.14 / §2.8.22),
 * notification suppression (§2.7.7 / §2.7.10 / §2.8.10), and the
 * notification data a transport may carry (§2.9 Driver Notifications,
 * §2.8.16; VIRTIO_F_NOTIFICATION_DATA).
 *
 * Drivers and transports see only this; `openDriverRing`
 * (./open-driver-ring.ts) builds the one the negotiated features select.
 * The members keep the meaning the two queues document; where the layouts
 * differ, the difference is stated here.
 *
 * Every implementation provides, for a transport that carries notification
 * data: §2.8.16 "When notifying the device, driver MUST set next_off and
 * next_wrap to match the next descriptor not yet made available to the
 * device." — {@link DriverRing.notificationData} is exactly that value (for
 * a split ring, §2.9: the available index).
 *
 * @module
 */
import type { VirtioError } from "../errors.ts";
import type { Segment, UsedBuffer } from "./driver-segments.ts";
import type { RingLayoutKind } from "./ring-layout.ts";

export type { Segment, UsedBuffer } from "./driver-segments.ts";
export type { RingLayoutKind } from "./ring-layout.ts";

/** The driver end of one virtqueue (tokens of type `T` travel with the requests). */
export interface DriverRing<T> {
  /** Which layout the ring has. */
  readonly layout: RingLayoutKind;
  /** Queue size: descriptors (and, packed, Buffer IDs). */
  readonly size: number;
  /** Free descriptors: table entries (split) or ring slots (packed). */
  readonly numFree: number;
  /** Requests added and not yet returned by {@link getUsed} / {@link nextUsed} (staged ones included). */
  readonly numOutstanding: number;
  /** The device's protocol violation that broke the ring (sticky until {@link detachAll}), or null. */
  readonly broken: VirtioError | null;
  /** VIRTIO_F_INDIRECT_DESC is in use: a request that fits one indirect table takes one descriptor. */
  readonly indirect: boolean;
  /**
   * Where the next request goes, as a notification carries it with
   * VIRTIO_F_NOTIFICATION_DATA: bits 0–14 next_off, bit 15 next_wrap
   * (packed: slot and Driver Ring Wrap Counter; split: the 16-bit avail.idx).
   * Only what was published counts.
   */
  readonly notificationData: number;
  /** {@link stage} then {@link publish}; false if the descriptors do not fit (nothing changed). */
  add(readable: readonly Segment[], writable: readonly Segment[], token: T): boolean;
  /**
   * Writes a request (`readable` then `writable` buffers) without making it
   * available; false if the descriptors do not fit. Throws the ring's error
   * when broken, RangeError / TypeError for misuse.
   */
  stage(readable: readonly Segment[], writable: readonly Segment[], token: T): boolean;
  /** Makes every staged request available to the device (one atomic store). */
  publish(): void;
  /** Publishes, then says whether the device wants an available buffer notification (Linux kick_prepare). */
  kickNeeded(): boolean;
  /** True if a used buffer waits to be taken (false when broken). */
  hasUsed(): boolean;
  /** The next used buffer, or null (none pending, or broken). */
  getUsed(): UsedBuffer<T> | null;
  /** {@link getUsed} without allocating: on true, {@link usedToken} / {@link usedLen} hold it. */
  nextUsed(): boolean;
  readonly usedToken: T;
  readonly usedLen: number;
  /** Asks the device not to send used buffer notifications (a hint). */
  disableCallbacks(): void;
  /** Asks for used buffer notifications again; false if buffers were used meanwhile (drain again). */
  enableCallbacks(): boolean;
  /**
   * Like {@link enableCallbacks}, but with EVENT_IDX asks for a notification
   * only after about 3/4 of what is in flight (split: requests outstanding;
   * packed: ring slots in use). False if it should drain again (split: more
   * than that many already used; packed: any used buffer pending).
   */
  enableCallbacksDelayed(): boolean;
  /**
   * Forgets every outstanding request, returns their tokens, and returns the
   * ring to its just-built state. Only once the device no longer uses it.
   */
  detachAll(): T[];
}

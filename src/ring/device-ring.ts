/**
 * What every device-side virtqueue offers the code that runs a queue,
 * whatever its layout: the split ring (VIRTIO 1.2 §2.7, `DeviceQueue`)
 * and the packed ring (§2.8, `PackedDeviceQueue`). Devices, the
 * dataplane runtime and the transports see only this; `openRing`
 * (open-ring.ts) picks the layout from the negotiated VIRTIO_F_RING_PACKED.
 *
 * @module
 */
import type { VirtioError } from "../errors.ts";
import type { DescriptorChain } from "./chain.ts";
import type { InflightRecovery } from "./inflight-recovery.ts";

/** The device side of one virtqueue (see DeviceQueue for the loop a device follows). */
export interface DeviceRing {
  /** Queue size. */
  readonly size: number;
  /** Guest-physical address of the descriptor table (split) or Descriptor Ring (packed). */
  readonly descAddr: number;
  /** Guest-physical address of the available ring (split) or Driver Area (packed). */
  readonly availAddr: number;
  /** Guest-physical address of the used ring (split) or Device Area (packed). */
  readonly usedAddr: number;
  /** Chains popped and not yet returned with {@link addUsed}. */
  readonly inFlight: number;
  /** The violation that broke the queue, or null. */
  readonly broken: VirtioError | null;
  /**
   * Where the ring stands, as the vhost protocols carry it (vhost-user
   * GET_VRING_BASE `num`): the next available index for a split ring; for a
   * packed ring the next avail and used positions with their wrap counters
   * (packed-ring-state.ts).
   */
  readonly vringBase: number;
  /**
   * What an inflight log said an earlier device left in flight, and where
   * the ring resumed (a packed ring's positions in `ring`), or null.
   */
  readonly recovery: InflightRecovery | null;
  /** Makes the queue broken (sticky); calls `onBroken` the first time only. */
  markBroken(err: VirtioError): void;
  /** True if the driver made chains available that were not popped yet. */
  hasAvailable(): boolean;
  /** The next available chain, validated; null when none or broken. */
  popAvail(): DescriptorChain | null;
  /** Returns chain `head` (the buffer ID of a packed ring) with `len` bytes written. */
  addUsed(head: number, len: number): void;
  /** Makes every used element added so far visible to the driver at once. */
  publishUsed(): void;
  /** Should a used buffer notification be sent for what was published? */
  needsNotification(): boolean;
  /** EVENT_IDX: does the driver still wait to hear of work already published? */
  notificationOwed(): boolean;
  /** Makes the next {@link needsNotification} true. */
  forceNotification(): void;
  /** Asks for available buffer notifications again; true iff work slipped in meanwhile. */
  enableNotification(): boolean;
  /** Tells the driver that available buffer notifications are not needed (a hint). */
  disableNotification(): void;
}

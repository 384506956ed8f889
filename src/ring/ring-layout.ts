/**
 * Which layout a virtqueue has and where its three parts go in guest memory,
 * whatever the layout: the split ring (VIRTIO 1.2 §2.7: descriptor table,
 * available ring, used ring) or the packed ring (§2.8: Descriptor Ring,
 * Driver Area, Device Area); §6 (VIRTIO_F_RING_PACKED selects the packed
 * layout). The addresses take the names the transports give them
 * (virtio-pci's queue_desc / queue_driver / queue_device, vhost-user's
 * desc / avail / used): `availAddr` is the available ring or the Driver
 * Area, `usedAddr` the used ring or the Device Area.
 *
 * §2.7.1 / §2.8.11 (driver requirements: virtqueues): "The driver MUST
 * ensure that the physical address of the first byte of each virtqueue part
 * is a multiple of the specified alignment value in the above table." —
 * {@link placeRing} aligns every part (split: 16, 2, 4; packed: 16, 4, 4)
 * through `vringLayout` and `packedRingLayout`.
 *
 * @module
 */
import { VIRTQ_USED_ALIGN } from "../spec/virtqueue.ts";
import { vringLayout } from "./layout.ts";
import { isPackedRing } from "./open-ring.ts";
import { packedRingLayout } from "./packed-layout.ts";

/** The two virtqueue layouts: split (§2.7) and packed (§2.8, VIRTIO_F_RING_PACKED). */
export type RingLayoutKind = "split" | "packed";

/** The layout negotiated `features` select (packed iff VIRTIO_F_RING_PACKED). */
export function ringLayoutOf(features: bigint): RingLayoutKind {
  return isPackedRing(features) ? "packed" : "split";
}

/** Guest-physical addresses of a ring's three parts, as the transports carry them. */
export interface RingAddresses {
  readonly size: number;
  /** Descriptor table (split) or Descriptor Ring (packed). */
  readonly descAddr: number;
  /** Available ring (split) or Driver Area: the Driver Event Suppression structure (packed). */
  readonly availAddr: number;
  /** Used ring (split) or Device Area: the Device Event Suppression structure (packed). */
  readonly usedAddr: number;
}

/** A placed ring: its layout, its parts and the bytes it spans from `descAddr`. */
export interface RingLayout extends RingAddresses {
  readonly layout: RingLayoutKind;
  readonly totalBytes: number;
}

/**
 * Places a ring of `size` entries at `base` (16-aligned), parts one after
 * another: split rings as {@link vringLayout} (the used ring aligned to
 * `usedAlign`, 4 by default), packed rings as {@link packedRingLayout}
 * (`usedAlign` does not apply).
 *
 * @throws {RangeError} for a size the layout does not allow (split: a power
 *   of two in 1..32768; packed: any integer in 1..32768), a bad base or
 *   alignment.
 */
export function placeRing(
  layout: RingLayoutKind,
  size: number,
  base: number,
  usedAlign = VIRTQ_USED_ALIGN,
): RingLayout {
  if (layout === "split") return { layout, ...vringLayout(size, base, usedAlign) };
  const p = packedRingLayout(size, base);
  return {
    layout,
    size: p.size,
    descAddr: p.descAddr,
    availAddr: p.driverAddr,
    usedAddr: p.deviceAddr,
    totalBytes: p.totalBytes,
  };
}

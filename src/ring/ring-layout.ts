/**
 * Which layout a virtqueue has, the sizes, part lengths and alignments that
 * layout allows, and where its three parts go in guest memory, whatever the
 * layout: the split ring (VIRTIO 1.2 §2.7: descriptor table,
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
import {
  PVIRTQ_DESC_ALIGN,
  PVIRTQ_EVENT_ALIGN,
  PVIRTQ_EVENT_SIZE,
  isValidPackedQueueSize,
  packedDescRingSize,
} from "../spec/packed-virtqueue.ts";
import { VIRTIO_F_RING_PACKED, hasFeature } from "../spec/virtio.ts";
import {
  VIRTQ_AVAIL_ALIGN,
  VIRTQ_DESC_ALIGN,
  VIRTQ_USED_ALIGN,
  availRingSize,
  descTableSize,
  isValidQueueSize,
  usedRingSize,
} from "../spec/virtqueue.ts";
import { vringLayout } from "./layout.ts";
import { packedRingLayout } from "./packed-layout.ts";

/** The two virtqueue layouts: split (§2.7) and packed (§2.8, VIRTIO_F_RING_PACKED). */
export type RingLayoutKind = "split" | "packed";

/** True if `features` select the packed layout (VIRTIO_F_RING_PACKED). */
export function isPackedRing(features: bigint): boolean {
  return hasFeature(features, VIRTIO_F_RING_PACKED);
}

/**
 * Why `size` cannot be the size of a ring of the layout `features` select,
 * or null if it can (split: a power of two in 1..32768, §2.7; packed: any
 * integer in 1..32768, §2.8.10.1).
 */
export function ringSizeProblem(size: number, features: bigint): string | null {
  if (isPackedRing(features))
    return isValidPackedQueueSize(size) ? null : `packed queue size ${size} is not in 1..32768`;
  return isValidQueueSize(size) ? null : `queue size ${size} is not a power of two in 1..32768`;
}

/**
 * Bytes of each part of a ring of `size` entries (a valid size for the
 * layout; see {@link ringSizeProblem}): descriptor table / Descriptor Ring,
 * available ring / Driver Area, used ring / Device Area.
 */
export function ringPartBytes(
  size: number,
  features: bigint,
): { readonly desc: number; readonly avail: number; readonly used: number } {
  if (isPackedRing(features))
    return { desc: packedDescRingSize(size), avail: PVIRTQ_EVENT_SIZE, used: PVIRTQ_EVENT_SIZE };
  return { desc: descTableSize(size), avail: availRingSize(size), used: usedRingSize(size) };
}

/** The alignment of each part (split: 16, 2, 4, §2.7; packed: 16, 4, 4, §2.8.10.1). */
export function ringPartAlign(features: bigint): {
  readonly desc: number;
  readonly avail: number;
  readonly used: number;
} {
  if (isPackedRing(features))
    return { desc: PVIRTQ_DESC_ALIGN, avail: PVIRTQ_EVENT_ALIGN, used: PVIRTQ_EVENT_ALIGN };
  return { desc: VIRTQ_DESC_ALIGN, avail: VIRTQ_AVAIL_ALIGN, used: VIRTQ_USED_ALIGN };
}

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

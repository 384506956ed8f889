/**
 * Where the three parts of a packed virtqueue go in guest memory. VIRTIO 1.2
 * §2.8 (the Descriptor Ring occupies the Descriptor Area, the Driver Event
 * Suppression structure the Driver Area, the Device Event Suppression
 * structure the Device Area), §2.8.10.1 (sizes and alignment: Descriptor
 * Ring 16, each Event Suppression structure 4).
 *
 * @module
 */
import {
  PVIRTQ_DESC_ALIGN,
  PVIRTQ_EVENT_SIZE,
  isValidPackedQueueSize,
  packedDescRingSize,
} from "../spec/packed-virtqueue.ts";

/** Guest-physical addresses of a packed queue's parts. */
export interface PackedRingAddresses {
  readonly size: number;
  /** Descriptor Area: the Descriptor Ring (`size` × struct pvirtq_desc). */
  readonly descAddr: number;
  /** Driver Area: the Driver Event Suppression structure (written by the driver). */
  readonly driverAddr: number;
  /** Device Area: the Device Event Suppression structure (written by the device). */
  readonly deviceAddr: number;
}

/** A placed packed ring plus the total bytes it spans from `descAddr`. */
export interface PackedRingLayout extends PackedRingAddresses {
  readonly totalBytes: number;
}

/**
 * Places a packed ring of `size` entries (any integer in 1..32768) at `base`
 * (16-aligned): the Descriptor Ring, then the Driver Area, then the Device
 * Area, each right after the previous one (the ring is a multiple of 16
 * bytes, so both structures stay 4-aligned).
 *
 * @throws {RangeError} for a bad size or base.
 */
export function packedRingLayout(size: number, base: number): PackedRingLayout {
  if (!isValidPackedQueueSize(size))
    throw new RangeError(`packed queue size ${size} is not an integer in 1..32768`);
  if (!Number.isSafeInteger(base) || base < 0 || base % PVIRTQ_DESC_ALIGN !== 0)
    throw new RangeError(`ring base ${base} is not ${PVIRTQ_DESC_ALIGN}-aligned`);
  const descAddr = base;
  const driverAddr = descAddr + packedDescRingSize(size);
  const deviceAddr = driverAddr + PVIRTQ_EVENT_SIZE;
  const totalBytes = deviceAddr + PVIRTQ_EVENT_SIZE - base;
  return { size, descAddr, driverAddr, deviceAddr, totalBytes };
}

/**
 * Where the three parts of a split virtqueue go in guest memory.
 * VIRTIO 1.2 §2.7 ("Alignment requirements": descriptor table 16, available
 * ring 2, used ring 4).
 *
 * @module
 */
import {
  VIRTQ_AVAIL_ALIGN,
  VIRTQ_DESC_ALIGN,
  VIRTQ_USED_ALIGN,
  availRingSize,
  descTableSize,
  isValidQueueSize,
  usedRingSize,
} from "../spec/virtqueue.ts";

/** Guest-physical addresses of a queue's parts. */
export interface VringAddresses {
  readonly size: number;
  readonly descAddr: number;
  readonly availAddr: number;
  readonly usedAddr: number;
}

/** A placed ring plus the total bytes it spans from `descAddr`. */
export interface VringLayout extends VringAddresses {
  readonly totalBytes: number;
}

const alignUp = (v: number, a: number): number => Math.ceil(v / a) * a;

/**
 * Places a ring of `size` entries at `base` (16-aligned): descriptor table,
 * then the available ring, then the used ring aligned to `usedAlign` (4 is the
 * spec minimum; 4096 gives the legacy layout, 64 what Linux uses).
 *
 * @throws {RangeError} for a bad size, base or alignment.
 */
export function vringLayout(size: number, base: number, usedAlign = VIRTQ_USED_ALIGN): VringLayout {
  if (!isValidQueueSize(size))
    throw new RangeError(`queue size ${size} is not a power of two in 1..32768`);
  if (!Number.isSafeInteger(base) || base < 0 || base % VIRTQ_DESC_ALIGN !== 0)
    throw new RangeError(`ring base ${base} is not 16-aligned`);
  if (
    !Number.isInteger(usedAlign) ||
    usedAlign < VIRTQ_USED_ALIGN ||
    (usedAlign & (usedAlign - 1)) !== 0
  ) {
    throw new RangeError(`used ring alignment ${usedAlign} is not a power of two >= 4`);
  }
  const descAddr = base;
  const availAddr = alignUp(descAddr + descTableSize(size), VIRTQ_AVAIL_ALIGN);
  const usedAddr = alignUp(availAddr + availRingSize(size), usedAlign);
  const totalBytes = usedAddr + usedRingSize(size) - base;
  return { size, descAddr, availAddr, usedAddr, totalBytes };
}

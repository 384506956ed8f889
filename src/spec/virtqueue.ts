/**
 * Split virtqueue layout. VIRTIO 1.2 §2.7 (Split Virtqueues):
 * descriptor table §2.7.5, available ring §2.7.6, used ring §2.7.8,
 * notification suppression §2.7.7 / §2.7.10; the legacy interfaces'
 * one-block layout §2.7.2.
 *
 * Byte layout (all little-endian):
 *
 *     struct virtq_desc  { le64 addr; le32 len; le16 flags; le16 next; }          16 bytes, align 16
 *     struct virtq_avail { le16 flags; le16 idx; le16 ring[n]; le16 used_event; }  6 + 2n, align 2
 *     struct virtq_used  { le16 flags; le16 idx; struct { le32 id; le32 len; } ring[n]; le16 avail_event; }
 *                                                                                  6 + 8n, align 4
 * @module
 */

/** §2.7.5: this marks a buffer as continuing via the next field. */
export const VIRTQ_DESC_F_NEXT = 1;
/** §2.7.5: this marks a buffer as device write-only (otherwise device read-only). */
export const VIRTQ_DESC_F_WRITE = 2;
/** §2.7.5.3: this means the buffer contains a list of buffer descriptors. */
export const VIRTQ_DESC_F_INDIRECT = 4;

/** §2.7.6: avail.flags bit: the driver does not want used-buffer notifications. */
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
/** §2.7.8: used.flags bit: the device does not want available-buffer notifications. */
export const VIRTQ_USED_F_NO_NOTIFY = 1;

/** §2.7: "Queue Size ... The maximum Queue Size value is 32768." */
export const VIRTQ_MAX_SIZE = 32768;

export const VIRTQ_DESC_SIZE = 16;
export const VIRTQ_DESC_OFF_ADDR = 0;
export const VIRTQ_DESC_OFF_LEN = 8;
export const VIRTQ_DESC_OFF_FLAGS = 12;
export const VIRTQ_DESC_OFF_NEXT = 14;

export const VIRTQ_AVAIL_OFF_FLAGS = 0;
export const VIRTQ_AVAIL_OFF_IDX = 2;
export const VIRTQ_AVAIL_OFF_RING = 4;

export const VIRTQ_USED_OFF_FLAGS = 0;
export const VIRTQ_USED_OFF_IDX = 2;
export const VIRTQ_USED_OFF_RING = 4;
export const VIRTQ_USED_ELEM_SIZE = 8;

/** §2.7 alignment table. */
export const VIRTQ_DESC_ALIGN = 16;
export const VIRTQ_AVAIL_ALIGN = 2;
export const VIRTQ_USED_ALIGN = 4;

/** Bytes of the descriptor table for queue size `n`. */
export function descTableSize(n: number): number {
  return VIRTQ_DESC_SIZE * n;
}
/** Bytes of the available ring for queue size `n` (including used_event). */
export function availRingSize(n: number): number {
  return 6 + 2 * n;
}
/** Bytes of the used ring for queue size `n` (including avail_event). */
export function usedRingSize(n: number): number {
  return 6 + VIRTQ_USED_ELEM_SIZE * n;
}
/** Offset of `used_event` inside the available ring (it is `avail->ring[n]`). */
export function usedEventOffset(n: number): number {
  return VIRTQ_AVAIL_OFF_RING + 2 * n;
}
/** Offset of `avail_event` inside the used ring (it is `used->ring[n]`). */
export function availEventOffset(n: number): number {
  return VIRTQ_USED_OFF_RING + VIRTQ_USED_ELEM_SIZE * n;
}

/** True if `n` is a valid split queue size: a power of two in 1..32768. */
export function isValidQueueSize(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && n <= VIRTQ_MAX_SIZE && (n & (n - 1)) === 0;
}

/**
 * §2.7.7.2 / Linux include/uapi/linux/virtio_ring.h: true if the event index
 * `event` is one of the ring positions [old, new) just filled, i.e. the index
 * moved from `event` to `event + 1` in this step, all arithmetic modulo 2^16:
 * `(u16)(new - event - 1) < (u16)(new - old)`.
 */
export function vringNeedEvent(event: number, newIdx: number, old: number): boolean {
  return ((newIdx - event - 1) & 0xffff) < ((newIdx - old) & 0xffff);
}

/** Guest-physical addresses of a split ring's three parts. */
export interface SplitRingParts {
  readonly descAddr: number;
  readonly availAddr: number;
  readonly usedAddr: number;
}

/**
 * §2.7.2 (Legacy Interfaces: A Note on Virtqueue Layout): a legacy ring is
 * one block at `base`: the descriptor table, the available ring right after
 * it, then the used ring at the next multiple of `align` (Queue Align, a
 * power of two). Plain arithmetic: the caller checks the result against
 * guest memory.
 */
export function legacyRingParts(base: number, size: number, align: number): SplitRingParts {
  const availAddr = base + descTableSize(size);
  const availEnd = availAddr + availRingSize(size);
  const usedAddr = Math.ceil(availEnd / align) * align;
  return { descAddr: base, availAddr, usedAddr };
}

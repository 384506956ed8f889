/**
 * Packed virtqueue layout. VIRTIO 1.2 §2.8 (Packed Virtqueues): wrap counters
 * §2.8.1, polling of available and used descriptors §2.8.2, indirect
 * descriptors §2.8.7, event suppression §2.8.10 (sizes and alignment
 * §2.8.10.1), descriptor format §2.8.13 (struct pvirtq_desc), event
 * suppression structure format §2.8.14 (struct pvirtq_event_suppress).
 *
 * Byte layout (all little-endian):
 *
 *     struct pvirtq_desc { le64 addr; le32 len; le16 id; le16 flags; }   16 bytes, align 16
 *     struct pvirtq_event_suppress { le16 desc; le16 flags; }            4 bytes, align 4
 *
 * The descriptor ring is the Descriptor Area; the driver event suppression
 * structure (written by the driver) is the Driver Area; the device event
 * suppression structure (written by the device) is the Device Area (§2.8.10).
 *
 * The descriptor flag bits NEXT, WRITE and INDIRECT have the same values as
 * in the split ring (`VIRTQ_DESC_F_*` in virtqueue.ts).
 *
 * @module
 */

/** §2.8.1: "VIRTQ_DESC_F_AVAIL ... bit 7" of the descriptor flags. */
export const VIRTQ_DESC_F_AVAIL = 1 << 7;
/** §2.8.1: "VIRTQ_DESC_F_USED ... bit 15" of the descriptor flags. */
export const VIRTQ_DESC_F_USED = 1 << 15;

export const PVIRTQ_DESC_SIZE = 16;
export const PVIRTQ_DESC_OFF_ADDR = 0;
export const PVIRTQ_DESC_OFF_LEN = 8;
export const PVIRTQ_DESC_OFF_ID = 12;
export const PVIRTQ_DESC_OFF_FLAGS = 14;

/** §2.8.14: offset of `desc` (event offset in bits 0–14, wrap counter in bit 15). */
export const PVIRTQ_EVENT_OFF_DESC = 0;
/** §2.8.14: offset of `flags` (bits 0–1: RING_EVENT_FLAGS_*). */
export const PVIRTQ_EVENT_OFF_FLAGS = 2;
export const PVIRTQ_EVENT_SIZE = 4;

/** §2.8.10: enable events. */
export const RING_EVENT_FLAGS_ENABLE = 0x0;
/** §2.8.10: disable events. */
export const RING_EVENT_FLAGS_DISABLE = 0x1;
/** §2.8.10: enable events for a specific descriptor (`desc`); only with VIRTIO_F_RING_EVENT_IDX. */
export const RING_EVENT_FLAGS_DESC = 0x2;
/** §2.8.10: the two flag bits; value 0x3 is reserved. */
export const RING_EVENT_FLAGS_MASK = 0x3;

/** §2.8.14: bit 15 of `desc` is the wrap counter the event offset refers to. */
export const RING_EVENT_WRAP_SHIFT = 15;
export const RING_EVENT_OFF_MASK = 0x7fff;

/** §2.8.10.1 (alignment table): Descriptor Ring 16, Device and Driver Event Suppression 4. */
export const PVIRTQ_DESC_ALIGN = 16;
export const PVIRTQ_EVENT_ALIGN = 4;

/**
 * §2.8.10.1: "The Queue Size value does not have to be a power of 2"; §2.6
 * bounds every queue at 32768.
 */
export const PVIRTQ_MAX_SIZE = 32768;

/** Bytes of the packed descriptor ring for queue size `n`. */
export function packedDescRingSize(n: number): number {
  return PVIRTQ_DESC_SIZE * n;
}

/** True if `n` is a valid packed queue size: an integer in 1..32768. */
export function isValidPackedQueueSize(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && n <= PVIRTQ_MAX_SIZE;
}

/**
 * §2.8.1/§2.8.2: is the descriptor with `flags` available to the device
 * whose avail wrap counter is `wrap` (0 or 1)? Available means AVAIL equals
 * the wrap counter and USED does not.
 */
export function isPackedDescAvail(flags: number, wrap: number): boolean {
  const avail = (flags & VIRTQ_DESC_F_AVAIL) !== 0 ? 1 : 0;
  const used = (flags & VIRTQ_DESC_F_USED) !== 0 ? 1 : 0;
  return avail === wrap && used !== wrap;
}

/**
 * §2.8.2: is the descriptor with `flags` used, as seen by the driver whose
 * used wrap counter is `wrap`? Used means AVAIL and USED both equal the wrap
 * counter.
 */
export function isPackedDescUsed(flags: number, wrap: number): boolean {
  const avail = (flags & VIRTQ_DESC_F_AVAIL) !== 0 ? 1 : 0;
  const used = (flags & VIRTQ_DESC_F_USED) !== 0 ? 1 : 0;
  return avail === wrap && used === wrap;
}

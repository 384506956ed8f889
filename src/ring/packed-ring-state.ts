/**
 * The state a packed virtqueue's device side needs to resume, and its
 * vhost-user encoding. VIRTIO 1.2 §2.8.1 (the Driver and Device Ring Wrap
 * Counters, each "initialized to 1"); qemu/qemu docs/interop/vhost-user.rst
 * "Vring descriptor indices for packed virtqueues" (the `num` of
 * SET_VRING_BASE / GET_VRING_BASE for a packed ring).
 *
 * Unlike the split ring, nothing in guest memory says where the device's
 * used descriptors resume, so both positions travel with their wrap
 * counters. vhost-user packs them into one u32:
 *
 *     bits 0–14   next avail position ("Index of the next Available Ring descriptor that the back-end will process")
 *     bit  15     Driver (Available) Ring Wrap Counter
 *     bits 16–30  next used position ("Index of the entry in the Used Ring where the back-end will place the next descriptor")
 *     bit  31     Device (Used) Ring Wrap Counter
 *
 * The positions are ring positions in 0..size-1 (QEMU's
 * `virtio_queue_packed_get_last_avail_idx` / `_set_last_avail_idx` keep and
 * send them wrapped at the queue size; 15 bits hold any position of a ring of
 * at most 32768).
 *
 * @module
 */

/** A wrap counter: §2.8.1 "a single-bit ring wrap counter". */
export type WrapCounter = 0 | 1;

/** Where a packed ring's device side stands. */
export interface PackedRingState {
  /** Ring position of the next descriptor the device reads (0..size-1). */
  readonly availPos: number;
  /** The device's copy of the Driver Ring Wrap Counter for `availPos`. */
  readonly availWrap: WrapCounter;
  /** Ring position where the device writes its next used descriptor (0..size-1). */
  readonly usedPos: number;
  /** The Device Ring Wrap Counter for `usedPos`. */
  readonly usedWrap: WrapCounter;
}

/** A fresh ring: both positions 0, both wrap counters 1 (§2.8.1 "initialized to 1"). */
export const PACKED_RING_START: PackedRingState = Object.freeze({
  availPos: 0,
  availWrap: 1,
  usedPos: 0,
  usedWrap: 1,
});

const POS_MASK = 0x7fff;

/**
 * The vhost-user GET_VRING_BASE `num` for a packed ring.
 *
 * @throws {RangeError} if a position is not in 0..32767 or a wrap counter is not 0 or 1.
 */
export function encodePackedVringBase(s: PackedRingState): number {
  for (const [name, v] of [
    ["availPos", s.availPos],
    ["usedPos", s.usedPos],
  ] as const) {
    if (!Number.isInteger(v) || v < 0 || v > POS_MASK)
      throw new RangeError(`${name} ${v} does not fit 15 bits`);
  }
  if ((s.availWrap !== 0 && s.availWrap !== 1) || (s.usedWrap !== 0 && s.usedWrap !== 1))
    throw new RangeError("a wrap counter is 0 or 1");
  return (s.availPos | (s.availWrap << 15) | (s.usedPos << 16) | (s.usedWrap << 31)) >>> 0;
}

/**
 * The packed ring state in a vhost-user SET_VRING_BASE `num`. Every u32 decodes;
 * whether the positions fit the ring is checked when the queue starts.
 *
 * @throws {RangeError} if `num` is not a u32.
 */
export function decodePackedVringBase(num: number): PackedRingState {
  if (!Number.isInteger(num) || num < 0 || num > 0xffff_ffff)
    throw new RangeError(`vring base ${num} is not a u32`);
  return {
    availPos: num & POS_MASK,
    availWrap: ((num >>> 15) & 1) as WrapCounter,
    usedPos: (num >>> 16) & POS_MASK,
    usedWrap: ((num >>> 31) & 1) as WrapCounter,
  };
}

/**
 * Position in the ring's cycle of 2·size descriptors (each position once
 * with each wrap counter): 0 for (0, wrap 1), `size` for (0, wrap 0).
 */
export function cyclePos(pos: number, wrap: WrapCounter, size: number): number {
  return wrap === 1 ? pos : pos + size;
}

/**
 * Descriptors between the used position and the avail position (those the
 * device read and has not yet covered with used descriptors): 0..size for a
 * consistent state, more than `size` when the used position is ahead of the
 * avail position or more than one ring behind it.
 */
export function outstandingSlots(s: PackedRingState, size: number): number {
  const a = cyclePos(s.availPos, s.availWrap, size);
  const u = cyclePos(s.usedPos, s.usedWrap, size);
  return (a - u + 2 * size) % (2 * size);
}

/**
 * Why `s` cannot be the state of a ring of `size` descriptors, or null:
 * positions must be ring positions, wrap counters bits, and the used
 * position at most one ring behind the avail position.
 */
export function checkPackedRingState(s: PackedRingState, size: number): string | null {
  for (const [name, v] of [
    ["avail position", s.availPos],
    ["used position", s.usedPos],
  ] as const) {
    if (!Number.isInteger(v) || v < 0 || v >= size)
      return `${name} ${v} is not a position of a ring of ${size}`;
  }
  if ((s.availWrap !== 0 && s.availWrap !== 1) || (s.usedWrap !== 0 && s.usedWrap !== 1))
    return `wrap counters ${String(s.availWrap)}/${String(s.usedWrap)} are not bits`;
  const out = outstandingSlots(s, size);
  if (out > size)
    return `used position ${s.usedPos} (wrap ${s.usedWrap}) is not within one ring behind avail position ${s.availPos} (wrap ${s.availWrap})`;
  return null;
}

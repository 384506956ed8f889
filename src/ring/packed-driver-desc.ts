/**
 * Writing a request into a packed ring: a direct list in consecutive ring
 * slots, or one indirect table (struct pvirtq_desc entries) in the request's
 * arena slot and the ring descriptor pointing to it. VIRTIO 1.2 §2.8.1
 * (AVAIL/USED bits against the Driver Ring Wrap Counter), §2.8.6 (Next
 * Flag), §2.8.7 (Indirect Flag), §2.8.13 (struct pvirtq_desc), §2.8.17 /
 * §2.8.19 (driver requirements: scatter-gather, indirect descriptors),
 * §2.8.21.1 (placing available buffers into the Descriptor Ring).
 *
 * Enforced here:
 * - §2.8.17 "The driver MUST place any device-writable descriptor elements
 *   after any device-readable descriptor elements."
 * - §2.8.17 "A driver MUST NOT make the first descriptor in the list
 *   available before all subsequent descriptors comprising the list are made
 *   available." — every descriptor is written completely except the first
 *   one's flags, which are returned for the queue to store last.
 * - §2.8.19 "The driver MUST NOT set any flags except DESC_F_WRITE within an
 *   indirect descriptor." and "A driver MUST NOT write direct descriptors
 *   with VIRTQ_DESC_F_INDIRECT set in a scatter-gather list linked by
 *   VIRTQ_DESC_F_NEXT." — an indirect request is one ring descriptor.
 *
 * Plain writes: the device sees none of it before the queue stores the
 * batch's first flags. The segments were checked before
 * (./driver-segments.ts) and the slots are free (the queue counted them).
 *
 * @module
 */
import type { GuestSlice } from "../memory/guest-memory.ts";
import {
  PVIRTQ_DESC_OFF_ADDR,
  PVIRTQ_DESC_OFF_FLAGS,
  PVIRTQ_DESC_OFF_ID,
  PVIRTQ_DESC_OFF_LEN,
  PVIRTQ_DESC_SIZE,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_USED,
} from "../spec/packed-virtqueue.ts";
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from "../spec/virtqueue.ts";
import type { IndirectTables } from "./driver-indirect.ts";
import type { Segment } from "./driver-segments.ts";

/**
 * §2.8.1: "the driver sets the VIRTQ_DESC_F_AVAIL bit in Flags to match the
 * internal Driver Ring Wrap Counter. It also sets the VIRTQ_DESC_F_USED bit
 * to match the inverse value".
 */
export function availBits(wrap: number): number {
  return wrap !== 0 ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED;
}

/** Byte offset of the flags of ring slot `pos`. */
export function flagsOffset(pos: number): number {
  return pos * PVIRTQ_DESC_SIZE + PVIRTQ_DESC_OFF_FLAGS;
}

/**
 * Writes a direct list at ring slot `pos` (Driver Ring Wrap Counter `wrap`):
 * one descriptor per segment in consecutive slots of a ring of `size`,
 * wrapping at the end with the counter flipping, Buffer ID `id` in each
 * (§2.8.6 needs it in the last; the others carry it too). Returns the first
 * descriptor's flags, not written.
 */
export function writePackedList(
  desc: GuestSlice,
  size: number,
  pos: number,
  wrap: number,
  id: number,
  readable: readonly Segment[],
  writable: readonly Segment[],
): number {
  const nr = readable.length;
  const total = nr + writable.length;
  let headFlags = 0;
  let p = pos;
  let w = wrap;
  for (let k = 0; k < total; k++) {
    const seg = k < nr ? readable[k]! : writable[k - nr]!;
    // §2.8.17: writable after readable; §2.8.6: NEXT on all but the last.
    const flags =
      (k < nr ? 0 : VIRTQ_DESC_F_WRITE) | (k === total - 1 ? 0 : VIRTQ_DESC_F_NEXT) | availBits(w);
    writeBody(desc, p * PVIRTQ_DESC_SIZE, seg.addr, seg.len, id);
    if (k === 0) headFlags = flags;
    else desc.writeU16(flagsOffset(p), flags);
    if (++p === size) {
      p = 0;
      w ^= 1;
    }
  }
  return headFlags;
}

/** Writes the segments as the indirect table of request `id` (its arena slot). */
export function writePackedIndirectTable(
  arena: IndirectTables,
  id: number,
  readable: readonly Segment[],
  writable: readonly Segment[],
): void {
  const nr = readable.length;
  const total = nr + writable.length;
  const base = arena.offset(id);
  for (let k = 0; k < total; k++) {
    const seg = k < nr ? readable[k]! : writable[k - nr]!;
    const off = base + k * PVIRTQ_DESC_SIZE;
    // §2.8.7: Buffer ID is reserved in table entries (0); §2.8.19: WRITE is the only flag.
    writeBody(arena.slice, off, seg.addr, seg.len, 0);
    arena.slice.writeU16(off + PVIRTQ_DESC_OFF_FLAGS, k < nr ? 0 : VIRTQ_DESC_F_WRITE);
  }
}

/**
 * Writes ring slot `pos` to point to request `id`'s indirect table of
 * `total` entries; returns its flags, not written (INDIRECT and the AVAIL/USED
 * bits: §2.8.7 WRITE is reserved here, §2.8.19 NEXT is not allowed with it).
 */
export function writePackedIndirectHead(
  desc: GuestSlice,
  arena: IndirectTables,
  pos: number,
  wrap: number,
  id: number,
  total: number,
): number {
  writeBody(
    desc,
    pos * PVIRTQ_DESC_SIZE,
    arena.addr + arena.offset(id),
    total * PVIRTQ_DESC_SIZE,
    id,
  );
  return VIRTQ_DESC_F_INDIRECT | availBits(wrap);
}

/** Writes addr, len and id of the descriptor at byte offset `off` (not its flags). */
function writeBody(s: GuestSlice, off: number, addr: number, len: number, id: number): void {
  s.writeU64(off + PVIRTQ_DESC_OFF_ADDR, addr);
  s.writeU32(off + PVIRTQ_DESC_OFF_LEN, len);
  s.writeU16(off + PVIRTQ_DESC_OFF_ID, id);
}

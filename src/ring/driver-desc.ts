/**
 * Writing a request into a split ring's descriptor table: a direct chain
 * through the IDs taken for it, or one indirect table in the request's arena
 * slot and the main-table descriptor pointing to it. VIRTIO 1.2 §2.7.5 (the
 * descriptor table), §2.7.4.2 (writable after readable), §2.7.5.3.1
 * (indirect descriptors: driver requirements).
 *
 * Plain writes: the device sees none of it before the driver's avail.idx
 * store publishes the request. The segments were checked before
 * (./driver-segments.ts).
 *
 * @module
 */
import type { GuestSlice } from "../memory/guest-memory.ts";
import {
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_DESC_OFF_ADDR,
  VIRTQ_DESC_OFF_FLAGS,
  VIRTQ_DESC_OFF_LEN,
  VIRTQ_DESC_OFF_NEXT,
  VIRTQ_DESC_SIZE,
} from "../spec/virtqueue.ts";
import type { IndirectTables } from "./driver-indirect.ts";
import type { Segment } from "./driver-segments.ts";

/**
 * Writes the chain at `head` into the descriptor table `desc`: one
 * descriptor per segment, each linked to the next through `next` (the free
 * list the IDs were taken from).
 */
export function writeDirectChain(
  desc: GuestSlice,
  next: Uint16Array,
  head: number,
  readable: readonly Segment[],
  writable: readonly Segment[],
): void {
  const nr = readable.length;
  const total = nr + writable.length;
  let i = head;
  for (let k = 0; k < total; k++) {
    const last = k === total - 1;
    // §2.7.4.2 "The driver MUST place any device-writable descriptor elements after any device-readable" ones.
    const flags = (k < nr ? 0 : VIRTQ_DESC_F_WRITE) | (last ? 0 : VIRTQ_DESC_F_NEXT);
    const link = last ? 0 : next[i]!;
    writeDesc(desc, i * VIRTQ_DESC_SIZE, k < nr ? readable[k]! : writable[k - nr]!, flags, link);
    i = link;
  }
}

/** Writes the segments as the indirect table of the chain at `head` (its arena slot). */
export function writeIndirectTable(
  arena: IndirectTables,
  head: number,
  readable: readonly Segment[],
  writable: readonly Segment[],
): void {
  const nr = readable.length;
  const total = nr + writable.length;
  const base = arena.offset(head);
  for (let k = 0; k < total; k++) {
    const last = k === total - 1;
    // §2.7.5.3.1 "The driver MUST NOT set the VIRTQ_DESC_F_INDIRECT flag within an indirect descriptor".
    const flags = (k < nr ? 0 : VIRTQ_DESC_F_WRITE) | (last ? 0 : VIRTQ_DESC_F_NEXT);
    const seg = k < nr ? readable[k]! : writable[k - nr]!;
    writeDesc(arena.slice, base + k * VIRTQ_DESC_SIZE, seg, flags, last ? 0 : k + 1);
  }
}

/** Writes descriptor `head` of `desc` to point to its indirect table of `total` entries. */
export function writeIndirectHead(
  desc: GuestSlice,
  arena: IndirectTables,
  head: number,
  total: number,
): void {
  const off = head * VIRTQ_DESC_SIZE;
  // §2.7.5.3.1 "The driver MUST NOT set both VIRTQ_DESC_F_INDIRECT and VIRTQ_DESC_F_NEXT in flags."
  desc.writeU64(off + VIRTQ_DESC_OFF_ADDR, arena.addr + arena.offset(head));
  desc.writeU32(off + VIRTQ_DESC_OFF_LEN, total * VIRTQ_DESC_SIZE);
  desc.writeU16(off + VIRTQ_DESC_OFF_FLAGS, VIRTQ_DESC_F_INDIRECT);
  desc.writeU16(off + VIRTQ_DESC_OFF_NEXT, 0);
}

/** Writes one descriptor. */
function writeDesc(s: GuestSlice, off: number, seg: Segment, flags: number, next: number): void {
  s.writeU64(off + VIRTQ_DESC_OFF_ADDR, seg.addr);
  s.writeU32(off + VIRTQ_DESC_OFF_LEN, seg.len);
  s.writeU16(off + VIRTQ_DESC_OFF_FLAGS, flags);
  s.writeU16(off + VIRTQ_DESC_OFF_NEXT, next);
}

/**
 * Raw packed-ring fields for tests: struct pvirtq_desc and struct
 * pvirtq_event_suppress written and read back with any values (no
 * validation), the AVAIL/USED bits for a wrap counter, indirect-table
 * entries for a list of buffers, and the ring descriptors of a request laid
 * out as a test asks (well-formed or not). VIRTIO 1.2 §2.8.1 (the AVAIL/USED
 * bits), §2.8.6 (Next Flag), §2.8.7 (an indirect table is an array of
 * struct pvirtq_desc), §2.8.13 (the descriptor format: addr, len, id,
 * flags), §2.8.14 (the Event Suppression structure: desc = offset |
 * wrap << 15, flags).
 *
 * @module
 */
import type { GuestMemory } from "../memory/guest-memory.ts";
import {
  PVIRTQ_DESC_OFF_ADDR,
  PVIRTQ_DESC_OFF_FLAGS,
  PVIRTQ_DESC_OFF_ID,
  PVIRTQ_DESC_OFF_LEN,
  PVIRTQ_DESC_SIZE,
  PVIRTQ_EVENT_OFF_DESC,
  PVIRTQ_EVENT_OFF_FLAGS,
  RING_EVENT_OFF_MASK,
  RING_EVENT_WRAP_SHIFT,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_USED,
} from "../spec/packed-virtqueue.ts";
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from "../spec/virtqueue.ts";
import type { MockBuffer } from "./mock-descriptors.ts";

/** How `MockPackedQueue.buildChain` lays out a request. */
export interface MockPackedChainOptions {
  /** Buffer ID (any u16: duplicates and out-of-range IDs allowed). Default: the lowest free ID. */
  id?: number;
  /** ID written in the descriptors before the last (default: the same ID; §2.8.6 has it in the last). */
  otherId?: number;
  /**
   * Write the first descriptor's AVAIL/USED bits as for this wrap counter
   * instead of the mock's (it still flips at the ring end): a wrong one
   * leaves the request looking not available.
   */
  wrap?: number;
  /** OR-ed into every ring descriptor's flags (e.g. VIRTQ_DESC_F_INDIRECT in a NEXT list). */
  extraFlags?: number;
  /** Keep VIRTQ_DESC_F_NEXT on the last ring descriptor too: a list that runs on. */
  unterminated?: boolean;
  /**
   * Put buffers in an indirect table at this guest address: the ring holds
   * the first `directCount` buffers, then one INDIRECT descriptor pointing
   * to a table of the rest (with `directCount` > 0 a malformed mix).
   */
  indirectTable?: number;
  /** With `indirectTable`: how many buffers stay direct before it (default 0). */
  directCount?: number;
  /** OR-ed into the INDIRECT descriptor's flags (e.g. VIRTQ_DESC_F_WRITE, reserved there). */
  indirectFlags?: number;
  /** OR-ed into every indirect-table entry's flags (e.g. VIRTQ_DESC_F_INDIRECT: a table in a table). */
  tableFlags?: number;
}

/** A raw packed descriptor, any values allowed (`addr` up to 2^64 − 1 as a bigint). */
export interface MockPackedDescriptor {
  addr: number | bigint;
  len: number;
  /** Buffer ID (default 0). */
  id?: number;
  /** VIRTQ_DESC_F_* bits, AVAIL and USED included (default 0). */
  flags?: number;
}

/** A raw packed descriptor as read back: `addr` as a bigint (exact). */
export interface MockPackedDescriptorRead {
  addr: bigint;
  len: number;
  id: number;
  flags: number;
}

/**
 * Indirect-table entries for `buffers`: VIRTQ_DESC_F_WRITE for writable
 * ones (§2.8.7: the only valid flag there) plus `extraFlags`, id 0.
 */
export function packedTableEntries(
  buffers: readonly MockBuffer[],
  extraFlags = 0,
): MockPackedDescriptor[] {
  return buffers.map((b) => ({
    addr: b.addr,
    len: b.len,
    flags: (b.writable ? VIRTQ_DESC_F_WRITE : 0) | extraFlags,
  }));
}

/**
 * Writes one raw packed descriptor at guest address `at`, flags included
 * (plain stores; see {@link MockPackedQueue.setFlags} to publish).
 */
export function writePackedDescAt(memory: GuestMemory, at: number, d: MockPackedDescriptor): void {
  writePackedBodyAt(memory, at, d);
  memory.writeU16(at + PVIRTQ_DESC_OFF_FLAGS, (d.flags ?? 0) & 0xffff);
}

/** Writes addr, len and id of a packed descriptor at `at`, leaving its flags. */
export function writePackedBodyAt(memory: GuestMemory, at: number, d: MockPackedDescriptor): void {
  memory.writeU64(at + PVIRTQ_DESC_OFF_ADDR, BigInt.asUintN(64, BigInt(d.addr)));
  memory.writeU32(at + PVIRTQ_DESC_OFF_LEN, d.len >>> 0);
  memory.writeU16(at + PVIRTQ_DESC_OFF_ID, (d.id ?? 0) & 0xffff);
}

/** Reads one raw packed descriptor at guest address `at`. */
export function readPackedDescAt(memory: GuestMemory, at: number): MockPackedDescriptorRead {
  return {
    addr: memory.readU64(at + PVIRTQ_DESC_OFF_ADDR),
    len: memory.readU32(at + PVIRTQ_DESC_OFF_LEN),
    id: memory.readU16(at + PVIRTQ_DESC_OFF_ID),
    flags: memory.readU16(at + PVIRTQ_DESC_OFF_FLAGS),
  };
}

/** AVAIL/USED bits of an available descriptor for wrap counter `wrap` (§2.8.1). */
export function mockAvailBits(wrap: number): number {
  return wrap !== 0 ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED;
}

/** AVAIL/USED bits of a used descriptor for wrap counter `wrap` (§2.8.1). */
export function mockUsedBits(wrap: number): number {
  return wrap !== 0 ? VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED : 0;
}

/** A used descriptor as the device wrote it. */
export interface MockPackedUsed {
  id: number;
  len: number;
  flags: number;
}

/** An Event Suppression structure (§2.8.14), decoded. */
export interface MockPackedEvent {
  /** RING_EVENT_FLAGS_* (bits 0–1; the reserved bits kept). */
  flags: number;
  /** Descriptor Ring Change Event Offset. */
  off: number;
  /** Descriptor Ring Change Event Wrap Counter. */
  wrap: number;
}

/** Reads the Event Suppression structure at `addr` (flags, then the offset and wrap). */
export function readEventAt(memory: GuestMemory, addr: number): MockPackedEvent {
  // Atomics.load (SeqCst): flags first, then the offset stored before them.
  const flags = memory.atomicLoadU16(addr + PVIRTQ_EVENT_OFF_FLAGS);
  // Atomics.load (SeqCst): the offset and wrap.
  const desc = memory.atomicLoadU16(addr + PVIRTQ_EVENT_OFF_DESC);
  return { flags, off: desc & RING_EVENT_OFF_MASK, wrap: desc >>> RING_EVENT_WRAP_SHIFT };
}

/** Writes the Event Suppression structure at `addr`: any `flags`, event offset `off`, wrap counter `wrap`. */
export function writeEventAt(
  memory: GuestMemory,
  addr: number,
  flags: number,
  off: number,
  wrap: number,
): void {
  const desc = (off & RING_EVENT_OFF_MASK) | ((wrap & 1) << RING_EVENT_WRAP_SHIFT);
  // Atomics.store (SeqCst): the offset before the flags, so a reader that sees the flags sees it.
  memory.atomicStoreU16(addr + PVIRTQ_EVENT_OFF_DESC, desc);
  // Atomics.store (SeqCst): the flags.
  memory.atomicStoreU16(addr + PVIRTQ_EVENT_OFF_FLAGS, flags & 0xffff);
}

/**
 * The `k`-th ring descriptor of a request of `buffers` laid out as `o` says
 * (`direct` of them in the ring; `last` of its ring descriptors), Buffer ID
 * `id`, AVAIL/USED bits for wrap counter `wrap`.
 */
export function ringDescriptor(
  buffers: readonly MockBuffer[],
  direct: number,
  k: number,
  last: boolean,
  id: number,
  wrap: number,
  o: MockPackedChainOptions,
): MockPackedDescriptor {
  const bits = mockAvailBits(wrap) | (o.extraFlags ?? 0);
  const descId = last ? id : (o.otherId ?? id);
  const next = !last || o.unterminated === true ? VIRTQ_DESC_F_NEXT : 0;
  if (k < direct) {
    const b = buffers[k]!;
    const flags = bits | next | (b.writable ? VIRTQ_DESC_F_WRITE : 0);
    return { addr: b.addr, len: b.len, id: descId, flags };
  }
  // The INDIRECT descriptor, always the last ring descriptor (its table was written first).
  const rest = buffers.length - direct;
  const flags = bits | next | VIRTQ_DESC_F_INDIRECT | (o.indirectFlags ?? 0);
  return { addr: o.indirectTable!, len: PVIRTQ_DESC_SIZE * rest, id: descId, flags };
}

/**
 * Raw split-ring descriptors for tests: written and read back with any
 * values (no validation), and well-formed chains of buffers as table
 * entries. VIRTIO 1.2 §2.7.5 (the descriptor table: addr, len, flags,
 * next), §2.7.5.3 (an indirect table is a descriptor table in guest memory).
 *
 * @module
 */
import type { GuestMemory } from "../memory/guest-memory.ts";
import {
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_DESC_OFF_ADDR,
  VIRTQ_DESC_OFF_FLAGS,
  VIRTQ_DESC_OFF_LEN,
  VIRTQ_DESC_OFF_NEXT,
} from "../spec/virtqueue.ts";

/** A raw descriptor, any values allowed (`addr` up to 2^64 − 1 as a bigint). */
export interface MockDescriptor {
  addr: number | bigint;
  len: number;
  /** VIRTQ_DESC_F_* bits (default 0). */
  flags?: number;
  /** Next index (default 0). */
  next?: number;
}

/** A raw descriptor as read back: `addr` as a bigint (exact). */
export interface MockDescriptorRead {
  addr: bigint;
  len: number;
  flags: number;
  next: number;
}

/** A buffer of a chain to build: readable by the device unless `writable`. */
export interface MockBuffer {
  addr: number;
  len: number;
  writable?: boolean;
}

/** Descriptor-table entries chaining `buffers` as 0 → 1 → … (for an indirect table). */
export function chainEntries(buffers: readonly MockBuffer[]): MockDescriptor[] {
  return buffers.map((b, k) => {
    const last = k === buffers.length - 1;
    return {
      addr: b.addr,
      len: b.len,
      flags: (b.writable ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT),
      next: last ? 0 : k + 1,
    };
  });
}

/** Writes one raw descriptor at guest address `at`. */
export function writeDescAt(memory: GuestMemory, at: number, d: MockDescriptor): void {
  memory.writeU64(at + VIRTQ_DESC_OFF_ADDR, BigInt.asUintN(64, BigInt(d.addr)));
  memory.writeU32(at + VIRTQ_DESC_OFF_LEN, d.len >>> 0);
  memory.writeU16(at + VIRTQ_DESC_OFF_FLAGS, (d.flags ?? 0) & 0xffff);
  memory.writeU16(at + VIRTQ_DESC_OFF_NEXT, (d.next ?? 0) & 0xffff);
}

/** Reads one raw descriptor at guest address `at`. */
export function readDescAt(memory: GuestMemory, at: number): MockDescriptorRead {
  return {
    addr: memory.readU64(at + VIRTQ_DESC_OFF_ADDR),
    len: memory.readU32(at + VIRTQ_DESC_OFF_LEN),
    flags: memory.readU16(at + VIRTQ_DESC_OFF_FLAGS),
    next: memory.readU16(at + VIRTQ_DESC_OFF_NEXT),
  };
}

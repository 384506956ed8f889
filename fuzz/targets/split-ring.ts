/**
 * Fuzz target: the device side of a split virtqueue (src/ring/device-queue.ts)
 * over guest memory the input fills.
 *
 * Feeds: a 4-byte header (queue size 1..16, EVENT_IDX, INDIRECT_DESC,
 * resume-from-used-idx, initial avail index, program length), the program
 * (pop, complete while writing into the chain's writable buffers, publish,
 * notification queries, enable/disable, addUsed misuse, and driver writes to
 * any ring or data byte between steps), then the bytes of guest memory:
 * descriptor table, available ring and used ring laid out by `vringLayout`,
 * and two contiguous 256-byte data regions that descriptors and indirect
 * tables may point into, with unmapped holes around them. Missing bytes
 * are zero.
 *
 * Failure: an exception other than a VirtioError with a documented ring
 * violation code (docs/conformance.md "Ring violations") or the documented
 * `addUsed` misuse refusals; a violation that does not leave the queue broken;
 * a popped chain with a segment outside guest memory; the device changing a
 * byte outside the used ring and the writable buffers of the chains it
 * popped; a step that does not terminate (the fuzzer's timeout).
 *
 * @module
 */
import { ErrorCode, type ErrorCodeValue } from "../../src/errors.ts";
import { GuestMemory } from "../../src/memory/guest-memory.ts";
import type { DescriptorChain } from "../../src/ring/chain.ts";
import { DeviceQueue } from "../../src/ring/device-queue.ts";
import type { DeviceRing } from "../../src/ring/device-ring.ts";
import { vringLayout } from "../../src/ring/layout.ts";
import { usedRingSize } from "../../src/spec/virtqueue.ts";
import { FuzzFailure, allowOnly, expect } from "../lib/check.ts";
import { FuzzInput } from "../lib/input.ts";

/** Codes popAvail / hasAvailable / enableNotification document for driver violations. */
export const RING_VIOLATIONS: ReadonlySet<ErrorCodeValue> = new Set([
  ErrorCode.AVAIL_IDX_JUMP,
  ErrorCode.HEAD_OUT_OF_RANGE,
  ErrorCode.TOO_MANY_IN_FLIGHT,
  ErrorCode.HEAD_IN_USE,
  ErrorCode.NEXT_OUT_OF_RANGE,
  ErrorCode.DESC_LOOP,
  ErrorCode.CHAIN_TOO_LONG,
  ErrorCode.DESC_OUT_OF_BOUNDS,
  ErrorCode.READ_AFTER_WRITE,
  ErrorCode.INDIRECT_TABLE,
  ErrorCode.INDIRECT_NESTED,
  ErrorCode.INDIRECT_NEXT,
]);

export const RING_BASE = 0x1000;
export const DATA_BASE = 0x8000;
export const DATA_SIZE = 0x100;
/** Most program steps one input runs. */
const MAX_STEPS = 512;

/** A memory region with a mirror of what its bytes should be unless the device wrote them. */
export interface Watched {
  readonly gpa: number;
  readonly bytes: Uint8Array;
  readonly expected: Uint8Array;
  /** 1 where the device may write. */
  readonly writable: Uint8Array;
}

/** Runs one input. */
export function fuzz(data: Uint8Array): void {
  const input = new FuzzInput(data);
  const h0 = input.u8();
  const size = 1 << (h0 % 5);
  const eventIdx = (h0 & 0x08) !== 0;
  const indirect = (h0 & 0x10) !== 0;
  const usedIdxFromMemory = (h0 & 0x20) !== 0;
  const nextAvail = input.u16();
  const program = input.sub(input.u8() * 2);
  const layout = vringLayout(size, RING_BASE);
  const ringLen = Math.ceil(layout.totalBytes / 8) * 8;
  const memory = memoryFor(ringLen);
  const regions: Watched[] = [
    watch(memory, RING_BASE, ringLen, input),
    watch(memory, DATA_BASE, 2 * DATA_SIZE, input),
  ];
  // The used ring is the device's to write.
  const usedOff = layout.usedAddr - RING_BASE;
  regions[0]!.writable.fill(1, usedOff, usedOff + usedRingSize(size));

  let brokenCalls = 0;
  const q = new DeviceQueue(memory, {
    size,
    descAddr: layout.descAddr,
    availAddr: layout.availAddr,
    usedAddr: layout.usedAddr,
    eventIdx,
    indirect,
    nextAvail,
    usedIdxFromMemory,
    onBroken: () => brokenCalls++,
  });
  const held: DescriptorChain[] = [];
  const violation = (e: unknown): void => {
    allowOnly(e, RING_VIOLATIONS);
    expect(q.broken !== null, "a ring violation left the queue usable");
  };

  for (let step = 0; step < MAX_STEPS && !program.done; step++) {
    const op = program.below(10);
    try {
      switch (op) {
        case 0:
        case 1: {
          const c = q.popAvail();
          if (c !== null) {
            checkChain(memory, c, regions);
            held.push(c);
          }
          break;
        }
        case 2: {
          if (held.length === 0) break;
          const c = held.splice(program.below(held.length), 1)[0]!;
          const len = c.writableBytes === 0 ? 0 : program.u16() % (c.writableBytes + 1);
          const w = c.writer();
          const wrote = w.fill(len, 0xa5);
          expect(wrote === len, `wrote ${wrote} of ${len} writable bytes`);
          q.addUsed(c.head, len);
          break;
        }
        case 3:
          q.publishUsed();
          break;
        case 4:
          q.needsNotification();
          break;
        case 5:
          q.enableNotification();
          break;
        case 6:
          q.disableNotification();
          break;
        case 7:
          q.hasAvailable();
          break;
        case 8:
          driverWrite(memory, regions[program.below(2)]!, program);
          break;
        case 9:
          misuse(q, held, program);
          break;
      }
    } catch (e) {
      if (e instanceof FuzzFailure) throw e;
      violation(e);
    }
  }
  expect(brokenCalls === (q.broken === null ? 0 : 1), `onBroken called ${brokenCalls} times`);
  for (const r of regions) checkWrites(memory, r);
}

/** One guest memory per ring length, reused: every input rewrites all of its bytes. */
const memories = new Map<number, GuestMemory>();
export function memoryFor(ringLen: number): GuestMemory {
  let m = memories.get(ringLen);
  if (m === undefined) {
    // Two regions over one buffer: contiguous in guest-physical space, so a buffer may span both.
    const data = new ArrayBuffer(2 * DATA_SIZE);
    m = new GuestMemory([
      { guestPhysAddr: RING_BASE, size: ringLen, buffer: new ArrayBuffer(ringLen) },
      { guestPhysAddr: DATA_BASE, size: DATA_SIZE, buffer: data },
      {
        guestPhysAddr: DATA_BASE + DATA_SIZE,
        size: DATA_SIZE,
        buffer: data,
        bufferOffset: DATA_SIZE,
      },
    ]);
    memories.set(ringLen, m);
  }
  return m;
}

/** Fills a region from the input and starts watching it. */
export function watch(memory: GuestMemory, gpa: number, len: number, input: FuzzInput): Watched {
  const bytes = input.exactly(len);
  memory.write(gpa, bytes);
  return { gpa, bytes, expected: bytes.slice(), writable: new Uint8Array(len) };
}

/** The driver changes some bytes of a region between two device steps. */
export function driverWrite(memory: GuestMemory, r: Watched, input: FuzzInput): void {
  const off = input.u16() % r.expected.byteLength;
  const src = input.bytes(Math.min(1 + input.below(8), r.expected.byteLength - off));
  memory.write(r.gpa + off, src);
  r.expected.set(src, off);
}

/**
 * addUsed with an arbitrary head (a packed ring's buffer ID) and length:
 * accepted only for a chain in flight and a length within its writable
 * bytes; otherwise the documented RangeError or USED_HEAD_NOT_IN_FLIGHT.
 */
export function misuse(q: DeviceRing, held: DescriptorChain[], input: FuzzInput): void {
  const head = input.u8();
  const len = input.u8() < 128 ? input.u8() : input.u32();
  const k = held.findIndex((c) => c.head === head);
  const valid = k >= 0 && len <= held[k]!.writableBytes;
  try {
    q.addUsed(head, len);
  } catch (e) {
    expect(!valid, `addUsed(${head}, ${len}) refused a chain in flight: ${String(e)}`);
    if (e instanceof RangeError) return;
    allowOnly(e, new Set([ErrorCode.USED_HEAD_NOT_IN_FLIGHT]));
    return;
  }
  expect(valid, `addUsed(${head}, ${len}) accepted a head that is not in flight`);
  held.splice(k, 1);
}

/** A popped chain's segments lie in guest memory; its writable ones become writable. */
export function checkChain(
  memory: GuestMemory,
  c: DescriptorChain,
  regions: readonly Watched[],
): void {
  let readable = 0;
  let writable = 0;
  expect(c.numReadable <= c.numSegs, "more readable segments than segments");
  for (let i = 0; i < c.numSegs; i++) {
    const addr = c.segAddr[i]!;
    const len = c.segLen[i]!;
    expect(len > 0, `segment ${i} of head ${c.head} is empty`);
    expect(memory.isValidRange(addr, len), `segment [${addr}, +${len}) outside guest memory`);
    if (i < c.numReadable) readable += len;
    else {
      writable += len;
      for (const r of regions) {
        const from = Math.max(addr, r.gpa) - r.gpa;
        const to = Math.min(addr + len, r.gpa + r.bytes.byteLength) - r.gpa;
        if (from < to) r.writable.fill(1, from, to);
      }
    }
  }
  expect(readable === c.readableBytes, "readableBytes disagrees with the segments");
  expect(writable === c.writableBytes, "writableBytes disagrees with the segments");
}

/** Every byte the device changed lies in the used ring or a writable buffer. */
export function checkWrites(memory: GuestMemory, r: Watched): void {
  const now = new Uint8Array(r.expected.byteLength);
  memory.read(r.gpa, now);
  for (let i = 0; i < now.byteLength; i++) {
    if (now[i] !== r.expected[i] && r.writable[i] === 0)
      throw new FuzzFailure(`device wrote guest byte 0x${(r.gpa + i).toString(16)}`);
  }
}

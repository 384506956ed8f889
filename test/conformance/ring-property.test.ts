/**
 * Property: for ANY descriptor table, indirect tables and available ring a
 * driver can write, `DeviceQueue.popAvail` terminates and either yields a
 * valid chain or throws one of the documented codes (docs/conformance.md "Ring
 * violations"), never another exception, never an access outside guest
 * memory, never a write. The result is compared with a reference walker
 * written from the policy (64-bit exact addresses via bigint).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { ErrorCode, isVirtioError, type ErrorCodeValue } from "../../src/errors.ts";
import { GuestMemory } from "../../src/memory/guest-memory.ts";
import { DeviceQueue } from "../../src/ring/device-queue.ts";
import type { DescriptorChain } from "../../src/ring/chain.ts";
import { MockSplitQueue, type MockDescriptor } from "../../src/testing/index.ts";
import {
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from "../../src/spec/virtqueue.ts";

const RING = 0x1000; // ring region [0x1000, 0x2000)
const DATA = 0x4000; // data [0x4000, 0x5000) + data2 [0x5000, 0x6000), hole after
const DATA_END = 0x6000;
const TABLES = [DATA + 0x100, DATA + 0xff8, DATA + 0x801]; // the second straddles data/data2
const HOLE = 0x3000;

const DOCUMENTED: ReadonlySet<ErrorCodeValue> = new Set([
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

// ---- generators -----------------------------------------------------------------

const addrArb: fc.Arbitrary<bigint> = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: DATA, max: DATA_END - 0x200 }).map(BigInt) },
  { weight: 2, arbitrary: fc.constantFrom(...TABLES.map(BigInt)) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      BigInt(HOLE),
      BigInt(DATA_END - 8),
      BigInt(RING),
      2n ** 53n,
      2n ** 64n - 1n,
      2n ** 64n - 16n,
      0n,
    ),
  },
  { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }) },
);
const lenArb = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0, max: 0x200 }) },
  { weight: 2, arbitrary: fc.constantFrom(0, 16, 32, 48, 17, 0x1000, 0x2000) },
  { weight: 1, arbitrary: fc.constantFrom(0xffff_ffff, 0x8000_0000) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 0x2100 }) },
);
const flagsArb = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0, max: 7 }) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) },
);
const descArb = (maxNext: number): fc.Arbitrary<MockDescriptor> =>
  fc.record({
    addr: addrArb,
    len: lenArb,
    flags: flagsArb,
    next: fc.oneof(
      { weight: 8, arbitrary: fc.integer({ min: 0, max: maxNext }) },
      { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) },
    ),
  });

const scenarioArb = fc.constantFrom(1, 2, 4, 8).chain((size) =>
  fc.record({
    size: fc.constant(size),
    descs: fc.array(descArb(size + 1), { minLength: size, maxLength: size }),
    tables: fc.array(fc.array(descArb(6), { minLength: 1, maxLength: 6 }), {
      minLength: 3,
      maxLength: 3,
    }),
    heads: fc.array(fc.integer({ min: 0, max: size + 1 }), { minLength: size, maxLength: size }),
    nextAvail: fc.oneof(fc.integer({ min: 0, max: 0xffff }), fc.constantFrom(0, 65535, 65534)),
    pending: fc.oneof(
      { weight: 6, arbitrary: fc.integer({ min: 0, max: size }) },
      { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) },
    ),
    indirect: fc.boolean(),
    maxIndirectEntries: fc.constantFrom(65535, 4, 2),
  }),
);

type Scenario = typeof scenarioArb extends fc.Arbitrary<infer T> ? T : never;

// ---- reference walker ------------------------------------------------------------

type Outcome = { code: ErrorCodeValue } | { segs: [number, number, boolean][]; descCount: number };

interface RawDesc {
  addr: bigint;
  len: number;
  flags: number;
  next: number;
}

/** In guest memory? Exact 64-bit arithmetic; zero-length buffers are always fine. */
function inMemory(mem: GuestMemory, addr: bigint, len: number): boolean {
  if (len === 0) return true;
  if (addr + BigInt(len) > 2n ** 53n) return false;
  return mem.isValidRange(Number(addr), len);
}

function readRaw(mem: GuestMemory, at: bigint): RawDesc {
  const a = Number(at);
  return {
    addr: mem.readU64(a),
    len: mem.readU32(a + 8),
    flags: mem.readU16(a + 12),
    next: mem.readU16(a + 14),
  };
}

/** The policy, written plainly: which code, or which segments. */
function referenceWalk(
  mem: GuestMemory,
  s: Pick<Scenario, "size" | "indirect" | "maxIndirectEntries">,
  descAddr: number,
  head: number,
): Outcome {
  const segs: [number, number, boolean][] = [];
  let tableAddr = BigInt(descAddr);
  let tableLen = s.size;
  let inIndirect = false;
  let walkedInTable = 0;
  let buffers = 0;
  let descCount = 0;
  let total = 0;
  let seenWritable = false;
  let i = head;
  for (let guard = 0; guard < 4 * s.size + 16; guard++) {
    const d = readRaw(mem, tableAddr + 16n * BigInt(i));
    descCount++;
    if (d.flags & VIRTQ_DESC_F_INDIRECT) {
      if (inIndirect) return { code: ErrorCode.INDIRECT_NESTED };
      if (!s.indirect) return { code: ErrorCode.INDIRECT_TABLE };
      if (d.flags & VIRTQ_DESC_F_NEXT) return { code: ErrorCode.INDIRECT_NEXT };
      if (d.len === 0 || d.len % 16 !== 0 || d.len / 16 > s.maxIndirectEntries)
        return { code: ErrorCode.INDIRECT_TABLE };
      if (!inMemory(mem, d.addr, d.len)) return { code: ErrorCode.INDIRECT_TABLE };
      tableAddr = d.addr;
      tableLen = d.len / 16;
      inIndirect = true;
      walkedInTable = 0;
      i = 0;
      continue;
    }
    buffers++;
    walkedInTable++;
    const writable = (d.flags & VIRTQ_DESC_F_WRITE) !== 0;
    if (!writable && seenWritable) return { code: ErrorCode.READ_AFTER_WRITE };
    seenWritable ||= writable;
    if (!inMemory(mem, d.addr, d.len)) return { code: ErrorCode.DESC_OUT_OF_BOUNDS };
    total += d.len;
    if (total >= 2 ** 32) return { code: ErrorCode.CHAIN_TOO_LONG };
    if (d.len > 0) segs.push([Number(d.addr), d.len, writable]);
    if (!(d.flags & VIRTQ_DESC_F_NEXT)) return { segs, descCount };
    if (d.next >= tableLen) return { code: ErrorCode.NEXT_OUT_OF_RANGE };
    if (buffers >= s.size || walkedInTable >= tableLen) return { code: ErrorCode.DESC_LOOP };
    i = d.next;
  }
  throw new Error("reference walker did not terminate");
}

function chainOutcome(c: DescriptorChain): Outcome {
  const segs: [number, number, boolean][] = [];
  for (let k = 0; k < c.numSegs; k++) segs.push([c.segAddr[k]!, c.segLen[k]!, k >= c.numReadable]);
  return { segs, descCount: c.descCount };
}

// ---- the property ----------------------------------------------------------------

/** Guest memory: ring region, two contiguous data regions, holes around. */
function newMemory(): GuestMemory {
  return GuestMemory.createShared([
    { guestPhysAddr: RING, size: 0x1000 },
    { guestPhysAddr: DATA, size: 0x1000 },
    { guestPhysAddr: DATA + 0x1000, size: 0x1000 },
  ]);
}

function snapshot(mem: GuestMemory): Uint8Array {
  const b = new Uint8Array(0x3000);
  mem.read(RING, b.subarray(0, 0x1000));
  mem.read(DATA, b.subarray(0x1000));
  return b;
}

type QueueParams = Pick<Scenario, "size" | "nextAvail" | "indirect" | "maxIndirectEntries">;

/** Pops until empty or broken, comparing every step with the reference. */
function checkQueue(mem: GuestMemory, drv: MockSplitQueue, p: QueueParams): void {
  const before = snapshot(mem);
  let brokenCalls = 0;
  const q = new DeviceQueue(mem, {
    ...drv.addresses,
    nextAvail: p.nextAvail,
    indirect: p.indirect,
    maxIndirectEntries: p.maxIndirectEntries,
    onBroken: () => brokenCalls++,
  });
  const inFlight = new Set<number>();
  const pending = (drv.availIdx - p.nextAvail) & 0xffff;
  let next = p.nextAvail;
  for (let step = 0; step <= p.size + 1; step++) {
    // Reference for the avail-ring level, then the chain walk.
    let expected: Outcome | null;
    if (pending > p.size) expected = { code: ErrorCode.AVAIL_IDX_JUMP };
    else if (next === ((p.nextAvail + pending) & 0xffff)) expected = null;
    else {
      const head = drv.availEntry(next);
      if (head >= p.size) expected = { code: ErrorCode.HEAD_OUT_OF_RANGE };
      else if (inFlight.size >= p.size) expected = { code: ErrorCode.TOO_MANY_IN_FLIGHT };
      else if (inFlight.has(head)) expected = { code: ErrorCode.HEAD_IN_USE };
      else expected = referenceWalk(mem, p, drv.descAddr, head);
    }
    let got: Outcome | null;
    try {
      const c = q.popAvail();
      got = c === null ? null : chainOutcome(c);
      if (c !== null) {
        inFlight.add(c.head);
        next = (next + 1) & 0xffff;
        checkInvariants(mem, c, p.size);
      }
    } catch (e) {
      assert.ok(isVirtioError(e), `not a VirtioError: ${e instanceof Error ? e.stack : "?"}`);
      assert.ok(DOCUMENTED.has(e.code), `undocumented code ${e.code}: ${e.message}`);
      got = { code: e.code };
      assert.equal(q.broken, e, "broken with the thrown error");
      assert.equal(brokenCalls, 1, "onBroken once");
      assert.equal(q.popAvail(), null, "inert after breaking");
    }
    assert.deepEqual(got, expected, `step ${step}`);
    if (got === null || "code" in got) break;
  }
  assert.deepEqual(snapshot(mem), before, "popAvail never writes guest memory");
}

/** Invariants of a popped chain, independent of the reference. */
function checkInvariants(mem: GuestMemory, c: DescriptorChain, size: number): void {
  let seenW = false;
  let total = 0;
  for (let k = 0; k < c.numSegs; k++) {
    const w = k >= c.numReadable;
    assert.ok(!(seenW && !w), "readable after writable");
    seenW ||= w;
    assert.ok(c.segLen[k]! > 0, "no empty segment");
    assert.ok(mem.isValidRange(c.segAddr[k]!, c.segLen[k]!), "segment inside memory");
    total += c.segLen[k]!;
  }
  assert.equal(total, c.readableBytes + c.writableBytes);
  assert.ok(total <= 0xffff_ffff, "total within u32");
  assert.ok(c.descCount <= size + 1, "descCount bounded");
}

test("any ring a driver can write: popAvail terminates, agrees with the reference, documented codes only", () => {
  fc.assert(
    fc.property(scenarioArb, (s) => {
      const mem = newMemory();
      const drv = new MockSplitQueue(mem, s.size, RING);
      s.descs.forEach((d, i) => drv.writeDesc(i, d));
      s.tables.forEach((t, k) => drv.writeTable(TABLES[k]!, t));
      s.heads.forEach((h, k) => drv.setAvailEntry(s.nextAvail + k, h));
      drv.availIdx = s.nextAvail + s.pending;
      checkQueue(mem, drv, s);
    }),
    { numRuns: 1500 },
  );
});

test("mostly-valid rings (well-formed chains, then a few ring bytes flipped) agree with the reference", () => {
  const bufArb = fc.record({
    off: fc.integer({ min: 0, max: 0x1f00 }),
    len: fc.integer({ min: 0, max: 0x100 }),
  });
  const mutated = fc.record({
    size: fc.constantFrom(4, 8),
    chains: fc.array(
      fc.record({
        bufs: fc.array(bufArb, { minLength: 1, maxLength: 3 }),
        writable: fc.integer({ min: 0, max: 3 }),
        indirect: fc.boolean(),
      }),
      { minLength: 1, maxLength: 2 },
    ),
    flips: fc.array(fc.record({ at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }), {
      minLength: 0,
      maxLength: 3,
    }),
    nextAvail: fc.constantFrom(0, 65535, 1000),
  });
  fc.assert(
    fc.property(mutated, (m) => {
      const mem = newMemory();
      const drv = new MockSplitQueue(mem, m.size, RING, { startIdx: m.nextAvail });
      m.chains.forEach((c, k) => {
        const bufs = c.bufs.map((b, j) => ({
          addr: DATA + b.off,
          len: b.len,
          writable: j >= c.bufs.length - c.writable,
        }));
        if (c.indirect) drv.addChain(bufs, { indices: [2 * k], indirectTable: TABLES[k]! });
        else drv.addChain(bufs.slice(0, 2), { indices: bufs.slice(0, 2).map((_, j) => 2 * k + j) });
      });
      // Flip bytes in the descriptor table and the available ring only.
      const span = 16 * m.size + 6 + 2 * m.size;
      for (const f of m.flips) mem.writeU8(RING + (f.at % span), f.value);
      checkQueue(mem, drv, { ...m, indirect: true, maxIndirectEntries: 65535 });
    }),
    { numRuns: 500 },
  );
});

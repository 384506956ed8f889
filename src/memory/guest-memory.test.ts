import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { GuestMemory } from "./guest-memory.ts";
import { ErrorCode, isVirtioError } from "../errors.ts";

const outOfRange = (e: unknown) => isVirtioError(e, ErrorCode.MEM_OUT_OF_RANGE);

function twoRegions(): GuestMemory {
  // [0x1000, 0x2000) and [0x3000, 0x4000) with a hole between; [0x4000, 0x5000) adjacent to the second.
  return GuestMemory.createShared([
    { guestPhysAddr: 0x1000, size: 0x1000 },
    { guestPhysAddr: 0x3000, size: 0x1000 },
    { guestPhysAddr: 0x4000, size: 0x1000 },
  ]);
}

test("little-endian scalar round trips", () => {
  const m = twoRegions();
  m.writeU16(0x1000, 0xbeef);
  m.writeU32(0x1004, 0x12345678);
  m.writeU64(0x1008, 0x0102030405060708n);
  assert.equal(m.readU8(0x1000), 0xef);
  assert.equal(m.readU16(0x1000), 0xbeef);
  assert.equal(m.readU32(0x1004), 0x12345678);
  assert.equal(m.readU64(0x1008), 0x0102030405060708n);
  assert.equal(m.readU8(0x1008), 0x08);
});

test("scalars may straddle two contiguous regions but not a hole", () => {
  const m = twoRegions();
  m.writeU32(0x3ffe, 0xa1b2c3d4);
  assert.equal(m.readU32(0x3ffe), 0xa1b2c3d4);
  assert.throws(() => m.readU32(0x1ffe), outOfRange);
  assert.throws(() => m.writeU16(0x1fff, 1), outOfRange);
});

test("out-of-range and hostile addresses are errors with a code", () => {
  const m = twoRegions();
  for (const [a, l] of [
    [0, 1],
    [0x2000, 1],
    [0x1fff, 2],
    [0x5000, 0],
    [-1, 1],
    [Number.NaN, 1],
    [2 ** 53, 1],
    [2 ** 64, 1],
    [0x1000, -1],
    [0x1000, 0x1001],
  ] as const) {
    assert.equal(m.isValidRange(a, l), false, `${a}+${l}`);
    assert.throws(() => m.checkRange(a, l), outOfRange);
    if (l > 0 && l <= 0x2000) assert.throws(() => m.read(a, new Uint8Array(l)), outOfRange);
    assert.throws(() => m.slice(a, l), outOfRange);
  }
  assert.equal(m.isValidRange(0x3000, 0x2000), true, "crossing contiguous regions");
  assert.equal(m.isValidRange(0x1000, 0x2001), false, "crossing a hole");
});

test("copies across contiguous regions and views split per region", () => {
  const m = twoRegions();
  const src = Uint8Array.from({ length: 64 }, (_, i) => i + 1);
  m.write(0x3fe0, src);
  const dst = new Uint8Array(64);
  m.read(0x3fe0, dst);
  assert.deepEqual(dst, src);
  const views: Uint8Array[] = [];
  assert.equal(m.views(0x3fe0, 64, views), 2);
  assert.deepEqual([views[0]!.length, views[1]!.length], [32, 32]);
  assert.equal(views[1]![0], 33);
});

test("slices bound every access and give atomic 16-bit access", () => {
  const m = twoRegions();
  const s = m.slice(0x1100, 8);
  s.atomicStoreU16(2, 0xffff);
  assert.equal(s.atomicLoadU16(2), 0xffff);
  assert.equal(m.readU16(0x1102), 0xffff);
  assert.throws(() => s.readU16(7), outOfRange);
  assert.throws(() => s.readU32(-1), outOfRange);
  assert.throws(
    () => s.atomicLoadU16(1),
    (e) => isVirtioError(e, ErrorCode.MEM_MISALIGNED),
  );
});

test("regions are validated when memory is built", () => {
  const buf = new SharedArrayBuffer(4096);
  assert.throws(() => new GuestMemory([]), RangeError);
  assert.throws(() => new GuestMemory([{ guestPhysAddr: 0, size: 8192, buffer: buf }]), RangeError);
  assert.throws(() => new GuestMemory([{ guestPhysAddr: 4, size: 16, buffer: buf }]), RangeError);
  assert.throws(
    () =>
      new GuestMemory([
        { guestPhysAddr: 0, size: 4096, buffer: buf },
        { guestPhysAddr: 2048, size: 1024, buffer: new SharedArrayBuffer(1024) },
      ]),
    RangeError,
  );
});

test("property: writes land exactly where asked and nowhere else", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0x3000, max: 0x4ff0 }),
      fc.uint8Array({ minLength: 1, maxLength: 16 }),
      (addr, bytes) => {
        fc.pre(addr + bytes.length <= 0x5000);
        const m = twoRegions();
        m.write(addr, bytes);
        const all = new Uint8Array(0x2000);
        m.read(0x3000, all);
        for (let i = 0; i < all.length; i++) {
          const a = 0x3000 + i;
          const expected = a >= addr && a < addr + bytes.length ? bytes[a - addr] : 0;
          if (all[i] !== expected) return false;
        }
        return true;
      },
    ),
  );
});

test("transferable form round-trips and shares the buffers", () => {
  const m = twoRegions();
  const m2 = GuestMemory.fromTransferable(structuredClone(m.toTransferable()));
  m.writeU32(0x4010, 77);
  assert.equal(m2.readU32(0x4010), 77);
});

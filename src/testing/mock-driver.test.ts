import { test } from "node:test";
import assert from "node:assert/strict";
import { GuestMemory } from "../memory/guest-memory.ts";
import { vringLayout } from "../ring/layout.ts";
import {
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  availEventOffset,
  usedEventOffset,
} from "../spec/virtqueue.ts";
import { MockAllocator, MockSplitQueue, chainEntries, readDescAt, writeDescAt } from "./index.ts";

const mem = () => GuestMemory.createShared([{ guestPhysAddr: 0, size: 0x20000 }]);

test("places the ring with vringLayout and clears it", () => {
  const m = mem();
  m.fill(0, 0x20000, 0xee);
  const d = new MockSplitQueue(m, 8, 0x1000);
  const l = vringLayout(8, 0x1000);
  assert.deepEqual(d.addresses, {
    size: 8,
    descAddr: l.descAddr,
    availAddr: l.availAddr,
    usedAddr: l.usedAddr,
  });
  for (let a = l.descAddr; a < l.descAddr + l.totalBytes; a++)
    if (a < l.availAddr + 22 || a >= l.usedAddr)
      assert.equal(m.readU8(a), 0, `0x${a.toString(16)}`);
  assert.equal(m.readU8(0xfff), 0xee, "nothing before the ring touched");
  assert.equal(m.readU8(l.usedAddr + 6 + 64), 0xee, "nothing after the ring touched");
});

test("explicit part addresses are used as given", () => {
  const m = mem();
  const d = new MockSplitQueue(m, 4, { descAddr: 0x3000, availAddr: 0x5002, usedAddr: 0x7004 });
  assert.deepEqual(d.addresses, { size: 4, descAddr: 0x3000, availAddr: 0x5002, usedAddr: 0x7004 });
  d.publish(3);
  assert.equal(m.readU16(0x5002 + 2), 1);
  assert.equal(m.readU16(0x5002 + 4), 3);
});

test("raw descriptors round-trip any values, incl. 64-bit addresses", () => {
  const m = mem();
  const d = new MockSplitQueue(m, 4, 0x1000);
  d.writeDesc(3, { addr: 0xffff_ffff_ffff_ffffn, len: 0xffff_ffff, flags: 0xffff, next: 0xffff });
  assert.deepEqual(d.readDesc(3), {
    addr: 0xffff_ffff_ffff_ffffn,
    len: 0xffff_ffff,
    flags: 0xffff,
    next: 0xffff,
  });
  assert.equal(m.readU64(0x1000 + 48), 0xffff_ffff_ffff_ffffn);
  assert.equal(m.readU32(0x1000 + 56), 0xffff_ffff);
  writeDescAt(m, 0x8004, { addr: 2 ** 40, len: 7 });
  assert.deepEqual(readDescAt(m, 0x8004), { addr: 2n ** 40n, len: 7, flags: 0, next: 0 });
  assert.throws(() => d.writeDesc(4, { addr: 0, len: 0 }), RangeError);
});

test("buildChain links consecutive indexes, wrapping, readable and writable flags", () => {
  const m = mem();
  const d = new MockSplitQueue(m, 4, 0x1000);
  assert.equal(d.buildChain([{ addr: 0x8000, len: 1 }]), 0);
  const h = d.buildChain([
    { addr: 0x9000, len: 2 },
    { addr: 0x9100, len: 3, writable: true },
    { addr: 0x9200, len: 4, writable: true },
  ]);
  assert.equal(h, 1);
  assert.deepEqual(d.readDesc(1), { addr: 0x9000n, len: 2, flags: VIRTQ_DESC_F_NEXT, next: 2 });
  assert.deepEqual(d.readDesc(2), {
    addr: 0x9100n,
    len: 3,
    flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE,
    next: 3,
  });
  assert.deepEqual(d.readDesc(3), { addr: 0x9200n, len: 4, flags: VIRTQ_DESC_F_WRITE, next: 0 });
  // The cursor wraps: next chain starts at 0 again.
  assert.equal(
    d.buildChain([
      { addr: 1, len: 1 },
      { addr: 2, len: 2 },
    ]),
    0,
  );
  assert.equal(d.buildChain([{ addr: 3, len: 3 }], { indices: [3] }), 3);
  assert.throws(() => d.buildChain([]), RangeError);
  assert.throws(() => d.buildChain([{ addr: 1, len: 1 }], { indices: [0, 1] }), RangeError);
});

test("indirect chains: table entries, INDIRECT descriptor, direct prefix, extra flags", () => {
  const m = mem();
  const d = new MockSplitQueue(m, 8, 0x1000);
  const h = d.buildChain(
    [
      { addr: 0xa000, len: 16 },
      { addr: 0xa100, len: 8 },
      { addr: 0xa200, len: 1, writable: true },
    ],
    { indirectTable: 0xc000, directCount: 1, indirectFlags: VIRTQ_DESC_F_WRITE },
  );
  assert.deepEqual(d.readDesc(h), {
    addr: 0xa000n,
    len: 16,
    flags: VIRTQ_DESC_F_NEXT,
    next: h + 1,
  });
  assert.deepEqual(d.readDesc(h + 1), {
    addr: 0xc000n,
    len: 32,
    flags: VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE,
    next: 0,
  });
  assert.deepEqual(d.readTableDesc(0xc000, 0), {
    addr: 0xa100n,
    len: 8,
    flags: VIRTQ_DESC_F_NEXT,
    next: 1,
  });
  assert.deepEqual(d.readTableDesc(0xc000, 1), {
    addr: 0xa200n,
    len: 1,
    flags: VIRTQ_DESC_F_WRITE,
    next: 0,
  });
  assert.throws(
    () => d.buildChain([{ addr: 1, len: 1 }], { indirectTable: 0xd000, directCount: 1 }),
    RangeError,
  );
  assert.deepEqual(chainEntries([{ addr: 5, len: 6, writable: true }]), [
    { addr: 5, len: 6, flags: VIRTQ_DESC_F_WRITE, next: 0 },
  ]);
});

test("avail ring: publish, free idx, jumps, wraparound from any start", () => {
  const m = mem();
  const d = new MockSplitQueue(m, 4, 0x1000, { startIdx: 65534 });
  const l = vringLayout(4, 0x1000);
  assert.equal(d.availIdx, 65534);
  assert.equal(d.usedIdx, 65534);
  assert.equal(d.lastUsed, 65534);
  d.publish(1, 2, 3);
  assert.equal(d.availIdx, 1, "wrapped");
  assert.equal(m.readU16(l.availAddr + 2), 1);
  assert.deepEqual([d.availEntry(65534), d.availEntry(65535), d.availEntry(0)], [1, 2, 3]);
  assert.equal(m.readU16(l.availAddr + 4 + 2 * (65534 % 4)), 1);
  d.setAvailEntry(5, 0xffff);
  assert.equal(d.availEntry(1), 0xffff);
  d.availIdx = 0x1_2345;
  assert.equal(d.availIdx, 0x2345);
  d.availFlags = 1;
  assert.equal(m.readU16(l.availAddr), 1);
  d.usedEvent = 65535;
  assert.equal(m.readU16(l.availAddr + usedEventOffset(4)), 65535);
  assert.equal(d.usedEvent, 65535);
});

test("used ring: elements, idx, flags, avail_event, popUsed and drainUsed", () => {
  const m = mem();
  const d = new MockSplitQueue(m, 4, 0x1000);
  const l = vringLayout(4, 0x1000);
  assert.equal(d.popUsed(), null);
  for (let k = 0; k < 6; k++) {
    m.writeU32(l.usedAddr + 4 + 8 * (k % 4), 10 + k);
    m.writeU32(l.usedAddr + 8 + 8 * (k % 4), 100 + k);
    m.writeU16(l.usedAddr + 2, k + 1);
    assert.deepEqual(d.popUsed(), { id: 10 + k, len: 100 + k });
  }
  assert.equal(d.popUsed(), null);
  assert.deepEqual(d.usedElem(5), { id: 15, len: 105 });
  m.writeU16(l.usedAddr + 2, 8);
  m.writeU32(l.usedAddr + 4 + 8 * 2, 7);
  assert.equal(d.drainUsed().length, 2);
  assert.equal(d.lastUsed, 8);
  m.writeU16(l.usedAddr, 1);
  m.writeU16(l.usedAddr + availEventOffset(4), 0xbeef);
  assert.equal(d.usedFlags, 1);
  assert.equal(d.availEvent, 0xbeef);
});

test("MockAllocator hands out aligned, disjoint ranges and stops at the end", () => {
  const a = new MockAllocator(0x1001, 0x1100);
  const x = a.alloc(10);
  const y = a.alloc(3, 4);
  const z = a.alloc(0);
  assert.equal(x, 0x1010);
  assert.equal(y, 0x101c);
  assert.ok(z >= y + 3, "disjoint");
  assert.throws(() => a.alloc(0x100), RangeError);
});

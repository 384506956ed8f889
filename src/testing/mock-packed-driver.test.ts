import { test } from "node:test";
import assert from "node:assert/strict";
import { GuestMemory } from "../memory/guest-memory.ts";
import { PackedDriverQueue } from "../ring/packed-driver-queue.ts";
import { packedRingLayout } from "../ring/packed-layout.ts";
import {
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_USED,
  isPackedDescAvail,
  isPackedDescUsed,
} from "../spec/packed-virtqueue.ts";
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from "../spec/virtqueue.ts";
import {
  MockPackedQueue,
  mockAvailBits,
  mockUsedBits,
  packedTableEntries,
  readEventAt,
  readPackedDescAt,
  writeEventAt,
  writePackedDescAt,
  type MockBuffer,
} from "./index.ts";

const MEM = 0x40000;
const mem = () => GuestMemory.createShared([{ guestPhysAddr: 0, size: MEM }]);
const A = VIRTQ_DESC_F_AVAIL;
const U = VIRTQ_DESC_F_USED;
const N = VIRTQ_DESC_F_NEXT;
const W = VIRTQ_DESC_F_WRITE;

/** Plays the device's used side: writes a used descriptor at `slot` (id, len, then flags). */
function markUsed(
  m: GuestMemory,
  d: MockPackedQueue,
  slot: number,
  id: number,
  len: number,
  wrap: number,
): void {
  const a = d.descAddr + 16 * slot;
  m.writeU32(a + 8, len);
  m.writeU16(a + 12, id);
  m.atomicStoreU16(a + 14, mockUsedBits(wrap) | (len > 0 ? W : 0));
}

test("places the ring with packedRingLayout and clears only its three parts", () => {
  const m = mem();
  m.fill(0, MEM, 0xee);
  const d = new MockPackedQueue(m, 5, 0x1000);
  const l = packedRingLayout(5, 0x1000);
  assert.deepEqual(d.addresses, {
    size: 5,
    descAddr: l.descAddr,
    driverAddr: l.driverAddr,
    deviceAddr: l.deviceAddr,
  });
  for (let a = 0x1000; a < 0x1000 + l.totalBytes; a++) assert.equal(m.readU8(a), 0);
  assert.equal(m.readU8(0xfff), 0xee, "nothing before the ring touched");
  assert.equal(m.readU8(0x1000 + l.totalBytes), 0xee, "nothing after the ring touched");
  assert.throws(() => new MockPackedQueue(m, 0, 0x1000), RangeError);
  assert.throws(() => new MockPackedQueue(m, 32769, 0x1000), RangeError);
  assert.throws(() => new MockPackedQueue(m, 4, 0x1008), RangeError);
});

test("explicit part addresses are used as given (any values), and clear: false keeps memory", () => {
  const m = mem();
  m.fill(0x3000, 64, 0xaa);
  const d = new MockPackedQueue(
    m,
    3,
    { descAddr: 0x3000, driverAddr: 0x5002, deviceAddr: 0x7001 },
    { clear: false },
  );
  assert.deepEqual(d.addresses, {
    size: 3,
    descAddr: 0x3000,
    driverAddr: 0x5002,
    deviceAddr: 0x7001,
  });
  assert.equal(m.readU8(0x3000), 0xaa);
});

test("raw descriptors round-trip any values, incl. 64-bit addresses; slots are bounds-checked", () => {
  const m = mem();
  const d = new MockPackedQueue(m, 4, 0x1000);
  d.writeDesc(3, { addr: 0xffff_ffff_ffff_ffffn, len: 0xffff_ffff, id: 0xffff, flags: 0xffff });
  assert.deepEqual(d.readDesc(3), {
    addr: 0xffff_ffff_ffff_ffffn,
    len: 0xffff_ffff,
    id: 0xffff,
    flags: 0xffff,
  });
  assert.equal(m.readU64(0x1000 + 48), 0xffff_ffff_ffff_ffffn);
  assert.equal(m.readU32(0x1000 + 56), 0xffff_ffff);
  assert.equal(m.readU16(0x1000 + 60), 0xffff);
  writePackedDescAt(m, 0x8004, { addr: 2 ** 40, len: 7 });
  assert.deepEqual(readPackedDescAt(m, 0x8004), { addr: 2n ** 40n, len: 7, id: 0, flags: 0 });
  d.setFlags(1, 0x1_0081);
  assert.equal(d.readDesc(1).flags, 0x81);
  for (const i of [4, -1, 1.5]) {
    assert.throws(() => d.writeDesc(i, { addr: 0, len: 0 }), RangeError);
    assert.throws(() => d.readDesc(i), RangeError);
  }
  d.writeTable(0x9000, [{ addr: 1, len: 2, id: 3, flags: 4 }]);
  assert.deepEqual(d.readTableDesc(0x9000, 0), { addr: 1n, len: 2, id: 3, flags: 4 });
});

test("AVAIL/USED bits per wrap counter (§2.8.1)", () => {
  assert.equal(mockAvailBits(1), A);
  assert.equal(mockAvailBits(0), U);
  assert.equal(mockUsedBits(1), A | U);
  assert.equal(mockUsedBits(0), 0);
  for (const w of [0, 1]) {
    assert.ok(isPackedDescAvail(mockAvailBits(w), w));
    assert.ok(!isPackedDescAvail(mockAvailBits(w), w ^ 1));
    assert.ok(isPackedDescUsed(mockUsedBits(w), w));
    assert.ok(!isPackedDescUsed(mockAvailBits(w), w));
  }
});

test("buildChain writes consecutive slots, holds the first flags back; publish stores them", () => {
  const m = mem();
  const d = new MockPackedQueue(m, 8, 0x1000);
  const c = d.buildChain([
    { addr: 0x9000, len: 2 },
    { addr: 0x9100, len: 3, writable: true },
    { addr: 0x9200, len: 4, writable: true },
  ]);
  assert.deepEqual(c, { id: 0, first: 0, count: 3, headFlags: A | N });
  assert.equal(d.readDesc(0).flags, 0, "not yet available");
  assert.deepEqual(d.readDesc(0), { addr: 0x9000n, len: 2, id: 0, flags: 0 });
  assert.deepEqual(d.readDesc(1), { addr: 0x9100n, len: 3, id: 0, flags: A | N | W });
  assert.deepEqual(d.readDesc(2), { addr: 0x9200n, len: 4, id: 0, flags: A | W });
  assert.equal(d.nextAvail, 3);
  assert.equal(d.notificationData, 3 | (1 << 15));
  d.publish(c);
  assert.equal(d.readDesc(0).flags, A | N);
  // The next request gets the lowest free ID.
  assert.equal(d.addChain([{ addr: 1, len: 1 }]), 1);
  assert.deepEqual(d.outstandingIds, [0, 1]);
});

test("the cursor wraps at the ring end and the wrap counter flips (size 3)", () => {
  const m = mem();
  const d = new MockPackedQueue(m, 3, 0x1000);
  d.addChain([{ addr: 1, len: 1 }]); // slot 0
  d.addChain([
    { addr: 2, len: 2 },
    { addr: 3, len: 3 },
    { addr: 4, len: 4, writable: true },
  ]); // slots 1, 2 (wrap 1), 0 (wrap 0): overwrites slot 0 (a test's choice)
  assert.equal(d.readDesc(1).flags, A | N);
  assert.equal(d.readDesc(2).flags, A | N);
  assert.deepEqual(d.readDesc(0), { addr: 4n, len: 4, id: 1, flags: U | W });
  assert.equal(d.nextAvail, 1);
  assert.equal(d.availWrap, 0);
  assert.equal(d.notificationData, 1);
  d.seekAvail(2, 1);
  assert.equal(d.notificationData, 2 | (1 << 15));
  assert.throws(() => d.seekAvail(3, 0), RangeError);
});

test("publish(...chains) makes a batch available with the first request's flags stored last", () => {
  const m = mem();
  const d = new MockPackedQueue(m, 4, 0x1000);
  const a = d.buildChain([{ addr: 1, len: 1 }]);
  const b = d.buildChain([
    { addr: 2, len: 2 },
    { addr: 3, len: 3 },
  ]);
  assert.deepEqual([a.first, b.first], [0, 1]);
  assert.equal(d.readDesc(0).flags, 0);
  assert.equal(d.readDesc(1).flags, 0);
  assert.equal(d.readDesc(2).flags, A, "non-first descriptors are written");
  d.publish(a, b);
  assert.deepEqual(
    [0, 1, 2].map((i) => d.readDesc(i).flags),
    [A, A | N, A],
  );
  assert.equal(d.readDesc(2).id, b.id);
});

test("indirect tables: WRITE-only entries, INDIRECT descriptor, direct prefix, extra flags, nesting", () => {
  const m = mem();
  const d = new MockPackedQueue(m, 8, 0x1000);
  const bufs: MockBuffer[] = [
    { addr: 0xa000, len: 16 },
    { addr: 0xa100, len: 8 },
    { addr: 0xa200, len: 1, writable: true },
  ];
  const c = d.buildChain(bufs, { indirectTable: 0xc000 });
  assert.equal(c.count, 1);
  assert.equal(c.headFlags, A | VIRTQ_DESC_F_INDIRECT);
  assert.deepEqual(d.readDesc(0), { addr: 0xc000n, len: 48, id: 0, flags: 0 });
  assert.deepEqual(
    [0, 1, 2].map((k) => d.readTableDesc(0xc000, k)),
    [
      { addr: 0xa000n, len: 16, id: 0, flags: 0 },
      { addr: 0xa100n, len: 8, id: 0, flags: 0 },
      { addr: 0xa200n, len: 1, id: 0, flags: W },
    ],
  );
  // A direct descriptor before the INDIRECT one (a NEXT list with INDIRECT: malformed), WRITE on it, nesting.
  const e = d.buildChain(bufs, {
    indirectTable: 0xd000,
    directCount: 1,
    indirectFlags: W,
    tableFlags: VIRTQ_DESC_F_INDIRECT,
  });
  assert.deepEqual(e, { id: 1, first: 1, count: 2, headFlags: A | N });
  assert.deepEqual(d.readDesc(2), {
    addr: 0xd000n,
    len: 32,
    id: 1,
    flags: A | VIRTQ_DESC_F_INDIRECT | W,
  });
  assert.equal(d.readTableDesc(0xd000, 0).flags, VIRTQ_DESC_F_INDIRECT);
  assert.equal(d.readTableDesc(0xd000, 1).flags, VIRTQ_DESC_F_INDIRECT | W);
  assert.deepEqual(packedTableEntries([{ addr: 5, len: 6, writable: true }], N), [
    { addr: 5, len: 6, flags: W | N },
  ]);
  assert.throws(() => d.buildChain([], {}), RangeError);
});

test("malformed requests on purpose: wrong wrap bits, any IDs, runaway lists, zero length, write before read", () => {
  const m = mem();
  const d = new MockPackedQueue(m, 4, 0x1000);
  // AVAIL/USED for wrap 0 while the ring is at wrap 1: the device must not see it as available.
  const c = d.buildChain([{ addr: 1, len: 1 }], { wrap: 0 });
  d.publish(c);
  assert.equal(d.readDesc(0).flags, U);
  assert.equal(isPackedDescAvail(d.readDesc(0).flags, 1), false);
  // Duplicate and out-of-range IDs, another ID in the non-last descriptors, extra flags.
  assert.equal(d.addChain([{ addr: 2, len: 2 }], { id: 0 }), 0);
  const x = d.buildChain(
    [
      { addr: 3, len: 0, writable: true },
      { addr: 4, len: 4 },
    ],
    { id: 0xffff, otherId: 7, extraFlags: VIRTQ_DESC_F_INDIRECT, unterminated: true },
  );
  d.publish(x);
  assert.deepEqual(d.readDesc(2), {
    addr: 3n,
    len: 0,
    id: 7,
    flags: A | N | W | VIRTQ_DESC_F_INDIRECT,
  });
  assert.deepEqual(d.readDesc(3), {
    addr: 4n,
    len: 4,
    id: 0xffff,
    flags: A | N | VIRTQ_DESC_F_INDIRECT,
  });
  assert.deepEqual(d.outstandingIds, [0, 0xffff]);
  // A list longer than the ring: writes go round and the cursor ends one lap on.
  const long = Array.from({ length: 6 }, (_, k) => ({ addr: 0x100 * k, len: 1 }));
  const l = d.buildChain(long, { id: 1, unterminated: true });
  assert.equal(l.count, 6);
  assert.equal(d.nextAvail, 2);
  assert.equal(d.availWrap, 1);
  assert.equal(d.readDesc(2).flags, U | N, "slot 2 written in this lap (wrap 0)");
  assert.equal(d.readDesc(1).flags, A | N, "slot 1 written again in the next lap (wrap 1)");
});

test("used descriptors: popUsed skips each request's slots, frees its ID, flips the used wrap counter", () => {
  const m = mem();
  const d = new MockPackedQueue(m, 3, 0x1000);
  assert.equal(d.popUsed(), null);
  const a = d.addChain([
    { addr: 1, len: 1 },
    { addr: 2, len: 8, writable: true },
  ]); // slots 0-1
  const b = d.addChain([{ addr: 3, len: 3 }]); // slot 2
  assert.equal(d.isUsed(0), false);
  markUsed(m, d, 0, b, 0, 1); // out of order: b first, skips 1
  markUsed(m, d, 1, a, 5, 1); // then a, skips 2 (to slot 0 of wrap 0)
  assert.deepEqual(d.popUsed(), { id: b, len: 0, flags: A | U });
  assert.equal(d.lastUsed, 1);
  assert.deepEqual(d.popUsed(), { id: a, len: 5, flags: A | U | W });
  assert.equal(d.lastUsed, 0);
  assert.equal(d.usedWrap, 0);
  assert.deepEqual(d.outstandingIds, []);
  assert.equal(d.popUsed(), null, "slot 0 holds wrap-1 used bits: stale for wrap 0");
  assert.equal(d.isUsed(0, 1), true);
  // An ID the mock does not know skips one slot.
  markUsed(m, d, 0, 9, 0, 0);
  markUsed(m, d, 1, 2, 0, 0);
  assert.deepEqual(
    d.drainUsed().map((u) => u.id),
    [9, 2],
  );
  assert.equal(d.lastUsed, 2);
  assert.deepEqual(d.usedDesc(1), { id: 2, len: 0, flags: 0 });
  d.seekUsed(0, 1);
  assert.equal(d.lastUsed, 0);
  assert.equal(d.usedWrap, 1);
  assert.throws(() => d.seekUsed(3, 1), RangeError);
});

test("drainUsed takes what is marked used for the expected wrap counter, at most a ring's worth", () => {
  const m = mem();
  const d = new MockPackedQueue(m, 2, 0x1000);
  for (let w = 1; w >= 0; w--) for (let s = 0; s < 2; s++) markUsed(m, d, s, 5, 0, w);
  // Both slots carry wrap-0 used bits now; with wrap 1 expected, none is used.
  assert.deepEqual(d.drainUsed(), []);
  d.seekUsed(0, 0);
  assert.equal(d.drainUsed().length, 2);
});

test("event suppression: the driver structure is set, both are read back", () => {
  const m = mem();
  const d = new MockPackedQueue(m, 4, 0x1000);
  assert.deepEqual(d.driverEvent, { flags: 0, off: 0, wrap: 0 });
  d.setDriverEvent(RING_EVENT_FLAGS_DESC, 3, 1);
  assert.equal(m.readU16(d.driverAddr), 3 | (1 << 15));
  assert.equal(m.readU16(d.driverAddr + 2), RING_EVENT_FLAGS_DESC);
  assert.deepEqual(d.driverEvent, { flags: RING_EVENT_FLAGS_DESC, off: 3, wrap: 1 });
  d.setDriverEvent(0xffff, 0x7fff, 0);
  assert.deepEqual(d.driverEvent, { flags: 0xffff, off: 0x7fff, wrap: 0 }, "reserved values too");
  m.writeU16(d.deviceAddr, 2 | (1 << 15));
  m.writeU16(d.deviceAddr + 2, RING_EVENT_FLAGS_DISABLE);
  assert.deepEqual(d.deviceEvent, { flags: RING_EVENT_FLAGS_DISABLE, off: 2, wrap: 1 });
  writeEventAt(m, 0x9000, 1, 5, 1);
  assert.deepEqual(readEventAt(m, 0x9000), { flags: 1, off: 5, wrap: 1 });
});

test("well-formed requests from the mock are byte-identical to PackedDriverQueue's", () => {
  const size = 7;
  const arena = 0x20000;
  const reqs: MockBuffer[][] = [
    [{ addr: 0x8000, len: 16 }],
    [
      { addr: 0x8100, len: 16 },
      { addr: 0x8200, len: 64, writable: true },
    ],
    [
      { addr: 0x8300, len: 4 },
      { addr: 0x8400, len: 4, writable: true },
      { addr: 0x8500, len: 4, writable: true },
    ],
  ];
  for (const indirect of [false, true]) {
    const m1 = mem();
    const m2 = mem();
    const l = packedRingLayout(size, 0x1000);
    const q = new PackedDriverQueue<number>(m1, {
      ...l,
      ...(indirect ? { indirect: true, indirectArena: { addr: arena, entriesPerChain: 3 } } : {}),
    });
    const d = new MockPackedQueue(m2, size, 0x1000);
    const add = (r: MockBuffer[], id: number): void => {
      const seg = (b: MockBuffer) => ({ addr: b.addr, len: b.len });
      q.add(r.filter((b) => !b.writable).map(seg), r.filter((b) => b.writable).map(seg), id);
      const table = indirect && r.length > 1 ? { indirectTable: arena + id * 3 * 16 } : {};
      d.addChain(r, { id, ...table });
    };
    reqs.forEach((r, id) => add(r, id));
    // The device uses all three in order (same used descriptors in both memories); both drivers take them.
    let slot = 0;
    for (const id of [0, 1, 2]) {
      for (const mm of [m1, m2]) markUsed(mm, d, slot, id, 0, 1);
      slot += indirect && id > 0 ? 1 : id + 1;
    }
    assert.deepEqual(
      [0, 1, 2].map(() => q.getUsed()?.token),
      [0, 1, 2],
    );
    assert.deepEqual(
      d.drainUsed().map((u) => u.id),
      [0, 1, 2],
    );
    assert.equal(d.lastUsed, slot);
    // The driver reuses the last ID freed (2); the direct list runs across the ring end (slots 6, 0, 1).
    add(reqs[2]!, 2);
    const ring = (mm: GuestMemory) => {
      const b = new Uint8Array(l.totalBytes + (indirect ? 3 * 3 * 16 : 0));
      mm.read(0x1000, b.subarray(0, l.totalBytes));
      if (indirect) mm.read(arena, b.subarray(l.totalBytes));
      return b;
    };
    assert.deepEqual(ring(m2), ring(m1), `indirect ${indirect}`);
    assert.equal(d.notificationData, q.notificationData);
  }
});

import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { PackedDriverQueue, indirectArenaBytes } from "./packed-driver-queue.ts";
import type { PackedDriverQueueConfig, Segment } from "./packed-driver-queue.ts";
import { packedRingLayout, type PackedRingLayout } from "./packed-layout.ts";
import { GuestMemory } from "../memory/guest-memory.ts";
import { ErrorCode, isVirtioError } from "../errors.ts";
import type { ErrorCodeValue, VirtioError } from "../errors.ts";
import {
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_USED,
  isPackedDescAvail,
} from "../spec/packed-virtqueue.ts";
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from "../spec/virtqueue.ts";

const RING_BASE = 0x1000;
const ARENA = 0x80000;
const BUF = 0xc0000;
const MEM_SIZE = 1 << 20;

interface PeerSeg {
  addr: number;
  len: number;
  write: boolean;
}

interface PeerChain {
  id: number;
  /** Ring slots the request occupies. */
  count: number;
  segs: PeerSeg[];
  indirect: boolean;
  /** Writable bytes. */
  writable: number;
}

interface RawDesc {
  addr: number;
  len: number;
  id: number;
  flags: number;
}

/**
 * Plays the device by reading and writing the packed ring directly (trusting
 * the driver: a test fixture, not a device implementation). Its own wrap
 * counters follow §2.8.1.
 */
class PackedPeer {
  nextAvail = 0;
  availWrap = 1;
  nextUsed = 0;
  usedWrap = 1;
  readonly mem: GuestMemory;
  readonly l: PackedRingLayout;
  constructor(mem: GuestMemory, l: PackedRingLayout) {
    this.mem = mem;
    this.l = l;
  }
  flags(i: number): number {
    return this.mem.atomicLoadU16(this.l.descAddr + 16 * i + 14);
  }
  desc(table: number, i: number): RawDesc {
    const a = table + 16 * i;
    return {
      addr: Number(this.mem.readU64(a)),
      len: this.mem.readU32(a + 8),
      id: this.mem.readU16(a + 12),
      flags: this.mem.readU16(a + 14),
    };
  }
  slot(i: number): RawDesc {
    return this.desc(this.l.descAddr, i);
  }
  /** True if the next slot holds an available descriptor. */
  hasAvail(): boolean {
    return isPackedDescAvail(this.flags(this.nextAvail), this.availWrap);
  }
  /** Takes the next available request: the list's slots (or its indirect table). */
  pop(): PeerChain | null {
    if (!this.hasAvail()) return null;
    const segs: PeerSeg[] = [];
    let count = 0;
    let id = -1;
    let indirect = false;
    for (; count < this.l.size;) {
      const d = this.slot(this.nextAvail);
      count++;
      if (++this.nextAvail === this.l.size) {
        this.nextAvail = 0;
        this.availWrap ^= 1;
      }
      if (d.flags & VIRTQ_DESC_F_INDIRECT) {
        indirect = true;
        for (let k = 0; k < d.len / 16; k++) {
          const e = this.desc(d.addr, k);
          segs.push({ addr: e.addr, len: e.len, write: (e.flags & VIRTQ_DESC_F_WRITE) !== 0 });
        }
      } else {
        segs.push({ addr: d.addr, len: d.len, write: (d.flags & VIRTQ_DESC_F_WRITE) !== 0 });
      }
      if (!(d.flags & VIRTQ_DESC_F_NEXT)) {
        id = d.id;
        break;
      }
    }
    const writable = segs.filter((s) => s.write).reduce((a, s) => a + s.len, 0);
    return { id, count, segs, indirect, writable };
  }
  /**
   * Writes a used descriptor at the next used slot (id and len first, flags
   * last, WRITE when len > 0 unless `flags` is given) and skips `count` slots.
   */
  pushUsed(id: number, len: number, count: number, flags?: number): void {
    const a = this.l.descAddr + 16 * this.nextUsed;
    this.mem.writeU32(a + 8, len);
    this.mem.writeU16(a + 12, id);
    const bits = this.usedWrap ? VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED : 0;
    this.mem.atomicStoreU16(a + 14, bits | (flags ?? (len > 0 ? VIRTQ_DESC_F_WRITE : 0)));
    this.nextUsed += count;
    if (this.nextUsed >= this.l.size) {
      this.nextUsed -= this.l.size;
      this.usedWrap ^= 1;
    }
  }
  complete(c: PeerChain, len = c.writable): void {
    this.pushUsed(c.id, len, c.count);
  }
  /** Sets the Device Event Suppression structure. */
  setEvent(flags: number, off = 0, wrap = 0): void {
    this.mem.atomicStoreU16(this.l.deviceAddr, off | (wrap << 15));
    this.mem.atomicStoreU16(this.l.deviceAddr + 2, flags);
  }
  /** The Driver Event Suppression structure. */
  get driverEvent(): { flags: number; off: number; wrap: number } {
    const d = this.mem.atomicLoadU16(this.l.driverAddr);
    return { flags: this.mem.atomicLoadU16(this.l.driverAddr + 2), off: d & 0x7fff, wrap: d >> 15 };
  }
}

interface Setup {
  q: PackedDriverQueue<number>;
  dev: PackedPeer;
  mem: GuestMemory;
  broken: VirtioError[];
}

function setup(size: number, opts: Partial<PackedDriverQueueConfig> = {}): Setup {
  const mem = GuestMemory.createShared([{ guestPhysAddr: 0, size: MEM_SIZE }]);
  const l = packedRingLayout(size, RING_BASE);
  const broken: VirtioError[] = [];
  const q = new PackedDriverQueue<number>(mem, { ...l, ...opts, onBroken: (e) => broken.push(e) });
  return { q, dev: new PackedPeer(mem, l), mem, broken };
}

const withIndirect = (entriesPerChain: number): Partial<PackedDriverQueueConfig> => ({
  indirect: true,
  indirectArena: { addr: ARENA, entriesPerChain },
});

/** Non-zero bytes in the ring and both event structures. */
function ringNonZero(mem: GuestMemory, l: PackedRingLayout): number {
  const b = new Uint8Array(l.totalBytes);
  mem.read(l.descAddr, b);
  return b.filter((x) => x !== 0).length;
}

const seg = (i: number, len = 64): Segment => ({ addr: BUF + i * 0x100, len });
const segs = (n: number, len = 8): Segment[] => Array.from({ length: n }, (_, k) => seg(k, len));

test("packedRingLayout places the parts back to back, aligned, for any size", () => {
  for (const size of [1, 3, 5, 256, 32768]) {
    const l = packedRingLayout(size, 0x10000);
    assert.equal(l.descAddr, 0x10000);
    assert.equal(l.driverAddr, 0x10000 + 16 * size);
    assert.equal(l.deviceAddr, l.driverAddr + 4);
    assert.equal(l.totalBytes, 16 * size + 8);
  }
  for (const size of [0, 32769, 2.5]) assert.throws(() => packedRingLayout(size, 0), RangeError);
  assert.throws(() => packedRingLayout(4, 8), RangeError);
});

test("constructor accepts any size in 1..32768 and rejects API misuse with RangeError", () => {
  const mem = GuestMemory.createShared([{ guestPhysAddr: 0, size: MEM_SIZE }]);
  for (const size of [1, 3, 5, 100, 256, 32768]) {
    const q = new PackedDriverQueue(mem, packedRingLayout(size, RING_BASE));
    assert.equal(q.size, size);
    assert.equal(q.numFree, size);
  }
  const l = packedRingLayout(8, RING_BASE);
  for (const size of [0, 32769, 1.5, -1]) {
    assert.throws(() => new PackedDriverQueue(mem, { ...l, size }), RangeError);
  }
  assert.throws(() => new PackedDriverQueue(mem, { ...l, descAddr: l.descAddr + 8 }), RangeError);
  assert.throws(
    () => new PackedDriverQueue(mem, { ...l, driverAddr: l.driverAddr + 2 }),
    RangeError,
  );
  assert.throws(
    () => new PackedDriverQueue(mem, { ...l, deviceAddr: l.deviceAddr + 1 }),
    RangeError,
  );
  assert.throws(() => new PackedDriverQueue(mem, { ...l, deviceAddr: MEM_SIZE - 2 }), RangeError);
  assert.throws(() => new PackedDriverQueue(mem, { ...l, descAddr: MEM_SIZE - 64 }), RangeError);
  assert.throws(() => new PackedDriverQueue(mem, { ...l, indirect: true }), RangeError);
  for (const entriesPerChain of [1, 9, 2.5]) {
    assert.throws(
      () => new PackedDriverQueue(mem, { ...l, ...withIndirect(entriesPerChain) }),
      RangeError,
    );
  }
  assert.throws(
    () =>
      new PackedDriverQueue(mem, {
        ...l,
        indirect: true,
        indirectArena: { addr: MEM_SIZE - 16, entriesPerChain: 4 },
      }),
    RangeError,
  );
  assert.equal(indirectArenaBytes(8, 4), 512);
});

test("constructor zeroes the ring and both event suppression structures", () => {
  const mem = GuestMemory.createShared([{ guestPhysAddr: 0, size: MEM_SIZE }]);
  const l = packedRingLayout(5, RING_BASE);
  mem.fill(RING_BASE - 16, l.totalBytes + 32, 0xaa);
  const q = new PackedDriverQueue(mem, l);
  assert.equal(ringNonZero(mem, l), 0);
  assert.equal(mem.readU8(RING_BASE - 1), 0xaa, "nothing before the ring touched");
  assert.equal(mem.readU8(RING_BASE + l.totalBytes), 0xaa, "nothing after the ring touched");
  assert.equal(q.broken, null);
  assert.equal(q.indirect, false);
  assert.equal(q.notificationData, 1 << 15, "next_off 0, next_wrap 1");
});

test("add writes a list in consecutive slots: readable first, NEXT, AVAIL/USED for wrap 1, id in each", () => {
  const { q, dev } = setup(8);
  assert.equal(q.add([seg(0, 16), seg(1, 32)], [seg(2, 512)], 7), true);
  assert.equal(q.numFree, 5);
  assert.equal(q.numOutstanding, 1);
  const avail = VIRTQ_DESC_F_AVAIL;
  assert.deepEqual(dev.slot(0), { addr: BUF, len: 16, id: 0, flags: avail | VIRTQ_DESC_F_NEXT });
  assert.deepEqual(dev.slot(1), {
    addr: BUF + 0x100,
    len: 32,
    id: 0,
    flags: avail | VIRTQ_DESC_F_NEXT,
  });
  assert.deepEqual(dev.slot(2), {
    addr: BUF + 0x200,
    len: 512,
    id: 0,
    flags: avail | VIRTQ_DESC_F_WRITE,
  });
  assert.equal(dev.slot(3).flags, 0, "nothing beyond");
  const c = dev.pop()!;
  assert.deepEqual(c, {
    id: 0,
    count: 3,
    indirect: false,
    writable: 512,
    segs: [
      { addr: BUF, len: 16, write: false },
      { addr: BUF + 0x100, len: 32, write: false },
      { addr: BUF + 0x200, len: 512, write: true },
    ],
  });
  assert.equal(dev.pop(), null);
  assert.equal(q.notificationData, 3 | (1 << 15));
  dev.complete(c, 100);
  assert.equal(q.hasUsed(), true);
  assert.deepEqual(q.getUsed(), { token: 7, len: 100 });
  assert.equal(q.hasUsed(), false);
  assert.equal(q.numFree, 8);
});

test("Buffer IDs are independent of ring slots: exhaust, refuse, free out of order, reuse", () => {
  const { q, dev } = setup(4);
  for (let t = 0; t < 4; t++) assert.equal(q.add([seg(t)], [], t), true);
  assert.equal(q.numFree, 0);
  assert.equal(q.add([seg(9)], [], 9), false, "no free slot");
  assert.equal(q.numOutstanding, 4);
  const chains = [0, 1, 2, 3].map(() => dev.pop()!);
  assert.deepEqual(
    chains.map((c) => c.id),
    [0, 1, 2, 3],
  );
  // Complete IDs 2 then 0: the device writes them in slots 0 and 1.
  dev.complete(chains[2]!, 0);
  dev.complete(chains[0]!, 0);
  assert.deepEqual(q.getUsed(), { token: 2, len: 0 });
  assert.deepEqual(q.getUsed(), { token: 0, len: 0 });
  assert.equal(q.getUsed(), null);
  assert.equal(q.numFree, 2);
  // The next request goes to slots 0..1 (wrap 0) and reuses the last ID freed (0), then 2.
  assert.equal(q.add([seg(5)], [seg(6)], 5), true);
  assert.equal(q.numFree, 0);
  assert.equal(q.add([seg(7)], [], 7), false);
  const c = dev.pop()!;
  assert.equal(c.id, 0);
  assert.equal(c.count, 2);
  assert.equal(dev.slot(0).flags, VIRTQ_DESC_F_USED | VIRTQ_DESC_F_NEXT, "wrap 0: AVAIL 0, USED 1");
  // A list longer than the free slots is refused; after completing, every slot is free again.
  for (const ch of [chains[3]!, chains[1]!, c]) dev.complete(ch, ch.writable);
  assert.deepEqual([q.getUsed()!.token, q.getUsed()!.token, q.getUsed()!.token], [3, 1, 5]);
  assert.equal(q.numFree, 4);
  assert.equal(q.add([seg(0), seg(1)], [seg(2), seg(3)], 9), true);
  const d = dev.pop()!;
  assert.equal(d.segs.length, 4);
  assert.equal(d.id, 0, "most recently freed ID first");
});

test("a list across the ring end flips the wrap bits in the slots after it", () => {
  const { q, dev } = setup(5);
  q.add(segs(3), [], 0);
  dev.complete(dev.pop()!, 0);
  assert.equal(q.getUsed()!.token, 0);
  // Next list: slots 3, 4 (wrap 1) and 0 (wrap 0).
  assert.equal(q.add(segs(2), segs(1), 1), true);
  assert.equal(dev.slot(3).flags, VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_NEXT);
  assert.equal(dev.slot(4).flags, VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_NEXT);
  assert.equal(dev.slot(0).flags, VIRTQ_DESC_F_USED | VIRTQ_DESC_F_WRITE);
  assert.equal(q.notificationData, 1, "next_off 1, next_wrap 0");
  const c = dev.pop()!;
  assert.equal(c.count, 3);
  assert.equal(dev.nextAvail, 1);
  assert.equal(dev.availWrap, 0);
  dev.complete(c, 8);
  assert.deepEqual(q.getUsed(), { token: 1, len: 8 });
  assert.equal(dev.nextUsed, 1);
  assert.equal(dev.usedWrap, 0);
  assert.equal(q.numFree, 5);
});

test("used descriptors written out of order are skipped by each list's slot count", () => {
  const { q, dev } = setup(7);
  q.add(segs(1), segs(2), 10); // 3 slots
  q.add(segs(1), [], 11); // 1 slot
  q.add(segs(2), segs(1), 12); // 3 slots
  assert.equal(q.numFree, 0);
  const [a, b, c] = [dev.pop()!, dev.pop()!, dev.pop()!];
  // Completion order c, a, b: used slots 0 (skip 3), 3 (skip 3), 6 (skip 1).
  dev.complete(c, 8);
  dev.complete(a, 16);
  dev.complete(b, 0);
  assert.deepEqual(q.getUsed(), { token: 12, len: 8 });
  assert.equal(q.numFree, 3);
  // The freed slots are refilled while two requests are still outstanding.
  assert.equal(q.add(segs(3), [], 13), true);
  assert.deepEqual(q.getUsed(), { token: 10, len: 16 });
  assert.deepEqual(q.getUsed(), { token: 11, len: 0 });
  assert.equal(q.getUsed(), null);
  const d = dev.pop()!;
  assert.equal(d.count, 3);
  dev.complete(d, 0);
  assert.deepEqual(q.getUsed(), { token: 13, len: 0 });
  assert.equal(q.numFree, 7);
});

/** Completion order for round `r`: as popped, reversed, or odd positions first. */
function scramble<X>(xs: X[], r: number): X[] {
  if (r % 3 === 0) return xs;
  if (r % 3 === 1) return [...xs].reverse();
  return [...xs.filter((_, i) => i % 2 === 1), ...xs.filter((_, i) => i % 2 === 0)];
}

/**
 * Runs `rounds` of: add until the slots run out, pop all, complete in a
 * scrambled order, drain. Returns the requests and the ring slots they took.
 */
function laps(
  size: number,
  rounds: number,
  opts: Partial<PackedDriverQueueConfig> = {},
): { done: number; slots: number } {
  const { q, dev } = setup(size, opts);
  let token = 0;
  let done = 0;
  let slots = 0;
  const lens = new Map<number, number>();
  for (let r = 0; r < rounds; r++) {
    for (let n = 1 + ((r * 7) % size); n <= q.numFree; n = 1 + ((token * 5) % size)) {
      const nr = 1 + (token % n);
      const before = q.numFree;
      assert.equal(q.add(segs(nr), segs(n - nr, 4), token), true);
      slots += before - q.numFree;
      lens.set(token, ((n - nr) * 4) >> 1);
      token++;
    }
    const popped: PeerChain[] = [];
    for (let c = dev.pop(); c !== null; c = dev.pop()) popped.push(c);
    for (const c of scramble(popped, r)) dev.complete(c, c.writable >> 1);
    for (let u = q.getUsed(); u !== null; u = q.getUsed()) {
      assert.equal(u.len, lens.get(u.token), `token ${u.token}`);
      lens.delete(u.token);
      done++;
    }
    assert.equal(q.broken, null);
    assert.equal(q.numFree, size);
  }
  assert.equal(lens.size, 0);
  return { done, slots };
}

test("many laps, wrap counters flipping, sizes 1, 3, 5, 256 (not only powers of two)", () => {
  for (const size of [1, 2, 3, 5, 7, 256]) {
    const { done, slots } = laps(size, size === 256 ? 60 : 200);
    assert.ok(done >= 100, `size ${size}: ${done} requests`);
    assert.ok(slots >= 20 * size, `size ${size}: ${slots / size} laps`);
  }
  for (const size of [3, 5, 256]) {
    const { slots } = laps(size, 100, withIndirect(Math.min(size, 4)));
    assert.ok(slots >= 10 * size, `size ${size} indirect: ${slots / size} laps`);
  }
});

test("indirect: one slot and a pvirtq_desc table for requests that fit, direct otherwise", () => {
  const { q, dev } = setup(5, withIndirect(3));
  assert.equal(q.indirect, true);
  assert.equal(q.add([seg(0)], [], 0), true); // one segment: direct
  assert.equal(q.numFree, 4);
  assert.equal(dev.pop()!.indirect, false);
  assert.equal(q.add([seg(1, 16)], [seg(2, 100), seg(3, 1)], 1), true); // three: indirect
  assert.equal(q.numFree, 3);
  const head = dev.slot(1);
  assert.equal(head.flags, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_AVAIL, "no NEXT, no WRITE");
  assert.equal(head.len, 48);
  assert.equal(head.id, 1);
  assert.equal(head.addr, ARENA + 1 * 3 * 16, "the table is the arena slot of the Buffer ID");
  assert.deepEqual(
    [0, 1, 2].map((k) => dev.desc(head.addr, k)),
    [
      { addr: BUF + 0x100, len: 16, id: 0, flags: 0 },
      { addr: BUF + 0x200, len: 100, id: 0, flags: VIRTQ_DESC_F_WRITE },
      { addr: BUF + 0x300, len: 1, id: 0, flags: VIRTQ_DESC_F_WRITE },
    ],
  );
  const c = dev.pop()!;
  assert.equal(c.indirect, true);
  assert.equal(c.count, 1);
  // Four segments exceed entriesPerChain: a direct list of 4 slots (only 3 free).
  assert.equal(q.add(segs(4), [], 2), false);
  assert.equal(q.add(segs(2), [], 3), true);
  assert.equal(q.add(segs(2), [], 4), true);
  assert.equal(q.add(segs(2), [], 5), true);
  assert.equal(q.numFree, 0);
  // The used length is checked against the table's writable bytes (101).
  dev.pushUsed(c.id, 101, 1);
  assert.deepEqual(q.getUsed(), { token: 1, len: 101 });
});

test("add rejects API misuse and changes nothing", () => {
  const { q, dev } = setup(3);
  const cases: [readonly Segment[], readonly Segment[]][] = [
    [[], []],
    [segs(2), segs(2)], // 4 > size
    [[seg(0, 0)], []],
    [[{ addr: MEM_SIZE - 8, len: 16 }], []],
    [[{ addr: -1, len: 16 }], []],
    [[{ addr: 0, len: 2 ** 32 }], []],
    [[{ addr: 0, len: 1.5 }], []],
  ];
  for (const [r, w] of cases) assert.throws(() => q.add(r, w, 0), RangeError);
  assert.throws(() => q.add(null as unknown as Segment[], [], 0), TypeError);
  assert.equal(q.numFree, 3);
  assert.equal(q.numOutstanding, 0);
  assert.equal(dev.hasAvail(), false);
  assert.equal(ringNonZero(dev.mem, dev.l), 0);
});

test("stage writes a batch whose first flags are stored last; publish makes it available at once", () => {
  const { q, dev } = setup(5);
  assert.equal(q.stage(segs(2), [], 0), true); // slots 0, 1
  assert.equal(q.stage(segs(2), [], 1), true); // slots 2, 3
  assert.equal(q.stage(segs(1), [], 2), true); // slot 4
  assert.equal(q.numFree, 0);
  assert.equal(q.numOutstanding, 3);
  assert.equal(dev.slot(0).flags, 0, "the batch's first flags are held back");
  assert.equal(dev.slot(1).flags, VIRTQ_DESC_F_AVAIL, "everything else is written");
  assert.equal(dev.slot(2).flags, VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_NEXT);
  assert.equal(dev.slot(4).flags, VIRTQ_DESC_F_AVAIL);
  assert.equal(dev.hasAvail(), false);
  assert.equal(q.notificationData, 1 << 15, "nothing made available yet");
  q.publish();
  assert.equal(dev.slot(0).flags, VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_NEXT);
  assert.equal(q.notificationData, 0, "next_off 0, next_wrap 0 after a full lap");
  assert.deepEqual([dev.pop()!.id, dev.pop()!.id, dev.pop()!.id], [0, 1, 2]);
  q.publish(); // nothing staged: no effect
  assert.equal(dev.pop(), null);
  // kickNeeded publishes too.
  const s = setup(4);
  s.q.stage(segs(1), [], 0);
  assert.equal(s.dev.hasAvail(), false);
  assert.equal(s.q.kickNeeded(), true);
  assert.equal(s.dev.hasAvail(), true);
});

test("kickNeeded follows the device's RING_EVENT_FLAGS_ENABLE / DISABLE", () => {
  const { q, dev } = setup(8);
  assert.equal(q.kickNeeded(), false, "nothing added");
  q.add(segs(1), [], 0);
  assert.equal(q.kickNeeded(), true);
  assert.equal(q.kickNeeded(), false, "nothing added since");
  dev.setEvent(RING_EVENT_FLAGS_DISABLE);
  q.add(segs(1), [], 1);
  assert.equal(q.kickNeeded(), false);
  dev.setEvent(RING_EVENT_FLAGS_DISABLE | 0x4); // reserved bits do not change the flags
  q.add(segs(1), [], 2);
  assert.equal(q.kickNeeded(), false);
  // DESC without EVENT_IDX is not valid: read as enabled. Reserved value 3 likewise.
  for (const flags of [RING_EVENT_FLAGS_DESC, 3]) {
    dev.setEvent(flags, 3, 0);
    q.add(segs(1), [], 3);
    assert.equal(q.kickNeeded(), true, `flags ${flags}`);
  }
});

test("kickNeeded with EVENT_IDX: RING_EVENT_FLAGS_DESC offset and wrap, across the ring end", () => {
  const { q, dev } = setup(4, { eventIdx: true });
  const cycle = (n: number, token: number): void => {
    q.add(segs(n), [], token);
  };
  dev.setEvent(RING_EVENT_FLAGS_DESC, 2, 1); // "kick when slot 2 of lap wrap=1 is made available"
  cycle(1, 0); // slot 0
  assert.equal(q.kickNeeded(), false);
  cycle(1, 1); // slot 1
  assert.equal(q.kickNeeded(), false);
  cycle(1, 2); // slot 2
  assert.equal(q.kickNeeded(), true);
  for (let i = 0; i < 3; i++) dev.complete(dev.pop()!, 0);
  while (q.getUsed() !== null);
  // A two-slot list on slots 3 (wrap 1) and 0 (wrap 0): the event at slot 0 of wrap 0 is crossed.
  dev.setEvent(RING_EVENT_FLAGS_DESC, 0, 0);
  cycle(2, 3);
  assert.equal(q.kickNeeded(), true);
  // Event at slot 3 of the previous lap (wrap 1): passed before, not in the new window (slot 1 only).
  dev.setEvent(RING_EVENT_FLAGS_DESC, 3, 1);
  dev.complete(dev.pop()!, 0);
  while (q.getUsed() !== null);
  cycle(1, 4); // slot 1 (wrap 0)
  assert.equal(q.kickNeeded(), false);
  // Event at slot 3 of the current lap (wrap 0), two batches staged up to it.
  dev.setEvent(RING_EVENT_FLAGS_DESC, 3, 0);
  cycle(1, 5); // slot 2
  cycle(1, 6); // slot 3, the last: the wrap counter flips to 1, the event (wrap 0) is now the previous lap's
  assert.equal(q.kickNeeded(), true, "two requests crossing the event kick once");
  assert.equal(q.kickNeeded(), false);
});

test("kickNeeded with EVENT_IDX kicks after a whole ring was added without a decision", () => {
  const { q, dev } = setup(3, { eventIdx: true });
  for (let t = 0; t < 3; t++) {
    q.add(segs(1), [], t);
    dev.complete(dev.pop()!, 0);
    q.getUsed();
  }
  // A whole lap added since the last decision: whatever slot the event names was passed.
  dev.setEvent(RING_EVENT_FLAGS_DESC, 0, 0);
  assert.equal(q.kickNeeded(), true);
  q.add(segs(1), [], 9);
  dev.setEvent(RING_EVENT_FLAGS_DESC, 2, 0);
  assert.equal(q.kickNeeded(), false);
});

test("callbacks without EVENT_IDX: DISABLE / ENABLE and the re-check", () => {
  const { q, dev } = setup(4);
  q.add(segs(1), [], 1);
  q.add(segs(1), [], 2);
  assert.deepEqual(dev.driverEvent, { flags: RING_EVENT_FLAGS_ENABLE, off: 0, wrap: 0 });
  q.disableCallbacks();
  assert.equal(dev.driverEvent.flags, RING_EVENT_FLAGS_DISABLE);
  assert.equal(q.enableCallbacks(), true);
  assert.equal(dev.driverEvent.flags, RING_EVENT_FLAGS_ENABLE);
  q.disableCallbacks();
  dev.complete(dev.pop()!, 0); // slips in while callbacks are off
  assert.equal(q.hasUsed(), true);
  assert.equal(q.enableCallbacks(), false, "drain again");
  assert.equal(dev.driverEvent.flags, RING_EVENT_FLAGS_ENABLE);
  assert.equal(q.getUsed()!.token, 1);
  assert.equal(q.enableCallbacks(), true);
  assert.equal(q.enableCallbacksDelayed(), true, "without EVENT_IDX: the same as enableCallbacks");
  assert.equal(dev.driverEvent.flags, RING_EVENT_FLAGS_ENABLE);
});

test("callbacks with EVENT_IDX: DESC at the next used slot, re-armed, not while disabled, delayed", () => {
  const { q, dev } = setup(6, { eventIdx: true });
  for (let t = 0; t < 5; t++) q.add(segs(1), [], t);
  const cs = Array.from({ length: 5 }, () => dev.pop()!);
  // Initially ENABLE (the zeroed structure), as after a reset.
  assert.equal(dev.driverEvent.flags, RING_EVENT_FLAGS_ENABLE);
  assert.equal(q.enableCallbacks(), true);
  assert.deepEqual(dev.driverEvent, { flags: RING_EVENT_FLAGS_DESC, off: 0, wrap: 1 });
  dev.complete(cs[0]!, 0);
  assert.equal(q.getUsed()!.token, 0);
  assert.deepEqual(dev.driverEvent, { flags: RING_EVENT_FLAGS_DESC, off: 1, wrap: 1 }, "re-armed");
  q.disableCallbacks();
  assert.equal(dev.driverEvent.flags, RING_EVENT_FLAGS_DISABLE);
  dev.complete(cs[1]!, 0);
  assert.equal(q.getUsed()!.token, 1);
  assert.equal(dev.driverEvent.off, 1, "not re-armed while disabled");
  dev.complete(cs[2]!, 0); // slips in before enable
  assert.equal(q.enableCallbacks(), false);
  assert.deepEqual(dev.driverEvent, { flags: RING_EVENT_FLAGS_DESC, off: 2, wrap: 1 });
  assert.equal(q.getUsed()!.token, 2);
  // Refill to 5 in flight (slots 5, 0, 1 of the next lap): delayed asks for slot 3 + floor(5 * 3 / 4) = 6 → 0, wrap 0.
  for (let t = 5; t < 8; t++) q.add(segs(1), [], t);
  assert.equal(q.numFree, 1);
  q.disableCallbacks();
  assert.equal(q.enableCallbacksDelayed(), true);
  assert.deepEqual(dev.driverEvent, { flags: RING_EVENT_FLAGS_DESC, off: 0, wrap: 0 });
  dev.complete(cs[3]!, 0);
  q.disableCallbacks();
  assert.equal(q.enableCallbacksDelayed(), false, "a used buffer is pending");
});

function expectBroken(s: Setup, code: ErrorCodeValue, free: number, outstanding: number): void {
  const { q, broken } = s;
  assert.equal(q.getUsed(), null);
  assert.ok(isVirtioError(q.broken, code), `expected ${code}, got ${String(q.broken?.code)}`);
  assert.equal(broken.length, 1);
  assert.equal(broken[0], q.broken);
  // Nothing further consumed, and the state stays broken.
  assert.equal(q.numFree, free);
  assert.equal(q.numOutstanding, outstanding);
  assert.equal(q.nextUsed(), false);
  assert.equal(q.hasUsed(), false);
  assert.equal(q.kickNeeded(), false);
  assert.equal(q.enableCallbacks(), true);
  assert.equal(q.enableCallbacksDelayed(), true);
  assert.throws(
    () => q.add([seg(0)], [], 0),
    (e: unknown) => isVirtioError(e, code),
  );
  assert.equal(broken.length, 1);
}

test("a used Buffer ID out of range breaks the queue after the valid used descriptors before it", () => {
  for (const id of [4, 0xffff]) {
    const s = setup(4);
    s.q.add([seg(0)], [], 0);
    s.q.add([seg(1)], [], 1);
    s.dev.complete(s.dev.pop()!, 0);
    s.dev.pushUsed(id, 0, 1);
    assert.equal(s.q.getUsed()!.token, 0);
    expectBroken(s, ErrorCode.USED_ID_OUT_OF_RANGE, 3, 1);
  }
});

test("a used Buffer ID that is not outstanding breaks the queue", () => {
  // A never-used ID, an ID completed twice, and an ID used with nothing outstanding.
  const variants: ((s: Setup) => void)[] = [
    (s) => s.dev.pushUsed(3, 0, 1),
    (s) => {
      s.dev.complete(s.dev.pop()!, 0);
      s.dev.pushUsed(0, 0, 1);
    },
  ];
  variants.forEach((v, k) => {
    const s = setup(4);
    s.q.add([seg(0)], [seg(1)], 0); // ID 0, slots 0-1
    s.q.add([seg(2)], [], 1); // ID 1, slot 2
    v(s);
    if (k === 1) assert.equal(s.q.getUsed()!.token, 0);
    expectBroken(s, ErrorCode.USED_ID_NOT_OUTSTANDING, k === 1 ? 3 : 1, k === 1 ? 1 : 2);
  });
  const s = setup(3);
  s.dev.pushUsed(0, 0, 1);
  expectBroken(s, ErrorCode.USED_ID_NOT_OUTSTANDING, 3, 0);
});

test("a used Buffer ID staged but not yet made available breaks the queue", () => {
  const s = setup(4);
  s.q.add([seg(0)], [], 0); // ID 0, available
  s.q.stage([seg(1)], [], 1); // ID 1, staged only
  s.dev.pushUsed(1, 0, 1); // a device guessing the next ID
  expectBroken(s, ErrorCode.USED_ID_NOT_OUTSTANDING, 2, 2);
});

test("a used length above the request's writable bytes breaks the queue", () => {
  const s = setup(4);
  s.q.add([seg(0, 16)], [seg(1, 100), seg(2, 412)], 0);
  const c = s.dev.pop()!;
  s.dev.pushUsed(c.id, 512, c.count);
  assert.deepEqual(s.q.getUsed(), { token: 0, len: 512 });
  s.q.add([seg(0, 16)], [seg(1, 100), seg(2, 412)], 1);
  const d = s.dev.pop()!;
  s.dev.pushUsed(d.id, 513, d.count);
  expectBroken(s, ErrorCode.USED_LEN_TOO_LONG, 1, 1);
  // Without WRITE on a request with a writable part, the length still counts (and is checked).
  const t = setup(4);
  t.q.add([seg(0, 16)], [seg(1, 10)], 0);
  const e = t.dev.pop()!;
  t.dev.pushUsed(e.id, 11, e.count, 0);
  expectBroken(t, ErrorCode.USED_LEN_TOO_LONG, 2, 1);
  // A readable-only request: WRITE with a length claims a write the request cannot take.
  const u = setup(4);
  u.q.add([seg(0, 16)], [], 0);
  u.dev.pushUsed(u.dev.pop()!.id, 1, 1, VIRTQ_DESC_F_WRITE);
  expectBroken(u, ErrorCode.USED_LEN_TOO_LONG, 3, 1);
});

test("the length of a used descriptor without WRITE is ignored for a readable-only request (§2.8.4)", () => {
  const { q, dev } = setup(4);
  q.add([seg(0, 16)], [], 0);
  dev.pushUsed(dev.pop()!.id, 0xdead, 1, 0);
  assert.deepEqual(q.getUsed(), { token: 0, len: 0 });
  q.add([seg(0, 16)], [seg(1, 32)], 1);
  dev.pushUsed(dev.pop()!.id, 20, 2, 0); // devices that never set WRITE still report the length
  assert.deepEqual(q.getUsed(), { token: 1, len: 20 });
  assert.equal(q.broken, null);
});

test("a slot with used bits of the wrong wrap counter, or available bits, is not taken", () => {
  const { q, dev } = setup(3);
  q.add([seg(0)], [], 0);
  // USED and AVAIL both 0 (a used descriptor of wrap 0) in slot 0 while the driver expects wrap 1.
  dev.mem.writeU16(RING_BASE + 12, 0);
  dev.mem.atomicStoreU16(RING_BASE + 14, 0);
  assert.equal(q.hasUsed(), false);
  assert.equal(q.getUsed(), null);
  dev.mem.atomicStoreU16(RING_BASE + 14, VIRTQ_DESC_F_USED); // AVAIL 0, USED 1
  assert.equal(q.getUsed(), null);
  dev.mem.atomicStoreU16(RING_BASE + 14, VIRTQ_DESC_F_AVAIL); // the driver's own available bits
  assert.equal(q.getUsed(), null);
  assert.equal(q.broken, null);
  dev.mem.atomicStoreU16(RING_BASE + 14, VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED);
  assert.deepEqual(q.getUsed(), { token: 0, len: 0 });
});

test("nextUsed delivers token and length without allocating", () => {
  const { q, dev } = setup(4);
  q.add([seg(0)], [seg(1, 10)], 42);
  dev.complete(dev.pop()!, 7);
  assert.equal(q.nextUsed(), true);
  assert.equal(q.usedToken, 42);
  assert.equal(q.usedLen, 7);
  assert.equal(q.nextUsed(), false);
});

test("detachAll returns outstanding tokens and re-initialises the ring (also after broken)", () => {
  const { q, dev, mem } = setup(5, { eventIdx: true });
  for (let t = 10; t < 14; t++) q.add([seg(0)], [], t);
  assert.equal(q.numFree, 1);
  q.enableCallbacks();
  dev.complete(dev.pop()!, 0);
  assert.equal(q.getUsed()!.token, 10);
  dev.pushUsed(4, 0, 1); // ID 4 was never handed out
  assert.equal(q.getUsed(), null);
  assert.notEqual(q.broken, null);
  assert.deepEqual(q.detachAll(), [11, 12, 13]);
  assert.equal(q.broken, null);
  assert.equal(q.numFree, 5);
  assert.equal(q.numOutstanding, 0);
  assert.equal(ringNonZero(mem, dev.l), 0);
  assert.equal(q.notificationData, 1 << 15);
  // Usable again from slot 0, wrap 1, as a freshly reset device expects.
  const fresh = new PackedPeer(mem, dev.l);
  assert.equal(q.add([seg(0)], [], 99), true);
  fresh.complete(fresh.pop()!, 0);
  assert.equal(q.getUsed()!.token, 99);
  assert.deepEqual(q.detachAll(), []);
});

test("a request over 2^32-1 bytes in total is refused", () => {
  const mem = GuestMemory.createShared([{ guestPhysAddr: 0, size: MEM_SIZE }]);
  const q = new PackedDriverQueue<number>(mem, packedRingLayout(5000, RING_BASE));
  // 4097 overlapping 1 MiB segments: each valid, together 2^32 + 2^20 bytes.
  const many = Array.from({ length: 4097 }, () => ({ addr: 0, len: 1 << 20 }));
  assert.throws(() => q.add(many, [], 0), RangeError);
  assert.equal(q.add(many.slice(0, 4095), [], 0), true);
  assert.equal(q.numFree, 5000 - 4095);
});

// ---- property: random traffic against a device completing in random order ----

type Op =
  | { op: "add"; nr: number; nw: number; len: number; stage: boolean }
  | { op: "pop"; n: number }
  | { op: "complete"; pick: number; frac: number }
  | { op: "drain" }
  | { op: "kick" };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      op: fc.constant("add" as const),
      nr: fc.nat(4),
      nw: fc.nat(4),
      len: fc.integer({ min: 1, max: 64 }),
      stage: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ op: fc.constant("pop" as const), n: fc.integer({ min: 1, max: 8 }) }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant("complete" as const),
      pick: fc.nat(),
      frac: fc.double({ min: 0, max: 1, noNaN: true }),
    }),
  },
  { weight: 2, arbitrary: fc.constant({ op: "drain" as const }) },
  { weight: 1, arbitrary: fc.constant({ op: "kick" as const }) },
);

test("property: random traffic, random completion order — every token comes back exactly once with its length", () => {
  fc.assert(
    fc.property(
      fc.constantFrom(1, 2, 3, 5, 8, 13, 64),
      fc.boolean(),
      fc.boolean(),
      fc.array(opArb, { maxLength: 300 }),
      (size, indirect, eventIdx, ops) => {
        const s = setup(size, {
          eventIdx,
          ...(indirect && size >= 2 ? withIndirect(Math.min(size, 3)) : {}),
        });
        const { q, dev } = s;
        const expected = new Map<number, number>(); // token -> used length the device will report
        const popped: { c: PeerChain; token: number }[] = [];
        const ids = new Map<number, number>(); // Buffer ID -> token, for what the device popped
        let nextToken = 0;
        let popOrder = 0;
        const returned = new Set<number>();
        const take = (): void => {
          for (let u = q.getUsed(); u !== null; u = q.getUsed()) {
            assert.ok(!returned.has(u.token), `token ${u.token} returned twice`);
            assert.ok(expected.has(u.token), `token ${u.token} was not completed`);
            assert.equal(u.len, expected.get(u.token));
            expected.delete(u.token);
            returned.add(u.token);
          }
        };
        for (const o of ops) {
          if (o.op === "add") {
            const nr = Math.min(o.nr, size);
            const nw = Math.min(o.nw, size - nr);
            if (nr + nw === 0) continue;
            const r = Array.from({ length: nr }, (_, k) => seg(k, o.len));
            const w = Array.from({ length: nw }, (_, k) => seg(8 + k, o.len));
            const before = q.numFree;
            // Staged requests stay invisible to the device until an add, a kick or the end publishes them.
            if ((o.stage ? q.stage(r, w, nextToken) : q.add(r, w, nextToken)) === true) nextToken++;
            else assert.equal(q.numFree, before);
          } else if (o.op === "pop") {
            for (let i = 0; i < o.n; i++) {
              const c = dev.pop();
              if (c === null) break;
              // The device learns the token only through the order of adds: the k-th request popped is token k.
              const token = popOrder++;
              assert.ok(!ids.has(c.id), `Buffer ID ${c.id} in flight twice`);
              ids.set(c.id, token);
              popped.push({ c, token });
            }
          } else if (o.op === "complete") {
            if (popped.length === 0) continue;
            const { c, token } = popped.splice(o.pick % popped.length, 1)[0]!;
            const len = Math.floor(c.writable * o.frac);
            ids.delete(c.id);
            expected.set(token, len);
            dev.complete(c, len);
          } else if (o.op === "drain") {
            take();
          } else {
            q.kickNeeded();
          }
          assert.equal(q.broken, null);
          assert.ok(q.numFree >= 0 && q.numFree <= size);
        }
        // Finish: the device pops and completes everything, the driver takes it all.
        q.publish();
        for (let c = dev.pop(); c !== null; c = dev.pop()) popped.push({ c, token: popOrder++ });
        while (popped.length > 0) {
          const { c, token } = popped.pop()!;
          expected.set(token, c.writable);
          dev.complete(c, c.writable);
        }
        take();
        assert.equal(expected.size, 0);
        assert.equal(returned.size, nextToken, "every token came back");
        assert.equal(q.numFree, size);
        assert.equal(q.numOutstanding, 0);
      },
    ),
    { numRuns: 300 },
  );
});

import { test } from "node:test";
import assert from "node:assert/strict";
import { DriverQueue, indirectArenaBytes } from "./driver-queue.ts";
import type { DriverQueueConfig, Segment } from "./driver-queue.ts";
import { vringLayout } from "./layout.ts";
import type { VringLayout } from "./layout.ts";
import { GuestMemory } from "../memory/guest-memory.ts";
import { ErrorCode, isVirtioError } from "../errors.ts";
import type { ErrorCodeValue, VirtioError } from "../errors.ts";
import {
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY,
  availEventOffset,
  usedEventOffset,
} from "../spec/virtqueue.ts";

const RING_BASE = 0x1000;
const ARENA = 0x20000;
const BUF = 0x40000;

interface PeerSeg {
  addr: number;
  len: number;
  write: boolean;
}

/**
 * Plays the device by reading and writing the ring memory directly (trusting
 * the driver: this is a test fixture, not a device implementation).
 */
class RingPeer {
  nextAvail = 0;
  nextUsed = 0;
  readonly mem: GuestMemory;
  readonly l: VringLayout;
  constructor(mem: GuestMemory, l: VringLayout) {
    this.mem = mem;
    this.l = l;
  }
  get availIdx(): number {
    return this.mem.atomicLoadU16(this.l.availAddr + 2);
  }
  get availFlags(): number {
    return this.mem.readU16(this.l.availAddr);
  }
  get usedEvent(): number {
    return this.mem.readU16(this.l.availAddr + usedEventOffset(this.l.size));
  }
  set availEvent(v: number) {
    this.mem.writeU16(this.l.usedAddr + availEventOffset(this.l.size), v);
  }
  set usedFlags(v: number) {
    this.mem.writeU16(this.l.usedAddr, v);
  }
  desc(table: number, i: number): { addr: number; len: number; flags: number; next: number } {
    const a = table + 16 * i;
    return {
      addr: Number(this.mem.readU64(a)),
      len: this.mem.readU32(a + 8),
      flags: this.mem.readU16(a + 12),
      next: this.mem.readU16(a + 14),
    };
  }
  /** Pops the next available chain and returns its head and segments. */
  pop(): { head: number; segs: PeerSeg[]; indirect: boolean } | null {
    if (this.availIdx === this.nextAvail) return null;
    const slot = this.nextAvail % this.l.size;
    const head = this.mem.readU16(this.l.availAddr + 4 + 2 * slot);
    this.nextAvail = (this.nextAvail + 1) & 0xffff;
    const segs: PeerSeg[] = [];
    let table = this.l.descAddr;
    let i = head;
    let indirect = false;
    for (let guard = 0; guard < 70000; guard++) {
      const d = this.desc(table, i);
      if (d.flags & VIRTQ_DESC_F_INDIRECT) {
        indirect = true;
        table = d.addr;
        i = 0;
        continue;
      }
      segs.push({ addr: d.addr, len: d.len, write: (d.flags & VIRTQ_DESC_F_WRITE) !== 0 });
      if (!(d.flags & VIRTQ_DESC_F_NEXT)) break;
      i = d.next;
    }
    return { head, segs, indirect };
  }
  /** Writes a used entry; publishes used.idx unless told not to. */
  pushUsed(id: number, len: number, publish = true): void {
    const e = this.l.usedAddr + 4 + 8 * (this.nextUsed % this.l.size);
    this.mem.writeU32(e, id);
    this.mem.writeU32(e + 4, len);
    this.nextUsed = (this.nextUsed + 1) & 0xffff;
    if (publish) this.publish();
  }
  publish(): void {
    this.mem.atomicStoreU16(this.l.usedAddr + 2, this.nextUsed);
  }
  setUsedIdx(v: number): void {
    this.mem.atomicStoreU16(this.l.usedAddr + 2, v);
  }
}

function setup(
  size: number,
  opts: Partial<DriverQueueConfig> = {},
): { q: DriverQueue<number>; dev: RingPeer; mem: GuestMemory; broken: VirtioError[] } {
  const mem = GuestMemory.createShared([{ guestPhysAddr: 0, size: 1 << 20 }]);
  const l = vringLayout(size, RING_BASE);
  const broken: VirtioError[] = [];
  const q = new DriverQueue<number>(mem, {
    ...l,
    ...opts,
    onBroken: (e) => broken.push(e),
  });
  return { q, dev: new RingPeer(mem, l), mem, broken };
}

/** Non-zero bytes in the three ring parts (padding between them excluded). */
function ringNonZero(mem: GuestMemory, l: VringLayout): number {
  let n = 0;
  for (const [a, len] of [
    [l.descAddr, 16 * l.size],
    [l.availAddr, 6 + 2 * l.size],
    [l.usedAddr, 6 + 8 * l.size],
  ] as const) {
    const b = new Uint8Array(len);
    mem.read(a, b);
    n += b.filter((x) => x !== 0).length;
  }
  return n;
}

const seg = (i: number, len = 64): Segment => ({ addr: BUF + i * 0x1000, len });

test("constructor rejects API misuse with RangeError", () => {
  const mem = GuestMemory.createShared([{ guestPhysAddr: 0, size: 1 << 16 }]);
  const l = vringLayout(8, RING_BASE);
  for (const size of [0, 3, 65536, 1.5]) {
    assert.throws(() => new DriverQueue(mem, { ...l, size }), RangeError);
  }
  assert.throws(() => new DriverQueue(mem, { ...l, descAddr: l.descAddr + 8 }), RangeError);
  assert.throws(() => new DriverQueue(mem, { ...l, availAddr: l.availAddr + 1 }), RangeError);
  assert.throws(() => new DriverQueue(mem, { ...l, usedAddr: l.usedAddr + 2 }), RangeError);
  assert.throws(() => new DriverQueue(mem, { ...l, usedAddr: (1 << 16) - 8 }), RangeError);
  assert.throws(() => new DriverQueue(mem, { ...l, indirect: true }), RangeError);
  for (const entriesPerChain of [1, 9, 2.5]) {
    assert.throws(
      () =>
        new DriverQueue(mem, {
          ...l,
          indirect: true,
          indirectArena: { addr: 0x8000, entriesPerChain },
        }),
      RangeError,
    );
  }
  assert.throws(
    () =>
      new DriverQueue(mem, {
        ...l,
        indirect: true,
        indirectArena: { addr: 0xfff0, entriesPerChain: 4 },
      }),
    RangeError,
  );
  assert.equal(indirectArenaBytes(8, 4), 512);
});

test("constructor zeroes the ring", () => {
  const mem = GuestMemory.createShared([{ guestPhysAddr: 0, size: 1 << 16 }]);
  const l = vringLayout(8, RING_BASE);
  mem.fill(l.descAddr, l.totalBytes, 0xaa);
  const q = new DriverQueue(mem, l);
  assert.equal(ringNonZero(mem, l), 0);
  assert.equal(q.numFree, 8);
  assert.equal(q.size, 8);
  assert.equal(q.broken, null);
});

test("add writes a chain, readable first, and publishes the head exactly once", () => {
  const { q, dev } = setup(8);
  assert.equal(q.add([seg(0, 16), seg(1, 32)], [seg(2, 512)], 7), true);
  assert.equal(dev.availIdx, 1);
  assert.equal(q.numFree, 5);
  const c = dev.pop()!;
  assert.equal(c.head, 0);
  assert.equal(c.indirect, false);
  assert.deepEqual(c.segs, [
    { addr: BUF, len: 16, write: false },
    { addr: BUF + 0x1000, len: 32, write: false },
    { addr: BUF + 0x2000, len: 512, write: true },
  ]);
  assert.equal(dev.pop(), null);
});

test("free list: exhaust, refuse without side effects, free out of order, reuse", () => {
  const { q, dev } = setup(4);
  for (let t = 0; t < 4; t++) assert.equal(q.add([seg(t)], [], t), true);
  assert.equal(q.numFree, 0);
  assert.equal(q.add([seg(9)], [], 9), false);
  assert.equal(dev.availIdx, 4);
  assert.equal(q.numOutstanding, 4);
  const heads = [0, 1, 2, 3].map(() => dev.pop()!.head);
  assert.deepEqual(heads, [0, 1, 2, 3]);
  dev.pushUsed(2, 0);
  dev.pushUsed(0, 0);
  assert.deepEqual(q.getUsed(), { token: 2, len: 0 });
  assert.deepEqual(q.getUsed(), { token: 0, len: 0 });
  assert.equal(q.getUsed(), null);
  assert.equal(q.numFree, 2);
  // A two-descriptor chain reuses exactly the two freed descriptors (most recently freed first).
  assert.equal(q.add([seg(5)], [seg(6)], 5), true);
  assert.equal(q.numFree, 0);
  const c = dev.pop()!;
  assert.equal(c.head, 0);
  assert.equal(dev.desc(dev.l.descAddr, 0).next, 2);
  assert.equal(c.segs.length, 2);
  // A chain longer than the free count is refused; after completing, the whole table is free again.
  assert.equal(q.add([seg(1), seg(2)], [], 8), false);
  for (const id of [1, 3, 0]) dev.pushUsed(id, 0);
  const tokens = [q.getUsed()!.token, q.getUsed()!.token, q.getUsed()!.token];
  assert.deepEqual(tokens, [1, 3, 5]);
  assert.equal(q.numFree, 4);
  assert.equal(q.add([seg(0), seg(1)], [seg(2), seg(3)], 9), true);
  assert.equal(dev.pop()!.segs.length, 4);
});

test("indirect: used for multi-segment requests that fit, direct otherwise", () => {
  const { q, dev } = setup(4, {
    indirect: true,
    indirectArena: { addr: ARENA, entriesPerChain: 3 },
  });
  assert.equal(q.indirect, true);
  assert.equal(q.add([seg(0)], [], 0), true); // one segment: direct
  assert.equal(q.numFree, 3);
  let c = dev.pop()!;
  assert.equal(c.indirect, false);
  assert.equal(q.add([seg(1, 16)], [seg(2, 100), seg(3, 1)], 1), true); // three: one indirect table
  assert.equal(q.numFree, 2);
  c = dev.pop()!;
  assert.equal(c.indirect, true);
  const headDesc = dev.desc(dev.l.descAddr, c.head);
  assert.equal(headDesc.flags, VIRTQ_DESC_F_INDIRECT);
  assert.equal(headDesc.len, 48);
  assert.equal(headDesc.addr, ARENA + c.head * 3 * 16);
  assert.deepEqual(
    c.segs.map((s) => [s.len, s.write]),
    [
      [16, false],
      [100, true],
      [1, true],
    ],
  );
  assert.equal(dev.desc(headDesc.addr, 2).flags, VIRTQ_DESC_F_WRITE);
  // Four segments exceed entriesPerChain: direct, needs 4 free descriptors (only 2).
  assert.equal(q.add([seg(0), seg(1), seg(2), seg(3)], [], 2), false);
  assert.equal(q.add([seg(0), seg(1)], [], 3), true);
  assert.equal(q.add([seg(0), seg(1)], [], 4), true);
  assert.equal(q.numFree, 0);
  assert.equal(q.add([seg(0), seg(1)], [], 5), false);
  // Used length is checked against the indirect chain's writable bytes (101).
  dev.pushUsed(c.head, 101);
  assert.deepEqual(q.getUsed(), { token: 1, len: 101 });
});

test("indirect falls back to direct when the request exceeds the table", () => {
  const { q, dev } = setup(8, {
    indirect: true,
    indirectArena: { addr: ARENA, entriesPerChain: 2 },
  });
  assert.equal(q.add([seg(0), seg(1), seg(2)], [], 0), true);
  assert.equal(q.numFree, 5);
  const c = dev.pop()!;
  assert.equal(c.indirect, false);
  assert.equal(c.segs.length, 3);
});

test("add rejects API misuse and changes nothing", () => {
  const { q, dev } = setup(4);
  const cases: [readonly Segment[], readonly Segment[], ErrorConstructor][] = [
    [[], [], RangeError],
    [[seg(0), seg(1), seg(2)], [seg(3), seg(4)], RangeError], // 5 > size
    [[seg(0, 0)], [], RangeError],
    [[{ addr: (1 << 20) - 8, len: 16 }], [], RangeError],
    [[{ addr: -1, len: 16 }], [], RangeError],
    [[{ addr: 0, len: 2 ** 32 }], [], RangeError],
    [[{ addr: 0, len: 1.5 }], [], RangeError],
  ];
  for (const [r, w, E] of cases) assert.throws(() => q.add(r, w, 0), E);
  assert.throws(() => q.add(null as unknown as Segment[], [], 0), TypeError);
  assert.equal(q.numFree, 4);
  assert.equal(q.numOutstanding, 0);
  assert.equal(dev.availIdx, 0);
});

test("a request over 2^32-1 bytes in total is refused", () => {
  const mem = GuestMemory.createShared([{ guestPhysAddr: 0, size: 1 << 20 }]);
  const q = new DriverQueue<number>(mem, vringLayout(8192, RING_BASE));
  // 4097 overlapping 1 MiB segments: each valid, together 2^32 + 2^20 bytes.
  const many = Array.from({ length: 4097 }, () => ({ addr: 0, len: 1 << 20 }));
  assert.throws(() => q.add(many, [], 0), RangeError);
  assert.equal(q.add(many.slice(0, 4095), [], 0), true);
  assert.equal(q.numFree, 8192 - 4095);
});

test("avail.idx and used.idx wrap past 65535 (70000 requests)", () => {
  const { q, dev } = setup(4, {
    indirect: true,
    indirectArena: { addr: ARENA, entriesPerChain: 4 },
  });
  let next = 0;
  let done = 0;
  for (let i = 0; i < 70000; i++) {
    const nseg = 1 + (i % 3);
    const segs = Array.from({ length: nseg }, (_, k) => seg(k, 8));
    assert.equal(q.add(segs.slice(0, 1), segs.slice(1), next++), true);
    const c = dev.pop()!;
    assert.equal(c.segs.length, nseg);
    dev.pushUsed(c.head, nseg - 1);
    const u = q.getUsed()!;
    assert.equal(u.token, done);
    assert.equal(u.len, nseg - 1);
    done++;
  }
  assert.equal(dev.availIdx, 70000 & 0xffff);
  assert.equal(q.numFree, 4);
  assert.equal(q.numOutstanding, 0);
});

/** Runs `n` add/complete cycles so the indexes sit at `n` (mod 2^16). */
function advance(q: DriverQueue<number>, dev: RingPeer, n: number): void {
  for (let i = 0; i < n; i++) {
    q.add([seg(0, 8)], [], i);
    dev.pushUsed(dev.pop()!.head, 0);
    q.getUsed();
  }
  q.kickNeeded();
}

test("kickNeeded with EVENT_IDX honours avail_event across the 16-bit wrap", () => {
  const { q, dev } = setup(4, { eventIdx: true });
  advance(q, dev, 65534);
  assert.equal(dev.availIdx, 65534);
  dev.availEvent = 65535; // "kick me when entry 65535 is added"
  q.add([seg(0)], [], 1); // entry 65534
  assert.equal(q.kickNeeded(), false);
  q.add([seg(0)], [], 2); // entry 65535: new idx wraps to 0
  assert.equal(dev.availIdx, 0);
  assert.equal(q.kickNeeded(), true);
  assert.equal(q.kickNeeded(), false); // nothing added since
  dev.availEvent = 1;
  q.add([seg(0)], [], 3); // entry 0
  assert.equal(q.kickNeeded(), false);
  // A batch whose window (old, new] straddles the event index kicks once.
  dev.availEvent = 1;
  q.add([seg(0)], [], 4); // entry 1
  q.add([seg(0)], [], 5); // entry 2
  assert.equal(q.kickNeeded(), true);
});

test("kickNeeded forces a kick after 65535 adds without one", () => {
  const { q, dev } = setup(2, { eventIdx: true });
  for (let i = 0; i < 65536; i++) {
    q.add([seg(0, 8)], [], i);
    dev.pushUsed(dev.pop()!.head, 0);
    q.getUsed();
  }
  // avail_event = new idx lies outside any window ending at new: the plain rule says no kick.
  dev.availEvent = dev.availIdx;
  assert.equal(q.kickNeeded(), true);
  q.add([seg(0, 8)], [], 0);
  dev.availEvent = dev.availIdx;
  assert.equal(q.kickNeeded(), false);
});

test("kickNeeded without EVENT_IDX follows used.flags NO_NOTIFY; staged entries publish on kickNeeded", () => {
  const { q, dev } = setup(8);
  assert.equal(q.kickNeeded(), false); // nothing added
  assert.equal(q.stage([seg(0)], [], 1), true);
  assert.equal(q.stage([seg(1)], [], 2), true);
  assert.equal(dev.availIdx, 0); // not visible yet
  assert.equal(q.numFree, 6);
  assert.equal(q.kickNeeded(), true);
  assert.equal(dev.availIdx, 2);
  dev.usedFlags = VIRTQ_USED_F_NO_NOTIFY;
  q.add([seg(2)], [], 3);
  assert.equal(q.kickNeeded(), false);
  dev.usedFlags = 0;
  q.stage([seg(3)], [], 4);
  q.publish();
  assert.equal(dev.availIdx, 4);
  assert.equal(q.kickNeeded(), true);
});

test("callbacks without EVENT_IDX: NO_INTERRUPT flag and the enable re-check", () => {
  const { q, dev } = setup(4);
  q.add([seg(0)], [], 1);
  q.add([seg(1)], [], 2);
  q.disableCallbacks();
  assert.equal(dev.availFlags, VIRTQ_AVAIL_F_NO_INTERRUPT);
  assert.equal(q.enableCallbacks(), true);
  assert.equal(dev.availFlags, 0);
  q.disableCallbacks();
  // The device completes one while callbacks are off and the driver has drained: enable must say "drain again".
  dev.pushUsed(dev.pop()!.head, 0);
  assert.equal(q.hasUsed(), true);
  assert.equal(q.enableCallbacks(), false);
  assert.equal(dev.availFlags, 0);
  assert.equal(q.getUsed()!.token, 1);
  assert.equal(q.hasUsed(), false);
  assert.equal(q.enableCallbacks(), true);
  assert.equal(q.enableCallbacksDelayed(), true); // without EVENT_IDX: the same as enableCallbacks
});

test("callbacks with EVENT_IDX: used_event tracking, parking, re-check, delayed", () => {
  const { q, dev } = setup(16, { eventIdx: true });
  for (let t = 0; t < 8; t++) q.add([seg(t)], [], t);
  const heads = Array.from({ length: 8 }, () => dev.pop()!.head);
  dev.pushUsed(heads[0]!, 0);
  assert.equal(q.getUsed()!.token, 0);
  assert.equal(dev.usedEvent, 1); // re-armed at the next entry
  q.disableCallbacks();
  assert.equal(dev.availFlags, 0); // §2.7.7: flags stay 0 with EVENT_IDX
  assert.equal(dev.usedEvent, 0); // parked one behind
  dev.pushUsed(heads[1]!, 0);
  assert.equal(q.getUsed()!.token, 1);
  assert.equal(dev.usedEvent, 0); // not re-armed while disabled
  assert.equal(q.enableCallbacks(), true);
  assert.equal(dev.usedEvent, 2);
  q.disableCallbacks();
  dev.pushUsed(heads[2]!, 0); // slips in before enable
  assert.equal(q.enableCallbacks(), false);
  assert.equal(dev.usedEvent, 2);
  assert.equal(q.getUsed()!.token, 2);
  // 5 outstanding: delayed asks for an event after 3 more (floor(5 * 3 / 4)).
  q.disableCallbacks();
  assert.equal(q.enableCallbacksDelayed(), true);
  assert.equal(dev.usedEvent, 3 + 3);
  for (const h of heads.slice(3, 7)) dev.pushUsed(h, 0);
  q.disableCallbacks();
  assert.equal(q.enableCallbacksDelayed(), false); // 4 used > 3
});

function expectBroken(
  q: DriverQueue<number>,
  broken: VirtioError[],
  code: ErrorCodeValue,
  free: number,
  outstanding: number,
): void {
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
  assert.throws(
    () => q.add([seg(0)], [], 0),
    (e: unknown) => isVirtioError(e, code),
  );
  assert.equal(broken.length, 1);
}

test("used.idx moving past the outstanding count breaks the queue (USED_IDX_JUMP)", () => {
  for (const idx of [3, 0xffff, 0x8000]) {
    const { q, dev, broken } = setup(4);
    q.add([seg(0)], [], 0);
    q.add([seg(1)], [], 1);
    dev.setUsedIdx(idx);
    expectBroken(q, broken, ErrorCode.USED_IDX_JUMP, 2, 2);
  }
});

test("used id out of range breaks the queue after consuming the valid entries before it", () => {
  const { q, dev, broken } = setup(4);
  q.add([seg(0)], [], 0);
  q.add([seg(1)], [], 1);
  dev.pushUsed(0, 0);
  dev.pushUsed(4, 0);
  assert.equal(q.getUsed()!.token, 0);
  expectBroken(q, broken, ErrorCode.USED_ID_OUT_OF_RANGE, 3, 1);
});

test("used id that is not an outstanding head breaks the queue", () => {
  // A free descriptor, a non-head descriptor of a chain, and a head completed twice.
  const variants: ((dev: RingPeer) => void)[] = [
    (dev) => dev.pushUsed(3, 0),
    (dev) => dev.pushUsed(1, 0),
    (dev) => {
      dev.pushUsed(0, 0);
      dev.pushUsed(0, 0);
    },
  ];
  variants.forEach((v, k) => {
    const { q, dev, broken } = setup(4);
    q.add([seg(0)], [seg(1)], 0); // descriptors 0 -> 1
    q.add([seg(2)], [], 1); // descriptor 2
    v(dev);
    if (k === 2) assert.equal(q.getUsed()!.token, 0);
    expectBroken(q, broken, ErrorCode.USED_ID_NOT_OUTSTANDING, k === 2 ? 3 : 1, k === 2 ? 1 : 2);
  });
});

test("used len above the chain's writable bytes breaks the queue", () => {
  const { q, dev, broken } = setup(4);
  q.add([seg(0, 16)], [seg(1, 100), seg(2, 412)], 0);
  q.add([seg(3, 16)], [], 1); // head 3
  dev.pushUsed(3, 1); // readable-only chain: any len > 0 is too long
  expectBroken(q, broken, ErrorCode.USED_LEN_TOO_LONG, 0, 2);
  const s = setup(4);
  s.q.add([seg(0, 16)], [seg(1, 100), seg(2, 412)], 0);
  s.dev.pushUsed(0, 512);
  assert.deepEqual(s.q.getUsed(), { token: 0, len: 512 });
  s.q.add([seg(0, 16)], [seg(1, 100), seg(2, 412)], 0);
  s.dev.pushUsed(0, 513);
  expectBroken(s.q, s.broken, ErrorCode.USED_LEN_TOO_LONG, 1, 1);
});

test("nextUsed delivers token and length without allocating", () => {
  const { q, dev } = setup(4);
  q.add([seg(0)], [seg(1, 10)], 42);
  dev.pushUsed(dev.pop()!.head, 7);
  assert.equal(q.nextUsed(), true);
  assert.equal(q.usedToken, 42);
  assert.equal(q.usedLen, 7);
  assert.equal(q.nextUsed(), false);
});

test("detachAll returns outstanding tokens and re-initialises the ring (also after broken)", () => {
  const { q, dev, mem } = setup(8, { eventIdx: true });
  for (let t = 10; t < 14; t++) q.add([seg(0)], [seg(1)], t);
  dev.pushUsed(dev.pop()!.head, 0);
  assert.equal(q.getUsed()!.token, 10);
  dev.pushUsed(7, 0); // a violation
  assert.equal(q.getUsed(), null);
  assert.notEqual(q.broken, null);
  const tokens = q.detachAll().sort((a, b) => a - b);
  assert.deepEqual(tokens, [11, 12, 13]);
  assert.equal(q.broken, null);
  assert.equal(q.numFree, 8);
  assert.equal(q.numOutstanding, 0);
  assert.equal(ringNonZero(mem, dev.l), 0);
  // Usable again from index 0, as a freshly reset device expects.
  const fresh = new RingPeer(mem, dev.l);
  assert.equal(q.add([seg(0)], [], 99), true);
  assert.equal(fresh.availIdx, 1);
  fresh.pushUsed(fresh.pop()!.head, 0);
  assert.equal(q.getUsed()!.token, 99);
  assert.deepEqual(q.detachAll(), []);
});

test("initialIndex starts both indexes there (and detachAll returns to 0)", () => {
  const { q, dev } = setup(4, { eventIdx: true, initialIndex: 0xfffe });
  assert.equal(dev.availIdx, 0xfffe);
  assert.equal(dev.usedEvent, 0xfffe);
  assert.equal(dev.mem.atomicLoadU16(dev.l.usedAddr + 2), 0xfffe);
  dev.nextAvail = dev.nextUsed = 0xfffe;
  for (let t = 0; t < 3; t++) q.add([seg(t)], [], t);
  assert.equal(dev.availIdx, 1);
  for (let t = 0; t < 3; t++) dev.pushUsed(dev.pop()!.head, 0);
  assert.deepEqual([q.getUsed()!.token, q.getUsed()!.token, q.getUsed()!.token], [0, 1, 2]);
  assert.equal(dev.usedEvent, 1);
  q.detachAll();
  assert.equal(dev.availIdx, 0);
  assert.throws(() => setup(4, { initialIndex: 0x10000 }), RangeError);
  assert.throws(() => setup(4, { initialIndex: -1 }), RangeError);
});

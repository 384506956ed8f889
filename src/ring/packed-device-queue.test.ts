import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  ErrorCode,
  VirtioError as VirtioErrorCtor,
  isVirtioError,
  type ErrorCodeValue,
  type VirtioError,
} from "../errors.ts";
import { GuestMemory, GuestSlice } from "../memory/guest-memory.ts";
import {
  PVIRTQ_DESC_OFF_FLAGS,
  PVIRTQ_DESC_OFF_ID,
  PVIRTQ_DESC_OFF_LEN,
  PVIRTQ_DESC_SIZE,
  PVIRTQ_EVENT_OFF_DESC,
  PVIRTQ_EVENT_OFF_FLAGS,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_USED,
  isPackedDescUsed,
} from "../spec/packed-virtqueue.ts";
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from "../spec/virtqueue.ts";
import {
  PACKED_RING_START,
  PackedDeviceQueue,
  decodePackedVringBase,
  encodePackedVringBase,
  type PackedDeviceQueueConfig,
  type PackedRingState,
  type WrapCounter,
} from "./packed-device-queue.ts";

// ---- a minimal packed-ring driver (§2.8.21, §2.8.22), for these tests only ----

const RING = 0x1000;
/** Data buffers start past the largest ring (16 · 32768 bytes). */
const DATA = 0x90000;
const MEM_SIZE = 0xc0000;

interface Buf {
  addr: number;
  len: number;
  writable?: boolean;
}

interface RawDesc {
  addr: number;
  len: number;
  id: number;
  flags: number;
}

/** AVAIL/USED bits that make a descriptor available for wrap counter `w` (§2.8.1). */
const availBits = (w: number): number => (w === 1 ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED);

/** The driver's side of one packed ring at RING: places lists, reads used descriptors. */
class Driver {
  readonly size: number;
  readonly ring: GuestSlice;
  readonly driverEvent: GuestSlice;
  readonly deviceEvent: GuestSlice;
  availPos: number;
  availWrap: number;
  usedPos: number;
  usedWrap: number;
  /** Ring descriptors of each outstanding buffer ID (§2.8.6: the driver keeps track of them). */
  readonly ndescs = new Map<number, number>();
  readonly #free: number[];

  constructor(
    readonly mem: GuestMemory,
    size: number,
    start: PackedRingState = PACKED_RING_START,
  ) {
    this.size = size;
    this.ring = mem.slice(RING, PVIRTQ_DESC_SIZE * size);
    this.driverEvent = mem.slice(RING + PVIRTQ_DESC_SIZE * size, 4);
    this.deviceEvent = mem.slice(RING + PVIRTQ_DESC_SIZE * size + 4, 4);
    this.availPos = start.availPos;
    this.availWrap = start.availWrap;
    this.usedPos = start.usedPos;
    this.usedWrap = start.usedWrap;
    this.#free = Array.from({ length: size }, (_, i) => i);
    // The ring as the laps before `start` left it: every descriptor last marked used, those
    // before the used position in this lap, the others in the previous one (for a fresh ring:
    // all zero). A zeroed descriptor would otherwise look used to a driver at wrap counter 0.
    for (let p = 0; p < size; p++) {
      const wrap = p < start.usedPos ? start.usedWrap : start.usedWrap ^ 1;
      const flags = wrap === 1 ? VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED : 0;
      this.ring.writeU16(PVIRTQ_DESC_SIZE * p + PVIRTQ_DESC_OFF_FLAGS, flags);
    }
  }

  get addresses(): Pick<
    PackedDeviceQueueConfig,
    "descAddr" | "driverEventAddr" | "deviceEventAddr"
  > {
    return {
      descAddr: RING,
      driverEventAddr: RING + PVIRTQ_DESC_SIZE * this.size,
      deviceEventAddr: RING + PVIRTQ_DESC_SIZE * this.size + 4,
    };
  }

  /** Ring descriptors not held by outstanding buffers. */
  get freeDescs(): number {
    let used = 0;
    for (const n of this.ndescs.values()) used += n;
    return this.size - used;
  }

  get freeIds(): number {
    return this.#free.length;
  }

  writeDesc(pos: number, d: RawDesc, flagsToo = true): void {
    const off = PVIRTQ_DESC_SIZE * pos;
    this.ring.writeU64(off, d.addr);
    this.ring.writeU32(off + PVIRTQ_DESC_OFF_LEN, d.len);
    this.ring.writeU16(off + PVIRTQ_DESC_OFF_ID, d.id);
    if (flagsToo) this.ring.writeU16(off + PVIRTQ_DESC_OFF_FLAGS, d.flags);
  }

  readDesc(pos: number): RawDesc {
    const off = PVIRTQ_DESC_SIZE * pos;
    return {
      addr: this.ring.readU64AsNumber(off),
      len: this.ring.readU32(off + PVIRTQ_DESC_OFF_LEN),
      id: this.ring.readU16(off + PVIRTQ_DESC_OFF_ID),
      flags: this.ring.readU16(off + PVIRTQ_DESC_OFF_FLAGS),
    };
  }

  /** Writes descriptors at the avail position, the first one's flags last; returns the ring descriptors used. */
  place(descs: readonly Omit<RawDesc, "flags">[], flags: readonly number[]): void {
    const first = this.availPos;
    const firstWrap = this.availWrap;
    descs.forEach((d, k) => {
      const f = flags[k]! | availBits(this.availWrap);
      this.writeDesc(this.availPos, { ...d, flags: f }, k > 0);
      if (++this.availPos === this.size) {
        this.availPos = 0;
        this.availWrap ^= 1;
      }
    });
    const f0 = flags[0]! | availBits(firstWrap);
    this.ring.atomicStoreU16(PVIRTQ_DESC_SIZE * first + PVIRTQ_DESC_OFF_FLAGS, f0);
  }

  /**
   * Makes a buffer available: direct descriptors chained with NEXT, or one
   * INDIRECT descriptor whose table (at `indirect`) holds them. The buffer ID
   * goes into every ring descriptor (as Linux does; the device reads the
   * last). Returns the ID.
   */
  add(bufs: readonly Buf[], opts: { id?: number; indirect?: number } = {}): number {
    const id = opts.id ?? this.#free.shift();
    if (id === undefined) throw new Error("driver model: no free buffer ID");
    if (opts.id !== undefined) this.#free.splice(this.#free.indexOf(id), 1);
    if (opts.indirect !== undefined) {
      bufs.forEach((b, i) => {
        const off = opts.indirect! + PVIRTQ_DESC_SIZE * i;
        this.mem.writeU64(off, BigInt(b.addr));
        this.mem.writeU32(off + PVIRTQ_DESC_OFF_LEN, b.len);
        this.mem.writeU16(off + PVIRTQ_DESC_OFF_ID, 0);
        this.mem.writeU16(
          off + PVIRTQ_DESC_OFF_FLAGS,
          b.writable === true ? VIRTQ_DESC_F_WRITE : 0,
        );
      });
      const len = PVIRTQ_DESC_SIZE * bufs.length;
      this.place([{ addr: opts.indirect, len, id }], [VIRTQ_DESC_F_INDIRECT]);
      this.ndescs.set(id, 1);
      return id;
    }
    const flags = bufs.map(
      (b, k) =>
        (b.writable === true ? VIRTQ_DESC_F_WRITE : 0) |
        (k < bufs.length - 1 ? VIRTQ_DESC_F_NEXT : 0),
    );
    this.place(
      bufs.map((b) => ({ addr: b.addr, len: b.len, id })),
      flags,
    );
    this.ndescs.set(id, bufs.length);
    return id;
  }

  /** The next used descriptor, or null (§2.8.22); skips the list's other descriptors. */
  popUsed(): { id: number; len: number; write: boolean } | null {
    if (this.ndescs.size === 0) return null;
    const off = PVIRTQ_DESC_SIZE * this.usedPos;
    const flags = this.ring.atomicLoadU16(off + PVIRTQ_DESC_OFF_FLAGS);
    if (!isPackedDescUsed(flags, this.usedWrap)) return null;
    const id = this.ring.readU16(off + PVIRTQ_DESC_OFF_ID);
    const len = this.ring.readU32(off + PVIRTQ_DESC_OFF_LEN);
    const n = this.ndescs.get(id);
    if (n === undefined) throw new Error(`driver model: used ID ${id} is not outstanding`);
    this.ndescs.delete(id);
    this.#free.push(id);
    this.usedPos += n;
    if (this.usedPos >= this.size) {
      this.usedPos -= this.size;
      this.usedWrap ^= 1;
    }
    return { id, len, write: (flags & VIRTQ_DESC_F_WRITE) !== 0 };
  }

  drainUsed(): { id: number; len: number }[] {
    const out: { id: number; len: number }[] = [];
    for (let u = this.popUsed(); u !== null; u = this.popUsed()) out.push({ id: u.id, len: u.len });
    return out;
  }

  /** Writes the Driver Event Suppression structure: offset/wrap first, then flags. */
  setDriverEvent(flags: number, off = 0, wrap = 0): void {
    this.driverEvent.atomicStoreU16(PVIRTQ_EVENT_OFF_DESC, off | (wrap << 15));
    this.driverEvent.atomicStoreU16(PVIRTQ_EVENT_OFF_FLAGS, flags);
  }

  /** Re-arms for the next used descriptor (Linux virtqueue_enable_cb_prepare_packed with EVENT_IDX). */
  armAtUsed(): void {
    this.setDriverEvent(RING_EVENT_FLAGS_DESC, this.usedPos, this.usedWrap);
  }

  get deviceEventState(): { flags: number; off: number; wrap: number } {
    const d = this.deviceEvent.atomicLoadU16(PVIRTQ_EVENT_OFF_DESC);
    const flags = this.deviceEvent.atomicLoadU16(PVIRTQ_EVENT_OFF_FLAGS);
    return { flags, off: d & 0x7fff, wrap: d >>> 15 };
  }
}

function setup(
  size = 8,
  cfg: Partial<PackedDeviceQueueConfig> = {},
  start: PackedRingState = PACKED_RING_START,
) {
  const mem = GuestMemory.createShared([{ guestPhysAddr: 0, size: MEM_SIZE }]);
  const drv = new Driver(mem, size, start);
  const broken: VirtioError[] = [];
  const q = new PackedDeviceQueue(mem, {
    size,
    ...drv.addresses,
    onBroken: (e) => broken.push(e),
    ...(start === PACKED_RING_START ? {} : { resume: start }),
    ...cfg,
  });
  return { mem, drv, q, broken };
}

const bytes = (...v: number[]) => new Uint8Array(v);
const w = (addr: number, len: number): Buf => ({ addr, len, writable: true });
const r = (addr: number, len: number): Buf => ({ addr, len });

// ---- valid traffic -----------------------------------------------------------

test("a list: readable then writable segments, buffer ID as head, used visible only once published", () => {
  const { mem, drv, q } = setup();
  mem.write(DATA, bytes(1, 2, 3, 4));
  mem.write(DATA + 0x100, bytes(5, 6));
  const id = drv.add([r(DATA, 4), r(DATA + 0x100, 2), w(DATA + 0x200, 8)], { id: 6 });
  assert.equal(q.hasAvailable(), true);
  const c = q.popAvail();
  assert.ok(c, "popped");
  assert.equal(c.head, id);
  assert.deepEqual(
    [c.numSegs, c.numReadable, c.readableBytes, c.writableBytes, c.descCount],
    [3, 2, 6, 8, 3],
  );
  const got = new Uint8Array(6);
  assert.equal(c.reader().read(got), 6);
  assert.deepEqual(got, bytes(1, 2, 3, 4, 5, 6));
  const wr = c.writer();
  assert.equal(wr.write(bytes(9, 9, 9)), 3);
  assert.equal(q.popAvail(), null);
  assert.equal(q.hasAvailable(), false);
  assert.deepEqual([q.availPos, q.availWrap, q.inFlight], [3, 1, 1]);
  q.addUsed(id, wr.bytesWritten);
  assert.equal(q.inFlight, 0);
  assert.equal(drv.popUsed(), null, "not visible before publishUsed");
  q.publishUsed();
  assert.deepEqual(drv.popUsed(), { id, len: 3, write: true });
  assert.deepEqual([q.usedPos, q.usedWrap], [3, 1]);
  const used = drv.readDesc(0);
  assert.equal(used.flags, VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED | VIRTQ_DESC_F_WRITE);
  assert.equal(used.addr, DATA, "Element Address of a used descriptor is left alone");
  assert.equal(mem.readU16(DATA + 0x200), 0x0909);
});

test("a used descriptor without written bytes has WRITE clear and len 0", () => {
  const { drv, q } = setup(4);
  const id = drv.add([r(DATA, 16)]);
  q.addUsed(q.popAvail()!.head, 0);
  q.publishUsed();
  assert.deepEqual(drv.popUsed(), { id, len: 0, write: false });
  assert.equal(drv.readDesc(0).flags, VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED);
});

test("out-of-order completion: used descriptors in completion order, each list skipped by its length", () => {
  const { drv, q } = setup(8);
  const a = drv.add([r(DATA, 1), w(DATA + 0x10, 4)]); // positions 0-1
  const b = drv.add([w(DATA + 0x20, 4)]); // 2
  const c = drv.add([r(DATA, 1), r(DATA, 1), w(DATA + 0x30, 4)]); // 3-5
  const popped = [q.popAvail()!.head, q.popAvail()!.head, q.popAvail()!.head];
  assert.deepEqual(popped, [a, b, c]);
  q.addUsed(c, 3); // written at 0, moves the used position by 3
  q.addUsed(a, 1); // at 3, by 2
  q.addUsed(b, 2); // at 5, by 1
  assert.deepEqual([q.usedPos, q.usedWrap], [6, 1]);
  q.publishUsed();
  assert.deepEqual(
    [0, 3, 5].map((p) => drv.readDesc(p).id),
    [c, a, b],
  );
  assert.deepEqual(drv.drainUsed(), [
    { id: c, len: 3 },
    { id: a, len: 1 },
    { id: b, len: 2 },
  ]);
  assert.deepEqual([drv.usedPos, drv.usedWrap], [6, 1]);
});

test("a list crossing the ring end: wrap counter flips for its later descriptors", () => {
  const start: PackedRingState = { availPos: 3, availWrap: 1, usedPos: 3, usedWrap: 1 };
  const { drv, q } = setup(5, {}, start);
  const id = drv.add([r(DATA, 8), r(DATA + 8, 8), w(DATA + 0x100, 8), w(DATA + 0x200, 8)]);
  // Positions 3, 4 (wrap 1), then 0, 1 (wrap 0).
  assert.equal(drv.readDesc(0).flags & (VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED), VIRTQ_DESC_F_USED);
  const c = q.popAvail()!;
  assert.deepEqual([c.head, c.numSegs, c.readableBytes, c.writableBytes], [id, 4, 16, 16]);
  assert.deepEqual([q.availPos, q.availWrap], [2, 0]);
  q.addUsed(id, 16);
  q.publishUsed();
  assert.deepEqual([q.usedPos, q.usedWrap], [2, 0]);
  assert.deepEqual(drv.drainUsed(), [{ id, len: 16 }]);
  // The next list starts at 2 with wrap 0.
  const id2 = drv.add([w(DATA, 4)]);
  assert.equal(q.popAvail()!.head, id2);
  q.addUsed(id2, 4);
  q.publishUsed();
  assert.deepEqual(drv.drainUsed(), [{ id: id2, len: 4 }]);
  assert.equal(q.broken, null);
});

test("the buffer ID is the last descriptor's (§2.8.6); earlier ones are not looked at", () => {
  const { drv, q } = setup(8);
  drv.place(
    [
      { addr: DATA, len: 4, id: 0xffff },
      { addr: DATA, len: 4, id: 5 },
    ],
    [VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE],
  );
  drv.ndescs.set(5, 2);
  assert.equal(q.popAvail()!.head, 5);
  assert.equal(q.broken, null);
});

test("many laps: wrap counters stay in step for sizes 1, 3, 5, 256 and 32768", () => {
  for (const size of [1, 3, 5, 256, 32768]) {
    const { drv, q } = setup(size);
    const laps = size === 32768 ? 2.5 : 7;
    const descs = Math.ceil(laps * size);
    let n = 0;
    let k = 0;
    while (n < descs) {
      // Lists of 1..3 descriptors (as room allows), so lists cross the ring end at varying places.
      const len = Math.min(1 + (k++ % 3), drv.freeDescs, size);
      const bufs = Array.from({ length: len }, (_, i) => (i === len - 1 ? w(DATA, 2) : r(DATA, 1)));
      const id = drv.add(bufs);
      const c = q.popAvail();
      assert.ok(c, `size ${size}: list ${k} popped`);
      assert.equal(c.head, id);
      q.addUsed(id, 2);
      q.publishUsed();
      assert.deepEqual(drv.popUsed(), { id, len: 2, write: true });
      n += len;
    }
    assert.deepEqual(
      [q.availPos, q.availWrap, q.usedPos, q.usedWrap],
      [drv.availPos, drv.availWrap, drv.usedPos, drv.usedWrap],
      `size ${size}`,
    );
    assert.equal(q.broken, null);
  }
});

test("a full ring: size lists in flight, completed in reverse, published as one batch", () => {
  for (const size of [3, 5, 7]) {
    const { drv, q } = setup(size);
    for (let lap = 0; lap < 4; lap++) {
      const ids = Array.from({ length: size }, () => drv.add([w(DATA, 1)]));
      assert.equal(drv.freeDescs, 0);
      const popped = Array.from({ length: size }, () => q.popAvail()!.head);
      assert.deepEqual(popped, ids);
      assert.equal(q.popAvail(), null);
      for (const id of [...ids].reverse()) q.addUsed(id, 1);
      assert.equal(drv.popUsed(), null);
      q.publishUsed();
      assert.deepEqual(
        drv.drainUsed().map((u) => u.id),
        [...ids].reverse(),
      );
    }
    assert.equal(q.broken, null);
  }
});

test("indirect: every table entry is a buffer, NEXT/AVAIL/USED/ID in the table ignored, one ring descriptor", () => {
  const { mem, drv, q } = setup(4, { indirect: true });
  const table = DATA + 0x1000;
  const id = drv.add([r(DATA, 16), w(DATA + 0x100, 512), w(DATA + 0x300, 1)], {
    indirect: table,
  });
  // Reserved flags and IDs inside the table: ignored (§2.8.7).
  mem.writeU16(table + PVIRTQ_DESC_OFF_FLAGS, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_AVAIL);
  mem.writeU16(table + PVIRTQ_DESC_SIZE + PVIRTQ_DESC_OFF_ID, 0xbeef);
  mem.writeU16(
    table + PVIRTQ_DESC_SIZE + PVIRTQ_DESC_OFF_FLAGS,
    VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_USED,
  );
  const c = q.popAvail()!;
  assert.deepEqual(
    [c.head, c.numSegs, c.numReadable, c.readableBytes, c.writableBytes, c.descCount],
    [id, 3, 1, 16, 513, 4],
  );
  assert.deepEqual([q.availPos, q.availWrap], [1, 1]);
  q.addUsed(id, 513);
  q.publishUsed();
  assert.deepEqual(drv.drainUsed(), [{ id, len: 513 }]);
  assert.deepEqual([q.usedPos, q.usedWrap], [1, 1]);
});

test("indirect: WRITE on the INDIRECT descriptor is ignored; an unaligned table is fine", () => {
  const { drv, q } = setup(4, { indirect: true });
  const table = DATA + 0x1003;
  drv.add([r(DATA, 1)], { indirect: table });
  // Rewrite the ring descriptor's flags with WRITE added.
  const d = drv.readDesc(0);
  drv.writeDesc(0, { ...d, flags: d.flags | VIRTQ_DESC_F_WRITE });
  const c = q.popAvail()!;
  assert.deepEqual([c.readableBytes, c.writableBytes], [1, 0]);
});

test("indirect and direct lists mixed in one ring", () => {
  const { drv, q } = setup(4, { indirect: true });
  for (let round = 0; round < 10; round++) {
    const a = drv.add([r(DATA, 4), w(DATA + 0x10, 4)]);
    const b = drv.add([r(DATA, 4), w(DATA + 0x10, 8)], { indirect: DATA + 0x1000 });
    assert.equal(q.popAvail()!.head, a);
    assert.equal(q.popAvail()!.head, b);
    q.addUsed(b, 8);
    q.addUsed(a, 4);
    q.publishUsed();
    assert.deepEqual(drv.drainUsed(), [
      { id: b, len: 8 },
      { id: a, len: 4 },
    ]);
  }
  assert.equal(q.broken, null);
});

test("zero-length buffers are accepted whatever their address and dropped from the segments", () => {
  const { drv, q } = setup(4, { indirect: true });
  drv.add([r(DATA, 0), { addr: 0xdead_0000_0000, len: 0, writable: true }, w(DATA, 4)]);
  const c = q.popAvail()!;
  assert.deepEqual([c.numSegs, c.descCount, c.writableBytes], [1, 3, 4]);
  drv.add([r(0xdead_0000_0000, 0)], { indirect: DATA + 0x1000 });
  assert.equal(q.popAvail()!.numSegs, 0);
});

test("chain objects are pooled: at most size + 1 of them, distinct while in flight", () => {
  const { drv, q } = setup(4);
  const all = new Set<object>();
  for (let round = 0; round < 6; round++) {
    for (let k = 0; k < 4; k++) drv.add([r(DATA + k, 1 + round)], { id: (k + round) % 4 });
    const held = new Set<object>();
    for (let k = 0; k < 4; k++) {
      const c = q.popAvail()!;
      assert.equal(c.head, (k + round) % 4);
      assert.equal(c.readableBytes, 1 + round);
      held.add(c);
      all.add(c);
    }
    assert.equal(held.size, 4);
    for (let k = 0; k < 4; k++) q.addUsed(k, 0);
    q.publishUsed();
    drv.drainUsed();
  }
  assert.ok(all.size <= 5, `${all.size} chain objects`);
});

test("regions with holes: a buffer in a hole is refused; a table straddling two adjacent regions is read", () => {
  // Ring parts in [0, 0x10000); data in [0x20000, 0x30000) and the adjacent [0x30000, 0x40000).
  const mem = GuestMemory.createShared([
    { guestPhysAddr: 0, size: 0x10000 },
    { guestPhysAddr: 0x20000, size: 0x10000 },
    { guestPhysAddr: 0x30000, size: 0x10000 },
  ]);
  const drv = new Driver(mem, 4);
  const q = new PackedDeviceQueue(mem, { size: 4, ...drv.addresses, indirect: true });
  const id = drv.add([r(0x2fff8, 16), w(0x30100, 8)], { indirect: 0x2fff0 });
  const c = q.popAvail()!;
  assert.deepEqual([c.head, c.readableBytes, c.writableBytes], [id, 16, 8]);
  q.addUsed(id, 8);
  q.publishUsed();
  assert.deepEqual(drv.drainUsed(), [{ id, len: 8 }]);
  drv.add([r(0x18000, 1)]);
  assert.throws(
    () => q.popAvail(),
    (e) => isVirtioError(e, ErrorCode.DESC_OUT_OF_BOUNDS),
  );
});

// ---- batch publication ---------------------------------------------------------

test("a batch: nothing visible until publishUsed; then all, and the first flags are stored last with Atomics", () => {
  const { drv, q } = setup(8);
  const ids = [drv.add([w(DATA, 4)]), drv.add([r(DATA, 1), w(DATA, 4)]), drv.add([w(DATA, 4)])];
  for (let k = 0; k < 3; k++) q.popAvail();
  q.addUsed(ids[1]!, 4);
  q.addUsed(ids[0]!, 3);
  q.addUsed(ids[2]!, 2);
  // ids and lens may be written already; no flags changed.
  for (const p of [0, 1, 2, 3]) assert.equal(isPackedDescUsed(drv.readDesc(p).flags, 1), false);
  const writes: { off: number; atomic: boolean }[] = [];
  const proto = GuestSlice.prototype;
  type Store = (this: GuestSlice, off: number, v: number) => void;
  const plain = Object.getOwnPropertyDescriptor(proto, "writeU16")!.value as Store;
  const atomic = Object.getOwnPropertyDescriptor(proto, "atomicStoreU16")!.value as Store;
  proto.writeU16 = function (this: GuestSlice, off: number, v: number) {
    if (this.addr === RING) writes.push({ off, atomic: false });
    plain.call(this, off, v);
  };
  proto.atomicStoreU16 = function (this: GuestSlice, off: number, v: number) {
    if (this.addr === RING) writes.push({ off, atomic: true });
    atomic.call(this, off, v);
  };
  try {
    q.publishUsed();
  } finally {
    proto.writeU16 = plain;
    proto.atomicStoreU16 = atomic;
  }
  const flagsAt = (p: number) => PVIRTQ_DESC_SIZE * p + PVIRTQ_DESC_OFF_FLAGS;
  // Used descriptors at 0 (ids[1], 2 descs), 2 (ids[0]), 3 (ids[2]).
  assert.deepEqual(
    writes.slice(-1),
    [{ off: flagsAt(0), atomic: true }],
    "first pending, last, atomic",
  );
  assert.deepEqual(
    writes.map((x) => x.off).sort((a, b) => a - b),
    [flagsAt(0), flagsAt(2), flagsAt(3)],
    "flags only, once each",
  );
  assert.deepEqual(
    drv.drainUsed().map((u) => [u.id, u.len]),
    [
      [ids[1], 4],
      [ids[0], 3],
      [ids[2], 2],
    ],
  );
  q.publishUsed(); // nothing pending: no store
});

test("used descriptors added but not published before breaking are never published", () => {
  const { drv, q, mem } = setup(4);
  const a = drv.add([w(DATA, 4)]);
  const b = drv.add([w(DATA, 4)]);
  q.popAvail();
  q.popAvail();
  q.addUsed(a, 4);
  q.publishUsed();
  q.addUsed(b, 4); // written (id, len), flags pending
  drv.place([{ addr: DATA, len: 4, id: 9 }], [0]); // buffer ID out of range
  assert.throws(
    () => q.popAvail(),
    (e) => isVirtioError(e, ErrorCode.HEAD_OUT_OF_RANGE),
  );
  const before = snapshot(mem);
  q.publishUsed();
  assert.deepEqual(snapshot(mem), before);
  assert.deepEqual(drv.drainUsed(), [{ id: a, len: 4 }]);
  assert.equal(q.needsNotification(), false);
});

// ---- resume state -------------------------------------------------------------

test("resume state: the ring starts where it says and reports where it stands", () => {
  const start: PackedRingState = { availPos: 4, availWrap: 0, usedPos: 4, usedWrap: 0 };
  const { drv, q } = setup(6, {}, start);
  assert.deepEqual(q.ringState, start);
  assert.equal(encodePackedVringBase(q.ringState), 0x0004_0004);
  for (let k = 0; k < 5; k++) {
    const id = drv.add([r(DATA, 1), w(DATA, 1)]);
    q.addUsed(q.popAvail()!.head, 1);
    q.publishUsed();
    assert.deepEqual(drv.drainUsed(), [{ id, len: 1 }]);
  }
  // 10 descriptors from 4 (wrap 0): 4, 5 | 0..5 (wrap 1) | 0, 1 (wrap 0).
  const now: PackedRingState = { availPos: 2, availWrap: 0, usedPos: 2, usedWrap: 0 };
  assert.deepEqual(q.ringState, now);
  // A new device resumes from the encoded state (vhost-user GET_VRING_BASE → SET_VRING_BASE).
  const q2 = new PackedDeviceQueue(drv.mem, {
    size: 6,
    ...drv.addresses,
    resume: decodePackedVringBase(encodePackedVringBase(q.ringState)),
  });
  const id = drv.add([w(DATA, 2)]);
  assert.equal(q2.popAvail()!.head, id);
  q2.addUsed(id, 2);
  q2.publishUsed();
  assert.deepEqual(drv.drainUsed(), [{ id, len: 2 }]);
});

test("resume with the used position behind: those descriptors stay outstanding", () => {
  // 3 descriptors outstanding of 4: only one more may be taken.
  const start: PackedRingState = { availPos: 3, availWrap: 1, usedPos: 0, usedWrap: 1 };
  const { drv, q, broken } = setup(4, {}, start);
  drv.add([w(DATA, 1)]);
  assert.ok(q.popAvail());
  // A misbehaving driver offers the slot at position 0 again (wrap 0).
  drv.place([{ addr: DATA, len: 1, id: 3 }], [VIRTQ_DESC_F_WRITE]);
  assert.throws(
    () => q.popAvail(),
    (e) => isVirtioError(e, ErrorCode.TOO_MANY_IN_FLIGHT),
  );
  assert.equal(broken.length, 1);
});

// ---- event suppression ----------------------------------------------------------

/** Completes `n` single-descriptor lists one by one, publishing each. */
function complete(drv: Driver, q: PackedDeviceQueue, n: number, publishEach = true): void {
  for (let k = 0; k < n; k++) {
    const id = drv.add([w(DATA, 1)]);
    q.popAvail();
    q.addUsed(id, 1);
    if (publishEach) q.publishUsed();
    drv.drainUsed();
  }
  q.publishUsed();
}

test("driver flags ENABLE / DISABLE; nothing published means no notification", () => {
  for (const eventIdx of [false, true]) {
    const { drv, q } = setup(4, { eventIdx });
    assert.equal(q.needsNotification(), false);
    complete(drv, q, 1);
    assert.equal(q.needsNotification(), true, "ENABLE (the zeroed structure)");
    assert.equal(q.needsNotification(), false, "nothing new");
    drv.setDriverEvent(RING_EVENT_FLAGS_DISABLE);
    complete(drv, q, 3);
    assert.equal(q.needsNotification(), false);
    drv.setDriverEvent(RING_EVENT_FLAGS_ENABLE | 0xfffc); // reserved bits ignored
    complete(drv, q, 1);
    assert.equal(q.needsNotification(), true);
  }
});

test("DESC without EVENT_IDX, the reserved value 3, an offset outside the ring: notify", () => {
  const { drv, q } = setup(4);
  drv.setDriverEvent(RING_EVENT_FLAGS_DESC, 3, 0); // far from the window
  complete(drv, q, 1);
  assert.equal(q.needsNotification(), true);
  drv.setDriverEvent(0x3);
  complete(drv, q, 1);
  assert.equal(q.needsNotification(), true);
  const e = setup(4, { eventIdx: true });
  e.drv.setDriverEvent(RING_EVENT_FLAGS_DESC, 4, 1);
  complete(e.drv, e.q, 1);
  assert.equal(e.q.needsNotification(), true, "offset 4 is not a position of a ring of 4");
  e.drv.setDriverEvent(0x3);
  complete(e.drv, e.q, 1);
  assert.equal(e.q.needsNotification(), true);
});

/**
 * Oracle: the event descriptor (off, wrap) is passed when the used position,
 * counted descriptor by descriptor from `old` (position, wrap), visits it
 * during the `count` steps.
 */
function passedOracle(
  size: number,
  oldPos: number,
  oldWrap: number,
  count: number,
  off: number,
  wrap: number,
): boolean {
  let p = oldPos;
  let wr = oldWrap;
  for (let k = 0; k < count; k++) {
    if (p === off && wr === wrap) return true;
    if (++p === size) {
      p = 0;
      wr ^= 1;
    }
  }
  return false;
}

test("EVENT_IDX: DESC notifies iff the used position passed the event descriptor (oracle, across wraps)", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 9 }),
      fc.array(
        fc.record({
          batches: fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 4 }),
          off: fc.nat(),
          wrap: fc.constantFrom(0, 1),
          listLen: fc.integer({ min: 1, max: 3 }),
        }),
        { minLength: 1, maxLength: 10 },
      ),
      (size, steps) => {
        const { drv, q } = setup(size, { eventIdx: true });
        for (const s of steps) {
          const off = s.off % size;
          drv.setDriverEvent(RING_EVENT_FLAGS_DESC, off, s.wrap);
          const oldPos = q.usedPos;
          const oldWrap = q.usedWrap;
          let count = 0;
          for (const b of s.batches) {
            const lists = [];
            for (let k = 0; k < b; k++) {
              const len = Math.min(s.listLen, drv.freeDescs);
              if (len === 0 || drv.freeIds === 0) break;
              lists.push(drv.add(Array.from({ length: len }, () => w(DATA, 1))));
              count += len;
            }
            for (const _ of lists) q.popAvail();
            for (const id of lists.reverse()) q.addUsed(id, 1);
            q.publishUsed();
            drv.drainUsed();
          }
          const want = passedOracle(size, oldPos, oldWrap, count, off, s.wrap);
          assert.equal(q.needsNotification(), want, `size ${size} step ${JSON.stringify(s)}`);
        }
        assert.equal(q.broken, null);
      },
    ),
    { numRuns: 300 },
  );
});

test("EVENT_IDX: 2·size or more descriptors published since the last check always notify", () => {
  const { drv, q } = setup(3, { eventIdx: true });
  drv.setDriverEvent(RING_EVENT_FLAGS_DESC, 1, 0);
  complete(drv, q, 6);
  assert.equal(q.needsNotification(), true);
  drv.setDriverEvent(RING_EVENT_FLAGS_DESC, q.usedPos, q.usedWrap ^ 1); // one lap away
  complete(drv, q, 3);
  assert.equal(q.needsNotification(), false, "3 steps from here do not reach it");
});

test("EVENT_IDX: a driver re-arming at its used position hears of the next used descriptor only", () => {
  const { drv, q } = setup(5, { eventIdx: true });
  for (let k = 0; k < 23; k++) {
    drv.armAtUsed();
    const a = drv.add([w(DATA, 1)]);
    const b = drv.add([w(DATA, 1)]);
    q.popAvail();
    q.popAvail();
    q.addUsed(a, 1);
    q.publishUsed();
    assert.equal(q.needsNotification(), true, `round ${k}: first used descriptor`);
    q.addUsed(b, 1);
    q.publishUsed();
    assert.equal(q.needsNotification(), false, `round ${k}: driver not re-armed`);
    drv.drainUsed();
  }
});

test("notificationOwed: DESC behind the published position on an idle queue; forced once", () => {
  const { drv, q } = setup(4, { eventIdx: true });
  assert.equal(q.notificationOwed(), false, "fresh queue, zeroed DESC flags: ENABLE");
  drv.armAtUsed();
  assert.equal(q.notificationOwed(), false);
  complete(drv, q, 1);
  assert.equal(q.notificationOwed(), true, "the driver asked for position 0, which is used");
  q.forceNotification();
  assert.equal(q.needsNotification(), true);
  assert.equal(q.notificationOwed(), false, "once per published state");
  drv.armAtUsed();
  assert.equal(q.notificationOwed(), false);
  drv.setDriverEvent(RING_EVENT_FLAGS_DISABLE);
  complete(drv, q, 1);
  assert.equal(q.notificationOwed(), false, "callbacks off");
  const plain = setup(4);
  complete(plain.drv, plain.q, 1);
  assert.equal(plain.q.notificationOwed(), false, "no EVENT_IDX");
});

test("enable/disable write the Device Event Suppression structure; enable re-checks the ring", () => {
  const { drv, q } = setup(4);
  q.disableNotification();
  assert.equal(drv.deviceEventState.flags, RING_EVENT_FLAGS_DISABLE);
  assert.equal(q.enableNotification(), false);
  assert.equal(drv.deviceEventState.flags, RING_EVENT_FLAGS_ENABLE);
  q.disableNotification();
  drv.add([w(DATA, 1)]); // slips in while disabled
  assert.equal(q.enableNotification(), true);
});

test("EVENT_IDX: enable writes DESC with the next avail position and wrap counter", () => {
  const { drv, q } = setup(3, { eventIdx: true });
  for (const [pos, wrap] of [
    [0, 1],
    [1, 1],
    [2, 1],
    [0, 0],
    [1, 0],
    [2, 0],
    [0, 1],
  ] as const) {
    assert.equal(q.enableNotification(), false);
    assert.deepEqual(drv.deviceEventState, { flags: RING_EVENT_FLAGS_DESC, off: pos, wrap });
    const id = drv.add([w(DATA, 1)]);
    assert.equal(q.enableNotification(), true, "work pending");
    q.popAvail();
    q.addUsed(id, 1);
    q.publishUsed();
    drv.drainUsed();
  }
  q.disableNotification();
  assert.equal(drv.deviceEventState.flags, RING_EVENT_FLAGS_DISABLE);
});

test("no lost wakeup: whichever order, enable sees the new list or the driver notifies", () => {
  /** The driver's decision after making descriptor (pos, wrap) available (Linux virtqueue_kick_prepare_packed). */
  const driverKicks = (drv: Driver, pos: number, wrap: number): boolean => {
    const e = drv.deviceEventState;
    if (e.flags === RING_EVENT_FLAGS_DISABLE) return false;
    if (e.flags !== RING_EVENT_FLAGS_DESC) return true;
    return e.off === pos && e.wrap === wrap;
  };
  for (const eventIdx of [false, true]) {
    for (const order of ["add+check, enable", "add, enable, check", "enable, add+check"]) {
      const { drv, q } = setup(4, { eventIdx });
      drv.add([w(DATA, 1)]);
      q.disableNotification();
      q.addUsed(q.popAvail()!.head, 0);
      const pos = drv.availPos;
      const wrap = drv.availWrap;
      let slipped: boolean;
      let kicked: boolean;
      if (order === "add+check, enable") {
        drv.add([w(DATA, 1)]);
        kicked = driverKicks(drv, pos, wrap);
        slipped = q.enableNotification();
        assert.equal(slipped, true);
      } else if (order === "add, enable, check") {
        drv.add([w(DATA, 1)]);
        slipped = q.enableNotification();
        kicked = driverKicks(drv, pos, wrap);
        assert.equal(slipped, true);
      } else {
        slipped = q.enableNotification();
        drv.add([w(DATA, 1)]);
        kicked = driverKicks(drv, pos, wrap);
        assert.equal(kicked, true, "notifications were enabled for this descriptor");
      }
      assert.ok(slipped || kicked, `eventIdx=${eventIdx}, ${order}: lost wakeup`);
      assert.ok(q.popAvail());
    }
  }
});

// ---- API misuse and breaking ---------------------------------------------------------

test("addUsed: misuse is a RangeError; an ID not in flight is USED_HEAD_NOT_IN_FLIGHT, queue not broken", () => {
  const { drv, q, broken } = setup(4);
  const id = drv.add([w(DATA, 8)]);
  q.popAvail();
  for (const [h, l] of [
    [4, 0],
    [-1, 0],
    [0.5, 0],
    [Number.NaN, 0],
    [id, -1],
    [id, 2 ** 32],
    [id, 1.5],
    [id, 9],
  ] as const) {
    assert.throws(() => q.addUsed(h, l), RangeError, `${h} ${l}`);
  }
  assert.throws(
    () => q.addUsed((id + 1) % 4, 0),
    (e) => isVirtioError(e, ErrorCode.USED_HEAD_NOT_IN_FLIGHT),
  );
  q.addUsed(id, 8);
  assert.throws(
    () => q.addUsed(id, 8),
    (e) => isVirtioError(e, ErrorCode.USED_HEAD_NOT_IN_FLIGHT),
    "already used, not yet published",
  );
  q.publishUsed();
  assert.throws(
    () => q.addUsed(id, 8),
    (e) => isVirtioError(e, ErrorCode.USED_HEAD_NOT_IN_FLIGHT),
  );
  assert.deepEqual(drv.drainUsed(), [{ id, len: 8 }], "only one used descriptor written");
  assert.equal(q.broken, null);
  assert.equal(broken.length, 0);
});

test("markBroken from outside is sticky, keeps the first error, calls onBroken once, stops all writes", () => {
  const { mem, drv, q, broken } = setup(4);
  const id = drv.add([w(DATA, 8)]);
  q.popAvail();
  const first = new VirtioErrorCtor(ErrorCode.DEVICE_BROKEN, "first");
  q.markBroken(first);
  q.markBroken(new VirtioErrorCtor(ErrorCode.DEVICE_RESET, "second"));
  assert.equal(q.broken, first);
  assert.deepEqual(broken, [first]);
  drv.add([w(DATA, 8)]);
  const before = snapshot(mem);
  assert.equal(q.hasAvailable(), false);
  assert.equal(q.popAvail(), null);
  assert.equal(q.enableNotification(), false);
  q.disableNotification();
  q.addUsed(id, 8);
  assert.equal(q.inFlight, 0, "the completion is accounted for");
  q.publishUsed();
  assert.equal(q.needsNotification(), false);
  assert.equal(q.notificationOwed(), false);
  assert.deepEqual(snapshot(mem), before, "nothing written");
});

test("QUEUE_CONFIG: size, alignment, placement, resume state", () => {
  const mem = GuestMemory.createShared([{ guestPhysAddr: 0, size: 0x10000 }]);
  const ok = { size: 5, descAddr: 0x1000, driverEventAddr: 0x2000, deviceEventAddr: 0x2004 };
  assert.equal(new PackedDeviceQueue(mem, ok).size, 5, "not a power of two: fine");
  const bad: Partial<PackedDeviceQueueConfig>[] = [
    { size: 0 },
    { size: 32769 },
    { size: 2.5 },
    { descAddr: 0x1008 },
    { driverEventAddr: 0x2002 },
    { deviceEventAddr: 0x2006 },
    { descAddr: 0xfff0 },
    { deviceEventAddr: 0x10000 },
    { descAddr: -16 },
    { resume: { availPos: 5, availWrap: 1, usedPos: 0, usedWrap: 1 } },
    { resume: { availPos: 0, availWrap: 1, usedPos: 1, usedWrap: 1 } },
  ];
  for (const b of bad) {
    assert.throws(
      () => new PackedDeviceQueue(mem, { ...ok, ...b }),
      (e) => isVirtioError(e, ErrorCode.QUEUE_CONFIG),
      JSON.stringify(b),
    );
  }
  assert.throws(() => new PackedDeviceQueue(mem, { ...ok, maxIndirectEntries: 0 }), RangeError);
  const q = new PackedDeviceQueue(mem, { ...ok, size: 1, descAddr: 0 });
  assert.deepEqual([q.descAddr, q.driverEventAddr, q.deviceEventAddr], [0, 0x2000, 0x2004]);
});

// ---- violations: each one breaks the queue and nothing is written after --------------

function snapshot(mem: GuestMemory): Uint8Array {
  const out = new Uint8Array(MEM_SIZE);
  mem.read(0, out);
  return out;
}

interface Violation {
  name: string;
  code: ErrorCodeValue;
  size?: number;
  cfg?: Partial<PackedDeviceQueueConfig>;
  start?: PackedRingState;
  /** Sets the ring up; the next popAvail must fail. */
  arrange(drv: Driver, q: PackedDeviceQueue, mem: GuestMemory): void;
}

const TABLE = DATA + 0x2000;

/** Writes an indirect table of raw entries at TABLE. */
function table(mem: GuestMemory, entries: readonly Omit<RawDesc, "id">[]): void {
  entries.forEach((e, i) => {
    const off = TABLE + PVIRTQ_DESC_SIZE * i;
    mem.writeU64(off, BigInt(e.addr));
    mem.writeU32(off + PVIRTQ_DESC_OFF_LEN, e.len);
    mem.writeU16(off + PVIRTQ_DESC_OFF_FLAGS, e.flags);
  });
}

const violations: Violation[] = [
  {
    name: "a descriptor marked available while every ring descriptor is outstanding",
    code: ErrorCode.TOO_MANY_IN_FLIGHT,
    size: 3,
    arrange(drv, q) {
      for (let k = 0; k < 3; k++) drv.add([w(DATA, 1)]);
      for (let k = 0; k < 3; k++) q.popAvail();
      // Position 0 again, with the new wrap counter, while ID 0 is still in flight.
      drv.place([{ addr: DATA, len: 1, id: 2 }], [VIRTQ_DESC_F_WRITE]);
    },
  },
  {
    name: "a later descriptor of the list not marked available",
    code: ErrorCode.DESC_NOT_AVAIL,
    arrange(drv) {
      const p = drv.availPos + 1;
      drv.add([r(DATA, 1), w(DATA, 1)]);
      drv.writeDesc(p, { ...drv.readDesc(p), flags: VIRTQ_DESC_F_WRITE }); // AVAIL 0, USED 0
    },
  },
  {
    name: "a later descriptor marked used (AVAIL and USED equal)",
    code: ErrorCode.DESC_NOT_AVAIL,
    arrange(drv) {
      const p = drv.availPos + 1;
      drv.add([r(DATA, 1), w(DATA, 1)]);
      const f = VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED;
      drv.writeDesc(p, { ...drv.readDesc(p), flags: f });
    },
  },
  {
    name: "a list crossing the ring end whose later descriptor keeps the old wrap counter",
    code: ErrorCode.DESC_NOT_AVAIL,
    size: 4,
    start: { availPos: 3, availWrap: 1, usedPos: 3, usedWrap: 1 },
    arrange(drv) {
      drv.add([r(DATA, 1), w(DATA, 1)]); // positions 3 (wrap 1), 0 (wrap 0)
      drv.writeDesc(0, { ...drv.readDesc(0), flags: VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_AVAIL });
    },
  },
  {
    name: "a list running into outstanding descriptors",
    code: ErrorCode.CHAIN_TOO_LONG,
    size: 4,
    arrange(drv, q) {
      drv.add([w(DATA, 1)]);
      drv.add([w(DATA, 1)]);
      q.popAvail();
      q.popAvail();
      // Two free descriptors (2, 3); a list of three would reuse position 0.
      drv.place(
        [
          { addr: DATA, len: 1, id: 2 },
          { addr: DATA, len: 1, id: 2 },
          { addr: DATA, len: 1, id: 2 },
        ],
        [VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE],
      );
    },
  },
  {
    name: "a list longer than the ring (NEXT on every descriptor, all available)",
    code: ErrorCode.CHAIN_TOO_LONG,
    size: 3,
    arrange(drv) {
      const d = { addr: DATA, len: 1, id: 0 };
      drv.place([d, d, d], [VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_NEXT]);
    },
  },
  {
    name: "buffers adding up to more than 2^32 - 1 bytes",
    code: ErrorCode.CHAIN_TOO_LONG,
    size: 32768,
    cfg: { indirect: true },
    arrange(drv, _q, mem) {
      // 5462 buffers of the whole memory (0xc0000 bytes) add up to just above 2^32 - 1.
      const n = Math.ceil(2 ** 32 / MEM_SIZE);
      table(
        mem,
        Array.from({ length: n }, () => ({ addr: 0, len: MEM_SIZE, flags: 0 })),
      );
      drv.place([{ addr: TABLE, len: PVIRTQ_DESC_SIZE * n, id: 0 }], [VIRTQ_DESC_F_INDIRECT]);
    },
  },
  {
    name: "an indirect table with more entries than the queue size",
    code: ErrorCode.CHAIN_TOO_LONG,
    size: 2,
    cfg: { indirect: true },
    arrange(drv, _q, mem) {
      table(
        mem,
        [0, 1, 2].map(() => ({ addr: DATA, len: 1, flags: 0 })),
      );
      drv.place([{ addr: TABLE, len: 48, id: 0 }], [VIRTQ_DESC_F_INDIRECT]);
    },
  },
  {
    name: "a buffer outside guest memory",
    code: ErrorCode.DESC_OUT_OF_BOUNDS,
    arrange(drv) {
      drv.add([r(MEM_SIZE - 4, 8)]);
    },
  },
  {
    name: "a buffer whose address is beyond 2^53",
    code: ErrorCode.DESC_OUT_OF_BOUNDS,
    arrange(drv) {
      drv.add([r(0xffff_ffff_ffff_f000, 1)]);
    },
  },
  {
    name: "an indirect table entry outside guest memory",
    code: ErrorCode.DESC_OUT_OF_BOUNDS,
    cfg: { indirect: true },
    arrange(drv, _q, mem) {
      table(mem, [{ addr: MEM_SIZE, len: 1, flags: 0 }]);
      drv.place([{ addr: TABLE, len: 16, id: 0 }], [VIRTQ_DESC_F_INDIRECT]);
    },
  },
  {
    name: "a readable descriptor after a writable one",
    code: ErrorCode.READ_AFTER_WRITE,
    arrange(drv) {
      drv.add([w(DATA, 1), r(DATA, 1)]);
    },
  },
  {
    name: "a readable indirect entry after a writable one",
    code: ErrorCode.READ_AFTER_WRITE,
    cfg: { indirect: true },
    arrange(drv) {
      drv.add([w(DATA, 1), r(DATA, 1)], { indirect: TABLE });
    },
  },
  {
    name: "INDIRECT without VIRTIO_F_INDIRECT_DESC",
    code: ErrorCode.INDIRECT_TABLE,
    arrange(drv) {
      drv.add([r(DATA, 1)], { indirect: TABLE });
    },
  },
  {
    name: "an indirect table of length 0",
    code: ErrorCode.INDIRECT_TABLE,
    cfg: { indirect: true },
    arrange(drv) {
      drv.place([{ addr: TABLE, len: 0, id: 0 }], [VIRTQ_DESC_F_INDIRECT]);
    },
  },
  {
    name: "an indirect table length not a multiple of 16",
    code: ErrorCode.INDIRECT_TABLE,
    cfg: { indirect: true },
    arrange(drv) {
      drv.place([{ addr: TABLE, len: 24, id: 0 }], [VIRTQ_DESC_F_INDIRECT]);
    },
  },
  {
    name: "an indirect table above the device's cap",
    code: ErrorCode.INDIRECT_TABLE,
    cfg: { indirect: true, maxIndirectEntries: 2 },
    arrange(drv) {
      drv.add([r(DATA, 1), r(DATA, 1), r(DATA, 1)], { indirect: TABLE });
    },
  },
  {
    name: "an indirect table outside guest memory",
    code: ErrorCode.INDIRECT_TABLE,
    cfg: { indirect: true },
    arrange(drv) {
      drv.place([{ addr: MEM_SIZE - 16, len: 32, id: 0 }], [VIRTQ_DESC_F_INDIRECT]);
    },
  },
  {
    name: "INDIRECT inside an indirect table",
    code: ErrorCode.INDIRECT_NESTED,
    cfg: { indirect: true },
    arrange(drv, _q, mem) {
      table(mem, [
        { addr: DATA, len: 1, flags: 0 },
        { addr: TABLE, len: 32, flags: VIRTQ_DESC_F_INDIRECT },
      ]);
      drv.place([{ addr: TABLE, len: 32, id: 0 }], [VIRTQ_DESC_F_INDIRECT]);
    },
  },
  {
    name: "INDIRECT together with NEXT",
    code: ErrorCode.INDIRECT_NEXT,
    cfg: { indirect: true },
    arrange(drv, _q, mem) {
      table(mem, [{ addr: DATA, len: 1, flags: 0 }]);
      drv.place(
        [
          { addr: TABLE, len: 16, id: 0 },
          { addr: DATA, len: 1, id: 0 },
        ],
        [VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 0],
      );
    },
  },
  {
    name: "INDIRECT on a descriptor after a NEXT",
    code: ErrorCode.INDIRECT_NEXT,
    cfg: { indirect: true },
    arrange(drv, _q, mem) {
      table(mem, [{ addr: DATA, len: 1, flags: 0 }]);
      drv.place(
        [
          { addr: DATA, len: 1, id: 0 },
          { addr: TABLE, len: 16, id: 0 },
        ],
        [VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_INDIRECT],
      );
    },
  },
  {
    name: "a buffer ID equal to the queue size",
    code: ErrorCode.HEAD_OUT_OF_RANGE,
    size: 5,
    arrange(drv) {
      drv.place([{ addr: DATA, len: 1, id: 5 }], [0]);
    },
  },
  {
    name: "a buffer ID of 0xffff in the last descriptor of a list",
    code: ErrorCode.HEAD_OUT_OF_RANGE,
    arrange(drv) {
      drv.place(
        [
          { addr: DATA, len: 1, id: 0 },
          { addr: DATA, len: 1, id: 0xffff },
        ],
        [VIRTQ_DESC_F_NEXT, 0],
      );
    },
  },
  {
    name: "a buffer ID still in flight",
    code: ErrorCode.HEAD_IN_USE,
    arrange(drv, q) {
      drv.add([w(DATA, 1)], { id: 3 });
      q.popAvail();
      drv.place([{ addr: DATA, len: 1, id: 3 }], [0]);
    },
  },
  {
    name: "a buffer ID used but not yet published",
    code: ErrorCode.HEAD_IN_USE,
    arrange(drv, q) {
      drv.add([w(DATA, 1)], { id: 3 });
      q.addUsed(q.popAvail()!.head, 1);
      drv.place([{ addr: DATA, len: 1, id: 3 }], [0]);
    },
  },
];

for (const v of violations) {
  test(`${v.code}: ${v.name} breaks the queue; nothing is written after`, () => {
    const { mem, drv, q, broken } = setup(v.size ?? 8, v.cfg ?? {}, v.start ?? PACKED_RING_START);
    // One list in flight before, completed after the break: its completion must not be written.
    const early =
      drv.freeIds > 0 && drv.freeDescs > 1 && v.size === undefined
        ? drv.add([w(DATA, 4)], { id: 7 })
        : -1;
    if (early >= 0) assert.equal(q.popAvail()?.head, early);
    v.arrange(drv, q, mem);
    const before = snapshot(mem);
    let thrown: unknown;
    try {
      q.popAvail();
    } catch (e) {
      thrown = e;
    }
    assert.ok(isVirtioError(thrown, v.code), `expected ${v.code}, got ${String(thrown)}`);
    assert.equal(q.broken, thrown);
    assert.equal(broken.length, 1);
    assert.equal(broken[0], thrown);
    assert.equal(q.popAvail(), null);
    assert.equal(q.hasAvailable(), false);
    assert.equal(q.enableNotification(), false);
    q.disableNotification();
    if (early >= 0) q.addUsed(early, 4);
    q.publishUsed();
    assert.equal(q.needsNotification(), false);
    assert.deepEqual(snapshot(mem), before, "guest memory unchanged");
    assert.equal(broken.length, 1, "onBroken once");
  });
}

// ---- property: random valid traffic, every completion delivered exactly once ------------

/** One step of a run, chosen by fast-check. */
type Op =
  | { op: "add"; len: number; readable: number; indirect: boolean }
  | { op: "pop" }
  | { op: "complete"; pick: number; len: number }
  | { op: "publish" }
  | { op: "reap" };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      op: fc.constant("add" as const),
      len: fc.integer({ min: 1, max: 4 }),
      readable: fc.integer({ min: 0, max: 4 }),
      indirect: fc.boolean(),
    }),
  },
  { weight: 4, arbitrary: fc.constant({ op: "pop" } as const) },
  {
    weight: 4,
    arbitrary: fc.record({ op: fc.constant("complete" as const), pick: fc.nat(), len: fc.nat() }),
  },
  { weight: 2, arbitrary: fc.constant({ op: "publish" } as const) },
  { weight: 2, arbitrary: fc.constant({ op: "reap" } as const) },
);

test("property: random valid traffic delivers every completion exactly once, in completion order", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 11 }),
      fc.nat(),
      fc.boolean(),
      fc.array(opArb, { maxLength: 300, size: "max" }),
      (size, startAt, eventIdx, ops) => {
        const pos = startAt % size;
        const start: PackedRingState = {
          availPos: pos,
          availWrap: (startAt & 1) as WrapCounter,
          usedPos: pos,
          usedWrap: (startAt & 1) as WrapCounter,
        };
        const { drv, q } = setup(size, { indirect: true, eventIdx }, start);
        const writable = new Map<number, number>(); // id -> writable bytes, as the driver offered
        const held: number[] = []; // popped by the device, not completed
        const pending: { id: number; len: number }[] = []; // added, not published
        const published: { id: number; len: number }[] = []; // published, not yet reaped
        let submitted = 0;
        let delivered = 0;
        const reap = () => {
          for (const u of drv.drainUsed()) {
            const want = published.shift();
            assert.ok(want, `driver saw used ID ${u.id} that was not published`);
            assert.deepEqual(u, want);
            delivered++;
          }
        };
        for (const o of ops) {
          if (o.op === "add") {
            const len = Math.min(o.len, o.indirect ? size : drv.freeDescs);
            if (len === 0 || drv.freeIds === 0 || drv.freeDescs === 0) continue;
            const readable = Math.min(o.readable, len);
            const bufs = Array.from({ length: len }, (_, k) =>
              k < readable ? r(DATA + 16 * k, 1 + k) : w(DATA + 0x100 * k, 8 + k),
            );
            let bytes = 0;
            for (const b of bufs) if (b.writable === true) bytes += b.len;
            const id = drv.add(
              bufs,
              o.indirect ? { indirect: DATA + 0x4000 + 0x100 * drv.availPos } : {},
            );
            writable.set(id, bytes);
            submitted++;
          } else if (o.op === "pop") {
            const c = q.popAvail();
            if (c !== null) {
              assert.equal(c.writableBytes, writable.get(c.head));
              held.push(c.head);
            }
          } else if (o.op === "complete") {
            if (held.length === 0) continue;
            const id = held.splice(o.pick % held.length, 1)[0]!;
            const len = o.len % (writable.get(id)! + 1);
            q.addUsed(id, len);
            pending.push({ id, len });
          } else if (o.op === "publish") {
            q.publishUsed();
            published.push(...pending.splice(0));
          } else {
            reap();
          }
        }
        // Drain: the device takes and completes everything, the driver reaps it all.
        for (let c = q.popAvail(); c !== null; c = q.popAvail()) held.push(c.head);
        for (const id of held.splice(0)) {
          q.addUsed(id, 0);
          pending.push({ id, len: 0 });
        }
        q.publishUsed();
        published.push(...pending.splice(0));
        reap();
        assert.equal(q.broken, null);
        assert.equal(published.length, 0);
        assert.equal(delivered, submitted);
        assert.equal(drv.ndescs.size, 0, "nothing outstanding");
        assert.equal(q.inFlight, 0);
        assert.deepEqual(q.ringState, {
          availPos: drv.availPos,
          availWrap: drv.availWrap,
          usedPos: drv.usedPos,
          usedWrap: drv.usedWrap,
        });
      },
    ),
    { numRuns: 400 },
  );
});

/**
 * PackedInflightLog on its own: the packed layout's bytes at the spec's
 * offsets, the marks of each step, recovery after a kill between any two
 * calls (and in the middle of publishing a batch, either side of the first
 * used descriptor's mark), and a log the front-end filled with anything.
 * qemu/qemu docs/interop/vhost-user.rst "Inflight I/O tracking", packed
 * virtqueue.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED } from "../spec/packed-virtqueue.ts";
import { VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from "../spec/virtqueue.ts";
import { inflightPackedQueueRegionSize, inflightRegionSize } from "../spec/vhost-user.ts";
import { PackedInflightLog, type PackedRingFlags } from "./inflight-packed.ts";
import { PackedListCopy } from "./packed-list-copy.ts";
import {
  PACKED_RING_START,
  checkPackedRingState,
  type PackedRingState,
  type WrapCounter,
} from "./packed-ring-state.ts";

const QSIZE = 8;

/** A descriptor ring's flags, all "available for wrap counter 1" unless set. */
class Flags implements PackedRingFlags {
  readonly f: number[];
  constructor(size: number) {
    this.f = new Array<number>(size).fill(VIRTQ_DESC_F_AVAIL);
  }
  flagsAt(pos: number): number {
    return this.f[pos]!;
  }
  setFlagsAt(pos: number, flags: number): void {
    this.f[pos] = flags;
  }
}

/** A list of `n` ring descriptors with buffer ID `id` (NEXT on all but the last, the last writable). */
function list(n: number, id: number, addr = 0x1000): PackedListCopy {
  const c = new PackedListCopy(n);
  for (let k = 0; k < n; k++) {
    const last = k === n - 1;
    c.push(addr + 0x100 * k, 16 + k, last ? VIRTQ_DESC_F_WRITE : VIRTQ_DESC_F_NEXT, id);
  }
  return c;
}

const u16 = (r: Uint8Array, off: number): number => r[off]! | (r[off + 1]! << 8);
const entry = (e: number): number => 32 + 32 * e;

test("the packed region size is QEMU's and DPDK's: 32 bytes per entry after a 32-byte header, 64-aligned", () => {
  assert.equal(inflightPackedQueueRegionSize(128), 4160);
  for (let n = 1; n <= 1024; n++) {
    const dpdk = Math.ceil((32 * n + 8 + 2 * 6 + 9) / 64) * 64; // get_pervq_shm_size_packed
    assert.equal(inflightPackedQueueRegionSize(n), dpdk, `queue size ${n}`);
    assert.ok(inflightPackedQueueRegionSize(n) >= 32 + 32 * n);
  }
  assert.equal(inflightRegionSize(128, false), 2112);
  assert.equal(inflightRegionSize(128, true), 4160);
});

test("a fresh log starts where SET_VRING_BASE says: every entry free, in order, version last", () => {
  const region = new Uint8Array(inflightPackedQueueRegionSize(QSIZE)).fill(0xee);
  region.fill(0, 8, 10); // version 0: fresh, whatever the rest holds
  const log = new PackedInflightLog(region, QSIZE);
  const front: PackedRingState = { availPos: 3, availWrap: 0, usedPos: 3, usedWrap: 0 };
  assert.equal(log.recover(front, QSIZE, new Flags(QSIZE)), null);
  assert.deepEqual(
    [u16(region, 8), u16(region, 10), u16(region, 12), u16(region, 14)],
    [1, QSIZE, 0, 0],
    "version, desc_num, free_head, old_free_head",
  );
  assert.deepEqual([u16(region, 16), u16(region, 18), region[20], region[21]], [3, 3, 0, 0]);
  for (let e = 0; e < QSIZE; e++) {
    assert.equal(region[entry(e)], 0, `entry ${e} not in flight`);
    assert.equal(u16(region, entry(e) + 2), e + 1, `entry ${e}'s next`);
  }
});

test("each step writes the spec's fields: a list of 2 taken, then used and published", () => {
  const region = new Uint8Array(inflightPackedQueueRegionSize(QSIZE));
  const dv = new DataView(region.buffer);
  const log = new PackedInflightLog(region, QSIZE);
  log.recover(PACKED_RING_START, QSIZE, new Flags(QSIZE));
  log.fetched(list(1, 5), 5);
  log.fetched(list(2, 3, 0x1_2345_6789), 3);
  // Entry 0 heads the first list; entries 1 and 2 hold the second one's descriptors.
  const h = entry(1);
  assert.deepEqual(
    [region[h], u16(region, h + 4), u16(region, h + 6), dv.getUint32(h + 8, true)],
    [1, 2, 2, 1],
    "inflight, last, num, counter",
  );
  assert.equal(dv.getBigUint64(entry(2) + 24, true), 0x1_2345_6789n + 0x100n, "addr");
  assert.deepEqual(
    [
      dv.getUint16(entry(2) + 16, true),
      dv.getUint16(entry(2) + 18, true),
      dv.getUint32(entry(2) + 20, true),
    ],
    [3, VIRTQ_DESC_F_WRITE, 17],
    "id, flags, len",
  );
  assert.deepEqual([u16(region, 12), u16(region, 14)], [3, 3], "free_head, old_free_head");
  log.used(3);
  log.publishing(3, 1);
  assert.deepEqual([u16(region, 12), u16(region, 16), u16(region, 18)], [1, 3, 0]);
  assert.equal(u16(region, entry(2) + 2), 3, "the list's last entry links to the old free head");
  log.published();
  assert.equal(region[h], 0, "inflight cleared");
  assert.deepEqual([u16(region, 14), u16(region, 18), region[21]], [1, 3, 1]);
});

/** The device's side of a run: take lists, complete them in any order, publish in batches. */
type Step = { op: "fetch"; n: number } | { op: "complete"; pick: number } | { op: "publish" };

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  fc.record({ op: fc.constant("fetch" as const), n: fc.integer({ min: 1, max: 3 }) }),
  fc.record({ op: fc.constant("complete" as const), pick: fc.nat() }),
  fc.constant({ op: "publish" } as const),
);

test("after a kill between any two calls, exactly the lists taken and not published come back, oldest first", () => {
  fc.assert(
    fc.property(
      fc.constantFrom(5, 8),
      fc.array(stepArb, { maxLength: 120, size: "max" }),
      (size, steps) => {
        const region = new Uint8Array(inflightPackedQueueRegionSize(size));
        const flags = new Flags(size);
        const log = new PackedInflightLog(region, size);
        log.recover(PACKED_RING_START, size, flags);
        let avail = 0;
        let used = 0; // cycle positions (0..2·size)
        const taken: { id: number; n: number }[] = [];
        let done: { id: number; n: number }[] = [];
        const ids = new Set<number>();
        let order: number[] = []; // buffer IDs in flight, in fetch order
        for (const s of steps) {
          const out = taken.reduce((k, l) => k + l.n, 0) + done.reduce((k, l) => k + l.n, 0);
          if (s.op === "fetch" && s.n <= size - out) {
            const id = [...Array(size).keys()].find((i) => !ids.has(i))!;
            ids.add(id);
            log.fetched(list(s.n, id), id);
            taken.push({ id, n: s.n });
            order.push(id);
            avail = (avail + s.n) % (2 * size);
          } else if (s.op === "complete" && taken.length > 0) {
            const [l] = taken.splice(s.pick % taken.length, 1);
            log.used(l!.id);
            done.push(l!);
          } else if (s.op === "publish" && done.length > 0) {
            used = (used + done.reduce((k, l) => k + l.n, 0)) % (2 * size);
            const pos = used % size;
            const wrap: WrapCounter = used < size ? 1 : 0;
            log.publishing(pos, wrap);
            for (const l of done) ids.delete(l.id);
            order = order.filter((id) => ids.has(id));
            log.published();
            done = [];
          }
        }
        const again = new PackedInflightLog(region, size);
        const r = again.recover(PACKED_RING_START, size, flags);
        assert.ok(r !== null && r.ring !== undefined && r.discarded === undefined);
        assert.deepEqual(r.resubmit, order);
        assert.deepEqual(r.ring, {
          availPos: avail % size,
          availWrap: avail < size ? 1 : 0,
          usedPos: used % size,
          usedWrap: used < size ? 1 : 0,
        });
        for (const l of r.lists) {
          const want = [...taken, ...done].find((t) => t.id === l.copy.bufferId)!;
          assert.equal(l.copy.count, want.n, "the list's descriptors");
        }
      },
    ),
    { numRuns: 300 },
  );
});

test("a batch killed before its first used descriptor was marked is rolled back, and its later marks undone", () => {
  const region = new Uint8Array(inflightPackedQueueRegionSize(QSIZE));
  const flags = new Flags(QSIZE);
  const log = new PackedInflightLog(region, QSIZE);
  log.recover(PACKED_RING_START, QSIZE, flags);
  log.fetched(list(1, 0), 0);
  log.fetched(list(2, 1), 1);
  log.used(1);
  log.used(0);
  log.publishing(3, 1);
  flags.f[2] = VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED; // the second used descriptor was marked, the first not
  const r = new PackedInflightLog(region, QSIZE).recover(PACKED_RING_START, QSIZE, flags);
  assert.deepEqual(r?.resubmit, [0, 1]);
  assert.deepEqual(r?.ring, { availPos: 3, availWrap: 1, usedPos: 0, usedWrap: 1 });
  assert.equal(flags.f[2], VIRTQ_DESC_F_AVAIL, "available again");
});

test("a batch killed after its first used descriptor was marked is committed", () => {
  const region = new Uint8Array(inflightPackedQueueRegionSize(QSIZE));
  const flags = new Flags(QSIZE);
  const log = new PackedInflightLog(region, QSIZE);
  log.recover(PACKED_RING_START, QSIZE, flags);
  log.fetched(list(1, 0), 0);
  log.fetched(list(2, 1), 1);
  log.used(1);
  log.publishing(2, 1);
  flags.f[0] = VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED;
  const r = new PackedInflightLog(region, QSIZE).recover(PACKED_RING_START, QSIZE, flags);
  assert.deepEqual(r?.resubmit, [0]);
  assert.deepEqual(r?.ring, { availPos: 3, availWrap: 1, usedPos: 2, usedWrap: 1 });
});

/** A used log holding one list of 2 (entries 0, 1) with buffer ID 4, then `spoil` applied. */
function spoiled(spoil: (dv: DataView) => void): string | undefined {
  const region = new Uint8Array(inflightPackedQueueRegionSize(QSIZE));
  const log = new PackedInflightLog(region, QSIZE);
  log.recover(PACKED_RING_START, QSIZE, new Flags(QSIZE));
  log.fetched(list(2, 4), 4);
  spoil(new DataView(region.buffer));
  const front = { availPos: 5, availWrap: 1, usedPos: 5, usedWrap: 1 } as const;
  const r = new PackedInflightLog(region, QSIZE).recover(front, QSIZE, new Flags(QSIZE));
  if (r?.discarded !== undefined) {
    assert.deepEqual(r.ring, front, "a log not trusted: the ring starts where SET_VRING_BASE says");
    assert.deepEqual(r.resubmit, []);
  }
  return r?.discarded;
}

test("every value read back is checked: a log that does not add up is started afresh, saying why", () => {
  assert.equal(
    spoiled(() => {}),
    undefined,
  );
  assert.equal(
    spoiled((dv) => dv.setUint16(8, 2, true)),
    "version 2",
  );
  assert.equal(
    spoiled((dv) => dv.setUint16(10, 16, true)),
    "desc_num 16, expected 8",
  );
  assert.equal(
    spoiled((dv) => dv.setUint16(12, 9, true)),
    "free_head 9 out of range",
  );
  assert.equal(
    spoiled((dv) => dv.setUint16(16, 8, true)),
    "used_idx 8 is not a position of a ring of 8",
  );
  assert.equal(
    spoiled((dv) => dv.setUint8(21, 2)),
    "old_used_wrap_counter 2",
  );
  assert.equal(
    spoiled((dv) => dv.setUint16(entry(5) + 2, 3, true)),
    "the free list loops at entry 3",
  );
  assert.equal(
    spoiled((dv) => dv.setUint16(entry(7) + 2, 12, true)),
    "the free list reaches entry 12",
  );
  assert.equal(
    spoiled((dv) => dv.setUint16(entry(0) + 6, 0, true)),
    "entry 0: num 0 is not in 1..8",
  );
  assert.equal(
    spoiled((dv) => dv.setUint16(entry(0) + 2, 2, true)),
    "entry 0: its list runs into entry 2",
  );
  assert.equal(
    spoiled((dv) => dv.setUint16(entry(0) + 4, 0, true)),
    "entry 0: last 0, but the list ends at entry 1",
  );
  assert.equal(
    spoiled((dv) => dv.setUint16(entry(1) + 18, VIRTQ_DESC_F_NEXT, true)),
    "entry 0: descriptor 1 of 2 has NEXT",
  );
  assert.equal(
    spoiled((dv) => dv.setUint16(entry(1) + 16, 8, true)),
    "entry 0: buffer ID 8 is not an ID of a ring of 8",
  );
  assert.equal(
    spoiled((dv) => {
      // A second list (entry 2 off the free list) with the same buffer ID.
      dv.setUint16(12, 3, true);
      dv.setUint16(14, 3, true);
      dv.setUint8(entry(2), 1);
      dv.setUint16(entry(2) + 6, 1, true);
      dv.setUint16(entry(2) + 4, 2, true);
      dv.setUint16(entry(2) + 16, 4, true);
    }),
    "entry 2: buffer ID 4 is in flight twice",
  );
});

test("a ring larger than the log runs untracked; a smaller one uses part of it", () => {
  const region = new Uint8Array(inflightPackedQueueRegionSize(4));
  const r = new PackedInflightLog(region, 4).recover(PACKED_RING_START, 8, new Flags(8));
  assert.equal(r?.untracked, true);
  assert.equal(r?.discarded, "ring of 8 entries, log of 4");
  const big = new Uint8Array(inflightPackedQueueRegionSize(16));
  const log = new PackedInflightLog(big, 16);
  assert.equal(log.recover(PACKED_RING_START, 5, new Flags(5)), null);
  log.fetched(list(3, 4), 4);
  const again = new PackedInflightLog(big, 16).recover(PACKED_RING_START, 5, new Flags(5));
  assert.deepEqual(again?.resubmit, [4]);
  assert.deepEqual(again?.ring, { availPos: 3, availWrap: 1, usedPos: 0, usedWrap: 1 });
});

test("garbage in the log never throws: it is trusted only if it adds up, and the run goes on whatever the front-end writes meanwhile", () => {
  fc.assert(
    fc.property(
      fc.uint8Array({
        minLength: inflightPackedQueueRegionSize(QSIZE),
        maxLength: inflightPackedQueueRegionSize(QSIZE),
      }),
      fc.boolean(),
      fc.uint8Array({ minLength: 64, maxLength: 64 }),
      (bytes, plausible, scribble) => {
        const region = new Uint8Array(bytes);
        if (plausible) {
          region.set([1, 0, QSIZE, 0], 8); // version 1, desc_num
          for (const off of [12, 14, 16, 18]) region[off + 1] = 0;
          for (const off of [12, 14]) region[off]! %= QSIZE + 1;
          for (const off of [16, 18]) region[off]! %= QSIZE;
          region[20]! &= 1;
          region[21]! &= 1;
        }
        const flags = new Flags(QSIZE);
        const log = new PackedInflightLog(region, QSIZE);
        const r = log.recover(PACKED_RING_START, QSIZE, flags);
        if (r !== null && r.discarded === undefined) {
          assert.equal(checkPackedRingState(r.ring, QSIZE), null);
          assert.equal(new Set(r.resubmit).size, r.resubmit.length);
          assert.ok(r.lists.reduce((n, l) => n + l.copy.count, 0) <= QSIZE);
        }
        // The front-end writes anything while the queue runs: the log only writes.
        region.set(scribble, 0);
        region.set(scribble, entry(3));
        const held = r?.resubmit ?? [];
        const free = [...Array(QSIZE).keys()].filter((i) => !held.includes(i));
        const out = r?.lists.reduce((n, l) => n + l.copy.count, 0) ?? 0;
        if (free.length > 0 && out < QSIZE) log.fetched(list(1, free[0]!), free[0]!);
        for (const id of held) log.used(id);
        log.publishing(0, 1);
        log.published();
      },
    ),
    { numRuns: 500 },
  );
});

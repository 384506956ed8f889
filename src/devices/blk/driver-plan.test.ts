/**
 * The driver's splitting rules (seg_max, size_max, block multiples,
 * DISCARD / WRITE_ZEROES limits), its bounce pool and its memory plan.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { availRingSize, descTableSize, usedRingSize } from "../../spec/virtqueue.ts";
import { BouncePool } from "./driver-bounce.ts";
import {
  BLK_DRIVER_SLOT_BYTES,
  blkDriverArenaBytes,
  planBlkDriverMemory,
  splitBlkDriverArena,
} from "./driver-memory.ts";
import {
  alignedRange,
  nextDataPieces,
  nextRangePieces,
  pieceScratch,
  type BlkSegment,
} from "./driver-plan.ts";

test("nextDataPieces: every request within the limits, whole blocks, covering the segments in order (property)", () => {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 1, max: 5000 }), { minLength: 1, maxLength: 40 }),
      fc.integer({ min: 2, max: 12 }),
      fc.integer({ min: 512, max: 6000 }),
      fc.constantFrom(512, 1024, 4096),
      (lens, maxSegs, sizeMax, blockSize) => {
        // Pad the last segment so the total is a whole number of blocks.
        const total0 = lens.reduce((a, b) => a + b, 0);
        lens[lens.length - 1]! += (blockSize - (total0 % blockSize)) % blockSize;
        let addr = 0x10000;
        const segs: BlkSegment[] = lens.map((len) => {
          const s = { addr, len };
          addr += len + 64;
          return s;
        });
        const maxBytes = Math.max(
          blockSize,
          Math.floor((maxSegs * sizeMax) / blockSize) * blockSize,
        );
        const lim = { maxSegs, sizeMax, maxBytes, blockSize };
        const out = pieceScratch(maxSegs);
        const cur = { index: 0, off: 0 };
        // Expected byte stream: (addr of each byte) as contiguous runs; rebuilt from the pieces.
        let seg = 0;
        let off = 0;
        for (let guard = 0; cur.index < segs.length; guard++) {
          assert.ok(guard < 10_000);
          const bytes = nextDataPieces(segs, cur, lim, out);
          if (bytes === 0) {
            // Too fragmented: the pieces a request could take from here hold less than a block.
            let sum = 0;
            let [sg, o] = [seg, off];
            for (let n = 0; n < maxSegs && sg < segs.length && sum < maxBytes; n++) {
              const take = Math.min(segs[sg]!.len - o, sizeMax, maxBytes - sum);
              sum += take;
              o += take;
              if (o === segs[sg]!.len) [sg, o] = [sg + 1, 0];
            }
            assert.ok(sum < blockSize, `fragmented verdict with ${sum} bytes available`);
            assert.deepEqual([cur.index, cur.off], [seg, off], "cursor unchanged");
            return;
          }
          assert.equal(bytes % blockSize, 0);
          assert.ok(bytes <= maxBytes);
          assert.ok(out.count >= 1 && out.count <= maxSegs);
          let sum = 0;
          for (let i = 0; i < out.count; i++) {
            assert.ok(out.len[i]! >= 1 && out.len[i]! <= sizeMax);
            // Pieces follow the segments in order, without gaps.
            assert.equal(out.a[i], segs[seg]!.addr + off);
            off += out.len[i]!;
            assert.ok(off <= segs[seg]!.len);
            if (off === segs[seg]!.len) {
              seg++;
              off = 0;
            }
            sum += out.len[i]!;
          }
          assert.equal(sum, bytes);
          assert.deepEqual([cur.index, cur.off], [seg, off]);
        }
        assert.equal(seg, segs.length);
      },
    ),
    { numRuns: 300 },
  );
});

test("nextRangePieces: aligned pieces within max bytes and max segments", () => {
  const ranges = [
    { offset: 512, length: 4096 * 3 }, // aligned part [4096, 12288)
    { offset: 0, length: 1024 }, // nothing aligned to 4096
    { offset: 16384, length: 40960 },
  ];
  assert.deepEqual(alignedRange(ranges[0]!, 4096), { start: 4096, end: 12288 });
  assert.deepEqual(alignedRange(ranges[1]!, 4096), { start: 0, end: 0 });
  const out = pieceScratch(3);
  const cur = { index: 0, off: 0 };
  const lim = { maxSeg: 3, maxBytes: 16384, align: 4096 };
  const got: [number, number][] = [];
  for (
    let n = nextRangePieces(ranges, cur, lim, out);
    n > 0;
    n = nextRangePieces(ranges, cur, lim, out)
  ) {
    assert.ok(n <= 3);
    for (let i = 0; i < n; i++) got.push([out.a[i]!, out.len[i]!]);
  }
  assert.deepEqual(got, [
    [4096, 8192],
    [16384, 16384],
    [32768, 16384],
    [49152, 8192],
  ]);
});

test("BouncePool: contiguous runs, exhaustion, reuse after free, misuse", () => {
  const p = new BouncePool(0x100000, 8 * 4096 + 100, 4096);
  assert.equal(p.pages, 8);
  const a = p.alloc(4096 * 3);
  const b = p.alloc(1);
  const c = p.alloc(4096 * 4);
  assert.deepEqual([a, b, c], [0x100000, 0x103000, 0x104000]);
  assert.equal(p.alloc(1), -1, "full");
  p.free(b, 1);
  assert.equal(p.alloc(4096 * 2), -1, "one free page is not two");
  assert.equal(p.alloc(10), b);
  p.free(a, 4096 * 3);
  p.free(b, 10);
  assert.equal(p.freeBytes, 4 * 4096);
  assert.equal(p.alloc(4096 * 4), 0x100000, "coalesced run found from the start");
  assert.throws(() => p.free(a + 1, 10), RangeError);
  assert.throws(() => p.free(0x108000, 4096), RangeError, "outside");
  p.free(c, 4096 * 4);
  assert.throws(() => p.free(c, 4096 * 4), RangeError, "twice");
  assert.throws(() => p.alloc(9 * 4096), RangeError, "never fits");
  assert.throws(() => new BouncePool(0, 100, 4096), RangeError);
  assert.throws(() => new BouncePool(0, 8192, 1000), RangeError);
});

test("BouncePool: random alloc/free never hands out overlapping runs (property)", () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 1, max: 5 * 512 })), { maxLength: 200 }),
      (ops) => {
        const p = new BouncePool(4096, 16 * 512, 512);
        const live: [number, number][] = [];
        for (const [doAlloc, bytes] of ops) {
          if (doAlloc || live.length === 0) {
            const at = p.alloc(bytes);
            if (at < 0) continue;
            const end = at + Math.ceil(bytes / 512) * 512;
            assert.ok(at >= 4096 && end <= 4096 + 16 * 512);
            for (const [s, n] of live) {
              const e = s + Math.ceil(n / 512) * 512;
              assert.ok(end <= s || at >= e, "no overlap");
            }
            live.push([at, bytes]);
          } else {
            const [s, n] = live.splice(bytes % live.length, 1)[0]!;
            p.free(s, n);
          }
        }
        const used = live.reduce((m, [, n]) => m + Math.ceil(n / 512) * 512, 0);
        assert.equal(p.freeBytes, 16 * 512 - used);
      },
    ),
  );
});

test("planBlkDriverMemory: parts aligned and disjoint; the arena splits into slots and a bounce pool", () => {
  const plan = planBlkDriverMemory({
    base: 0x1234,
    numQueues: 3,
    queueSize: 128,
    bounceBytes: 65536,
  });
  const parts: [number, number][] = [];
  plan.rings.forEach((r, i) => {
    assert.equal(r.descAddr % 4096, 0);
    parts.push([r.descAddr, descTableSize(128)]);
    parts.push([r.availAddr, availRingSize(128)]);
    parts.push([r.usedAddr, usedRingSize(128)]);
    const a = plan.indirectArenas[i]!;
    assert.equal(a.entriesPerChain, 128);
    parts.push([a.addr, 128 * 128 * 16]);
  });
  parts.push([plan.arena.addr, plan.arena.bytes]);
  parts.sort((x, y) => x[0] - y[0]);
  for (let i = 1; i < parts.length; i++)
    assert.ok(parts[i - 1]![0] + parts[i - 1]![1] <= parts[i]![0], "disjoint");
  assert.ok(plan.arena.addr + plan.arena.bytes <= plan.end);
  const split = splitBlkDriverArena(plan.arena, 3 * 128);
  assert.equal(split.slotsAddr, plan.arena.addr);
  assert.ok(split.bounceAddr >= plan.arena.addr + 3 * 128 * BLK_DRIVER_SLOT_BYTES);
  assert.equal(split.bounceAddr % 4096, 0);
  assert.ok(split.bounceBytes >= 65536);
  assert.equal(blkDriverArenaBytes(10, 8192), 10 * 32 + 4096 + 8192);
  assert.throws(() => splitBlkDriverArena({ addr: 0, bytes: 4096 }, 200), RangeError);
  const noIndirect = planBlkDriverMemory({
    base: 0,
    numQueues: 1,
    queueSize: 8,
    indirectEntries: 0,
  });
  assert.equal(noIndirect.indirectArenas.length, 0);
  assert.throws(
    () => planBlkDriverMemory({ base: 0, numQueues: 1, queueSize: 8, indirectEntries: 9 }),
    RangeError,
  );
  assert.throws(() => planBlkDriverMemory({ base: 0, numQueues: 0, queueSize: 8 }), RangeError);
});

test("planBlkDriverMemory with packed rings: any size, the three packed parts, disjoint from the rest", () => {
  const plan = planBlkDriverMemory({
    base: 0x1000,
    numQueues: 2,
    queueSize: 100,
    layout: "packed",
    bounceBytes: 65536,
  });
  const parts: [number, number][] = [];
  plan.rings.forEach((r, i) => {
    assert.equal(r.layout, "packed");
    assert.equal(r.size, 100);
    assert.equal(r.descAddr % 4096, 0);
    assert.equal(r.availAddr, r.descAddr + 100 * 16, "the Driver Area after the Descriptor Ring");
    assert.equal(r.usedAddr, r.availAddr + 4, "the Device Area after the Driver Area");
    parts.push([r.descAddr, r.totalBytes]);
    parts.push([plan.indirectArenas[i]!.addr, 100 * 100 * 16]);
  });
  parts.push([plan.arena.addr, plan.arena.bytes]);
  parts.sort((x, y) => x[0] - y[0]);
  for (let i = 1; i < parts.length; i++)
    assert.ok(parts[i - 1]![0] + parts[i - 1]![1] <= parts[i]![0], "disjoint");
  assert.equal(
    planBlkDriverMemory({ base: 0, numQueues: 1, queueSize: 8 }).rings[0]!.layout,
    "split",
  );
  assert.throws(
    () => planBlkDriverMemory({ base: 0, numQueues: 1, queueSize: 100, layout: "split" }),
    RangeError,
    "split sizes are powers of two",
  );
});

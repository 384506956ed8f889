/**
 * A random workload through BlkDriver and this project's device, checked
 * against a reference model of the disk, on split and on packed rings
 * (VIRTIO 1.2 §2.7 / §2.8; packed sizes need not be powers of two): random
 * geometry (queues, ring and indirect table sizes, seg_max / size_max, block size, bounce pool,
 * EVENT_IDX, sync or microtask calls, device in-flight limit), rounds of
 * concurrent operations on disjoint ranges (copy and zero-copy reads and
 * writes, DISCARD, WRITE_ZEROES, FLUSH, GET_ID) and injected I/O errors.
 *
 * Model: bytes the driver wrote successfully are known; a failed write
 * makes its range unknown (some of its requests may have reached the disk).
 * Every read of known bytes must return the model's bytes, every operation
 * must settle, and at the end the whole disk must match on known bytes.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { ErrorCode, isVirtioError } from "../../errors.ts";
import { MemoryBacking } from "./backing.ts";
import { BlkIoError } from "./driver-request.ts";
import type { BlkSegment } from "./driver-plan.ts";
import { ControlledBacking, blkRig, within, type BlkRig } from "./driver-test-support.ts";

const DISK = 256 * 1024;

/** xorshift32: the workload of one run, from its seed. */
function rng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 0x9e3779b9;
  return (n: number) => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
}

interface Model {
  bytes: Uint8Array;
  known: Uint8Array;
}

/**
 * Random segments covering `len` bytes (a whole number of blocks) in the user
 * area at `base`, with gaps between them, laid out so that the driver can
 * always cut whole-block requests: every block of the byte stream meets at
 * most `maxSegs` segments (when size_max is below the block size, segments
 * break only at block boundaries).
 */
function randomSegments(
  r: (n: number) => number,
  base: number,
  len: number,
  bs: number,
  maxSegs: number,
  sizeMax: number,
): BlkSegment[] {
  const cuts: number[] = [];
  for (let blk = 0; blk < len; blk += bs) {
    if (blk > 0 && r(2) === 0) cuts.push(blk);
    if (sizeMax < bs) continue;
    const inner = new Set<number>();
    for (let c = r(maxSegs); c > 0; c--) inner.add(blk + 1 + r(bs - 1));
    cuts.push(...[...inner].sort((x, y) => x - y));
  }
  cuts.push(len);
  const segs: BlkSegment[] = [];
  let addr = base;
  let prev = 0;
  for (const c of cuts) {
    segs.push({ addr, len: c - prev });
    addr += c - prev + r(3) * 8;
    prev = c;
  }
  return segs;
}

async function runWorkload(rig: BlkRig, backing: ControlledBacking, seed: number): Promise<void> {
  const r = rng(seed);
  const d = rig.driver;
  const bs = d.config.blockSize;
  const bouncePool = d.bounceFreeBytes;
  const blocks = DISK / bs;
  const model: Model = { bytes: new Uint8Array(DISK), known: new Uint8Array(DISK).fill(1) };
  const userBase = Math.ceil(rig.plan.end / 4096) * 4096 + 0x10000;
  const userStride = 0x40000;
  const sizeMax = d.config.sizeMax;
  for (let round = 0; round < 16; round++) {
    // Injected failures for this round: request start offsets.
    backing.failAt.clear();
    if (r(3) === 0) for (let k = 0; k < 3; k++) backing.failAt.add(r(blocks) * bs);
    const taken = new Uint8Array(blocks);
    const jobs: Promise<() => void>[] = [];
    const nOps = 1 + r(10);
    for (let k = 0; k < nOps; k++) {
      const len = (1 + r(r(4) === 0 ? 40 : 6)) * bs;
      const startBlock = r(blocks - len / bs + 1);
      let free = true;
      for (let b = startBlock; b < startBlock + len / bs; b++) if (taken[b] !== 0) free = false;
      if (!free) continue;
      taken.fill(1, startBlock, startBlock + len / bs);
      const off = startBlock * bs;
      const user = userBase + k * userStride;
      const queue = r(2) === 0 ? { queue: r(d.numQueues) } : undefined;
      const touchesFail = [...backing.failAt].some((f) => f >= off && f < off + len);
      const startsAtFail = backing.failAt.has(off);
      const kind = r(8);
      if (kind <= 1) {
        // Write: copy or zero-copy.
        const data = new Uint8Array(len).map(() => r(256));
        let p: Promise<void>;
        if (kind === 0) p = d.write(off, data, queue);
        else {
          const segs = randomSegments(r, user, len, bs, d.maxSegments, sizeMax);
          let at = 0;
          for (const s of segs) {
            rig.memory.write(s.addr, data.subarray(at, at + s.len));
            at += s.len;
          }
          p = d.writeSegments(off, segs, queue);
        }
        jobs.push(
          p.then(
            () => () => {
              assert.ok(!startsAtFail, `write at ${off} should have failed`);
              model.bytes.set(data, off);
              model.known.fill(1, off, off + len);
            },
            (e: unknown) => () => {
              assert.ok(e instanceof BlkIoError, String(e));
              assert.ok(touchesFail, `write at ${off} failed without an injected error`);
              model.known.fill(0, off, off + len);
            },
          ),
        );
      } else if (kind <= 3) {
        // Read: copy or zero-copy; compare known bytes with the model as it was before the round.
        const expect = model.bytes.slice(off, off + len);
        const known = model.known.slice(off, off + len);
        const check = (got: Uint8Array): void => {
          for (let i = 0; i < len; i++)
            if (known[i] === 1 && got[i] !== expect[i])
              assert.fail(
                `seed ${seed} round ${round}: byte ${off + i} read ${got[i]}, model ${expect[i]}`,
              );
        };
        let p: Promise<Uint8Array>;
        if (kind === 2) {
          const buf = new Uint8Array(len);
          p = d.read(off, buf, queue).then(() => buf);
        } else {
          const segs = randomSegments(r, user, len, bs, d.maxSegments, sizeMax);
          p = d.readSegments(off, segs, queue).then(() => {
            const buf = new Uint8Array(len);
            let at = 0;
            for (const s of segs) {
              rig.memory.read(s.addr, buf.subarray(at, at + s.len));
              at += s.len;
            }
            return buf;
          });
        }
        jobs.push(
          p.then(
            (got) => () => {
              assert.ok(!startsAtFail, `read at ${off} should have failed`);
              check(got);
            },
            (e: unknown) => () => {
              assert.ok(e instanceof BlkIoError, String(e));
              assert.ok(touchesFail);
            },
          ),
        );
      } else if (kind === 4) {
        jobs.push(
          d.discard([{ offset: off, length: len }], queue).then(() => () => {
            model.bytes.fill(0, off, off + len);
            model.known.fill(1, off, off + len);
          }),
        );
      } else if (kind === 5) {
        const half = Math.floor(len / bs / 2) * bs;
        const ranges =
          half > 0
            ? [
                { offset: off + half, length: len - half },
                { offset: off, length: half },
              ]
            : [{ offset: off, length: len }];
        jobs.push(
          d.writeZeroes(ranges, { ...queue, unmap: r(2) === 0 }).then(() => () => {
            model.bytes.fill(0, off, off + len);
            model.known.fill(1, off, off + len);
          }),
        );
      } else if (kind === 6) {
        jobs.push(d.flush(queue).then(() => () => {}));
      } else {
        jobs.push(d.getId(queue).then((id) => () => assert.equal(id, "virtio-ts-disk")));
      }
    }
    const effects = await within(Promise.all(jobs), 10_000, `round ${round} (seed ${seed})`);
    for (const apply of effects) apply();
    assert.equal(d.pending, 0);
  }
  // The whole disk, through the driver and straight from the store.
  backing.failAt.clear();
  const all = new Uint8Array(DISK);
  await within(d.read(0, all));
  const snap = backing.inner.snapshot();
  for (let i = 0; i < DISK; i++) {
    if (model.known[i] !== 1) continue;
    if (all[i] !== model.bytes[i] || snap[i] !== model.bytes[i])
      assert.fail(
        `seed ${seed}: byte ${i}: driver ${all[i]}, disk ${snap[i]}, model ${model.bytes[i]}`,
      );
  }
  assert.equal(d.bounceFreeBytes, bouncePool, "every bounce page is back");
  for (const q of rig.driverQueues) assert.equal(q.numOutstanding, 0);
}

for (const layout of ["split", "packed"] as const) {
  test(`random workload against a reference model (property over geometry and workload; ${layout} rings)`, async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          numQueues: fc.integer({ min: 1, max: 3 }),
          queueSize:
            layout === "split" ? fc.constantFrom(4, 8, 16, 64) : fc.integer({ min: 4, max: 70 }),
          indirect: fc.constantFrom(0, 4, 16),
          segMax: fc.integer({ min: 1, max: 8 }),
          sizeMax: fc.constantFrom(512, 1536, 4096, 65536),
          blockSize: fc.constantFrom(512, 4096),
          bounceKiB: fc.constantFrom(8, 32, 256),
          eventIdx: fc.boolean(),
          sync: fc.boolean(),
          maxInFlight: fc.integer({ min: 1, max: 8 }),
          batchKicks: fc.boolean(),
          seed: fc.integer({ min: 1, max: 0x7fffffff }),
        }),
        async (g) => {
          const backing = new ControlledBacking(new MemoryBacking(DISK));
          let rig: BlkRig;
          try {
            rig = blkRig({
              layout,
              backing,
              numQueues: g.numQueues,
              queueSize: g.queueSize,
              indirectEntries: Math.min(g.indirect, g.queueSize),
              bounceBytes: g.bounceKiB * 1024,
              call: g.sync ? "sync" : "microtask",
              maxInFlight: g.maxInFlight,
              exclude: g.eventIdx ? [] : ["RING_EVENT_IDX"],
              device: {
                segMax: Math.min(g.segMax, g.queueSize - 2),
                sizeMax: g.sizeMax,
                logicalBlockSize: g.blockSize,
                maxDiscardSectors: 64,
                maxDiscardSeg: 2,
                maxWriteZeroesSectors: 24,
                maxWriteZeroesSeg: 3,
              },
              driver: { batchKicks: g.batchKicks },
            });
          } catch (e) {
            // The device's limits allow no request of one block (seg_max × size_max < block size).
            if (isVirtioError(e, ErrorCode.BLK_BAD_CONFIG)) return;
            throw e;
          }
          await runWorkload(rig, backing, g.seed);
        },
      ),
      { numRuns: 60, endOnFailure: true },
    );
  });
}

/**
 * Data integrity: a random mixed workload (IN, OUT, WRITE_ZEROES, DISCARD,
 * FLUSH, GET_ID and invalid requests; chains of random shapes; several
 * requests in flight, completing in any order) checked against a reference
 * model of the disk, on MemoryBacking and on FileBacking. Requests in one
 * batch touch disjoint sectors, so their order does not matter; every IN is
 * checked against the model, and the whole disk at the end.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MemoryBacking, type BlkBacking } from "../../src/devices/blk/backing.ts";
import { FileBacking } from "../../src/devices/blk/file-backing.ts";
import * as blk from "../../src/spec/blk.ts";
import { BlkRig, type BuiltReq, type ReqSpec, pattern, segments } from "./blk-harness.ts";

const SECTORS = 4096; // 2 MiB
const BYTES = SECTORS * 512;
const BATCHES = 60;

const tmp = mkdtempSync(join(tmpdir(), "virtio-ts-integrity-"));
const opened: BlkBacking[] = [];
after(async () => {
  for (const b of opened) await b.close();
  rmSync(tmp, { recursive: true, force: true });
});

/** xorshift32: a reproducible stream of numbers. */
function rng(seed: number) {
  let x = seed >>> 0 || 1;
  const next = () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
  return { int: (lo: number, hi: number) => lo + (next() % (hi - lo + 1)), next };
}

interface Expect {
  req: BuiltReq;
  status: number;
  len: number;
  /** IN: sectors whose bytes must match the model. */
  read?: { sector: number; count: number };
  /** GET_ID: the buffer must hold the ID. */
  id?: boolean;
  /** Applied to the model once the batch completes. */
  apply?: () => void;
}

async function workload(backing: BlkBacking, seed: number, bytesOf: () => Uint8Array) {
  const r = new BlkRig({
    backing,
    queueSize: 256,
    eventIdx: seed % 2 === 0,
    config: { serial: "integrity", maxDiscardSeg: 4, maxWriteZeroesSeg: 4 },
    engine: { maxInFlight: 4 },
  });
  const model = pattern(BYTES, 1);
  const known = new Uint8Array(SECTORS).fill(1); // 0 after a DISCARD: contents undefined
  const rand = rng(seed);
  const id = new Uint8Array(20);
  id.set(new TextEncoder().encode("integrity"));

  for (let batch = 0; batch < BATCHES; batch++) {
    r.resetHeap();
    const used: [number, number][] = []; // sector ranges taken in this batch
    const take = (count: number): number | null => {
      for (let attempt = 0; attempt < 20; attempt++) {
        const s = rand.int(0, SECTORS - count);
        if (used.every(([a, n]) => s + count <= a || a + n <= s)) {
          used.push([s, count]);
          return s;
        }
      }
      return null;
    };
    const shape = (): Partial<ReqSpec> => {
      const k = rand.int(0, 3);
      if (k === 0) return {};
      if (k === 1) return { piece: 512 * rand.int(1, 8) };
      if (k === 2) return { piece: rand.int(100, 3000), headerSplit: [5, 11] };
      return { indirect: true, piece: 4096 };
    };
    const expects: Expect[] = [];
    const n = rand.int(1, 8);
    for (let i = 0; i < n; i++) {
      const kind = rand.int(0, 99);
      if (kind < 35) {
        const count = rand.int(1, 64);
        const s = take(count);
        if (s === null) continue;
        const req = r.add({ type: blk.VIRTIO_BLK_T_IN, sector: s, inLen: count * 512, ...shape() });
        expects.push({ req, status: 0, len: count * 512 + 1, read: { sector: s, count } });
      } else if (kind < 70) {
        const count = rand.int(1, 64);
        const s = take(count);
        if (s === null) continue;
        const data = pattern(count * 512, rand.next());
        const req = r.add({ type: blk.VIRTIO_BLK_T_OUT, sector: s, out: data, ...shape() });
        expects.push({
          req,
          status: 0,
          len: 1,
          apply: () => {
            model.set(data, s * 512);
            known.fill(1, s, s + count);
          },
        });
      } else if (kind < 85) {
        const discard = kind < 78;
        const segs: { sector: number; num: number; flags?: number }[] = [];
        for (let k = rand.int(1, 4); k > 0; k--) {
          const count = rand.int(0, 32);
          const s = take(Math.max(count, 1));
          if (s !== null)
            segs.push({ sector: s, num: count, flags: !discard && rand.int(0, 1) ? 1 : 0 });
        }
        if (segs.length === 0) continue;
        const type = discard ? blk.VIRTIO_BLK_T_DISCARD : blk.VIRTIO_BLK_T_WRITE_ZEROES;
        const req = r.add({ type, out: segments(segs), ...shape() });
        expects.push({
          req,
          status: 0,
          len: 1,
          apply: () => {
            for (const sg of segs) {
              if (discard) known.fill(0, sg.sector, sg.sector + sg.num);
              else {
                model.fill(0, sg.sector * 512, (sg.sector + sg.num) * 512);
                known.fill(1, sg.sector, sg.sector + sg.num);
              }
            }
          },
        });
      } else if (kind < 90) {
        expects.push({ req: r.add({ type: blk.VIRTIO_BLK_T_FLUSH }), status: 0, len: 1 });
      } else if (kind < 95) {
        expects.push({
          req: r.add({ type: blk.VIRTIO_BLK_T_GET_ID, inLen: 20 }),
          status: 0,
          len: 21,
          id: true,
        });
      } else {
        // Invalid: beyond capacity. Must not disturb anything.
        const req = r.add({ type: blk.VIRTIO_BLK_T_OUT, sector: SECTORS, out: pattern(512, 3) });
        expects.push({ req, status: blk.VIRTIO_BLK_S_IOERR, len: 1 });
      }
      if (rand.int(0, 3) === 0) r.engine.kick(); // sometimes kick mid-batch
    }
    if (expects.length === 0) continue;
    r.engine.kick();
    const got = await r.waitUsed(expects.length);
    const byHead = new Map(got.map((u) => [u.id, u.len]));
    assert.equal(byHead.size, expects.length, `seed ${seed} batch ${batch}: distinct heads`);
    for (const e of expects) {
      const where = `seed ${seed} batch ${batch} head ${e.req.head}`;
      assert.equal(r.status(e.req), e.status, `${where}: status`);
      assert.equal(byHead.get(e.req.head), e.len, `${where}: used len`);
      if (e.id === true) assert.deepEqual(r.readIn(e.req), id, `${where}: GET_ID`);
      if (e.read !== undefined) {
        const data = r.readIn(e.req);
        const { sector: first, count } = e.read;
        for (let k = 0; k < count; k++) {
          const sector: number = first + k;
          if (known[sector] === 0) continue;
          const want = model.subarray(sector * 512, sector * 512 + 512);
          const have = data.subarray(k * 512, k * 512 + 512);
          if (!want.every((b, i) => b === have[i]))
            assert.fail(`${where}: sector ${sector} differs`);
        }
      }
    }
    for (const e of expects) e.apply?.();
  }
  await r.engine.stop();
  const disk = bytesOf();
  for (let s = 0; s < SECTORS; s++) {
    if (known[s] === 0) continue;
    for (let i = s * 512; i < s * 512 + 512; i++)
      if (disk[i] !== model[i]) assert.fail(`seed ${seed}: final disk differs at sector ${s}`);
  }
  assert.equal(r.broken.length, 0);
  assert.equal(r.log.errors.length, 0, r.log.errors.join("\n"));
}

test("random mixed workload on MemoryBacking matches the reference model", async () => {
  for (const seed of [1, 2, 3]) {
    const m = new MemoryBacking(pattern(BYTES, 1));
    await workload(m, seed, () => m.snapshot());
  }
});

test("random mixed workload on FileBacking matches the reference model", async () => {
  for (const seed of [4, 5]) {
    const path = join(tmp, `disk-${seed}.img`);
    writeFileSync(path, pattern(BYTES, 1));
    const f = await FileBacking.open(path, { fallocate: null });
    opened.push(f);
    await workload(f, seed, () => new Uint8Array(readFileSync(path)));
  }
});

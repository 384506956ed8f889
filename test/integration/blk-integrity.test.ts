/**
 * Data integrity of virtio-blk through the in-process transport with the
 * dataplane: a random mixed workload (reads and writes of random sizes split
 * into randomly sized, misaligned buffers; DISCARD; WRITE_ZEROES with and
 * without UNMAP; FLUSH) with many requests in flight across 2 queues,
 * every read checked against a reference model of the disk (in the driver
 * worker), and the image file compared with the model afterwards. Run with
 * one dataplane worker per queue and with one shared I/O worker, through the
 * project's BlkDriver (promise API, copy and zero-copy buffers) and through
 * a raw DriverRing driver that builds every chain itself, each on split and
 * on packed rings.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import type { BackingSpec } from "../../src/devices/blk/backing-spec.ts";
import { InprocBlkRig, pattern, tempDir, writeImage } from "./blk-harness.ts";
import { RING_LAYOUTS, type WorkloadReport } from "./blk-layout.ts";

const DISK_BYTES = 8 << 20;
const SECTOR = 512;
const tmp = tempDir();
after(() => tmp.cleanup());

interface Variant {
  readonly name: string;
  /** "blk": src/devices/blk/driver.ts; "raw": chains built on the DriverRing directly. */
  readonly driver: "blk" | "raw";
  readonly ioThreads: "per-queue" | number;
  readonly backing: (initial: Uint8Array) => { spec: BackingSpec; bytes: () => Uint8Array };
  readonly seed: number;
}

const fileBacking =
  (fallocate: boolean) =>
  (initial: Uint8Array): { spec: BackingSpec; bytes: () => Uint8Array } => {
    const path = writeImage(tmp.dir, `integrity-${fallocate ? "falloc" : "plain"}.img`, initial);
    return {
      spec: { kind: "file", path, fallocate },
      bytes: () => new Uint8Array(readFileSync(path)),
    };
  };

const VARIANTS: readonly Variant[] = [
  {
    name: "BlkDriver, one dataplane worker per queue, file with hole punching",
    driver: "blk",
    ioThreads: "per-queue",
    backing: fileBacking(true),
    seed: 0x5eed1,
  },
  {
    name: "BlkDriver, one shared I/O worker for both queues, file with zeroes written",
    driver: "blk",
    ioThreads: 1,
    backing: fileBacking(false),
    seed: 0x5eed2,
  },
  {
    name: "raw driver, one dataplane worker per queue, shared-memory disk",
    driver: "raw",
    ioThreads: "per-queue",
    backing: (initial) => {
      const buffer = new SharedArrayBuffer(initial.length);
      new Uint8Array(buffer).set(initial);
      return {
        spec: { kind: "shared-memory", buffer },
        bytes: () => new Uint8Array(buffer).slice(),
      };
    },
    seed: 0x5eed3,
  },
];

/** Sectors where the disk differs from the model (discarded sectors may also be zeroes). */
function diskMismatches(disk: Uint8Array, model: Uint8Array, maybeZero: Uint8Array): number[] {
  const bad: number[] = [];
  for (let s = 0; s < model.length / SECTOR; s++) {
    const d = disk.subarray(s * SECTOR, (s + 1) * SECTOR);
    const m = model.subarray(s * SECTOR, (s + 1) * SECTOR);
    let same = true;
    for (let i = 0; i < SECTOR && same; i++) same = d[i] === m[i];
    if (!same && !(maybeZero[s] === 1 && d.every((b) => b === 0))) bad.push(s);
  }
  return bad;
}

for (const layout of RING_LAYOUTS)
  for (const v of VARIANTS) {
    test(`random mixed workload, 2 queues × 32 in flight: ${v.name}, ${layout} rings`, async () => {
      const initial = pattern(DISK_BYTES, v.seed);
      const { spec, bytes } = v.backing(initial);
      const rig = await InprocBlkRig.start({
        backing: spec,
        numQueues: 2,
        ioThreads: v.ioThreads,
        maxInFlight: 32,
        queueSize: 128,
        maxDiscardSeg: 1,
        maxWriteZeroesSeg: 1,
        layout,
      });
      try {
        assert.equal(rig.blk.workerCount, v.ioThreads === "per-queue" ? 2 : 1);
        const workload = {
          seed: v.seed,
          ops: 3000,
          inFlight: 32,
          queues: 2,
          initial,
          maxIoBytes: 64 * 1024,
          discard: true,
          writeZeroes: true,
        };
        let report: WorkloadReport;
        if (v.driver === "blk") {
          await rig.blkInit(2, rig.ringSize(128));
          report = await rig.command({ cmd: "blk-workload", workload });
          await rig.command({ cmd: "blk-stop" });
        } else {
          await rig.init({ queueSize: rig.ringSize(128) });
          report = await rig.workload(workload);
        }
        assert.deepEqual(report.failures, [], "every request completed OK");
        assert.deepEqual(report.mismatches, [], "every read matched the model");
        for (const kind of [
          "read",
          "write",
          "discard",
          "write-zeroes",
          "write-zeroes-unmap",
          "flush",
        ])
          assert.ok((report.counts[kind] ?? 0) > 0, `some ${kind} requests`);
        assert.ok(report.maxInFlight >= 32, `many requests in flight (max ${report.maxInFlight})`);
        const stats = await rig.blk.stats();
        assert.deepEqual(
          stats.queues.map((q) => q.queue),
          [0, 1],
        );
        for (const q of stats.queues) assert.ok(q.calls > 0, `queue ${q.queue} completed requests`);
        assert.equal(rig.device.broken, null);
        assert.deepEqual(diskMismatches(bytes(), report.model, report.maybeZero), []);
      } finally {
        await rig.close();
      }
    });
  }

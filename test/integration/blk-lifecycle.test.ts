/**
 * virtio-blk lifecycle through the in-process transport with the dataplane:
 * reset with requests in flight (the workers complete them into the used
 * rings before the reset is acknowledged; afterwards nothing in guest memory
 * changes, and the driver fails what is left), a ring violation on one queue
 * halting the other queue's worker, and a read-only device that never
 * touches its file. docs/conformance.md "Lifecycle". Each on split and on
 * packed rings (VIRTIO 1.2 §2.7 / §2.8).
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, statSync, utimesSync } from "node:fs";
import { ErrorCode } from "../../src/errors.ts";
import { placeRing } from "../../src/ring/ring-layout.ts";
import * as blk from "../../src/spec/blk.ts";
import { VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET as NEEDS_RESET } from "../../src/spec/virtio.ts";
import {
  PVIRTQ_DESC_OFF_FLAGS,
  PVIRTQ_DESC_SIZE,
  VIRTQ_DESC_F_USED,
} from "../../src/spec/packed-virtqueue.ts";
import { VIRTQ_USED_OFF_IDX } from "../../src/spec/virtqueue.ts";
import { InprocBlkRig, pattern, segments, tempDir, writeImage } from "./blk-harness.ts";
import { QUEUE_STRIDE, RING_BASE, RING_LAYOUTS, type RawReq } from "./blk-layout.ts";
import type { ResetReport } from "./blk-driver-session.ts";
import type { TestFileSpec } from "./blk-test-worker.ts";

const { VIRTIO_BLK_S_OK: OK, VIRTIO_BLK_S_IOERR: IOERR } = blk;
const { VIRTIO_BLK_T_IN: IN, VIRTIO_BLK_T_OUT: OUT } = blk;
const DISK_BYTES = 4 << 20;
const CAPACITY = DISK_BYTES / 512;
const TEST_WORKER = new URL("./blk-test-worker.ts", import.meta.url);
const QUEUE_SIZE = 64;

const tmp = tempDir();
after(() => tmp.cleanup());

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/**
 * Used buffers the device published on queue `q` in the rings' first lap:
 * split, used.idx; packed, the descriptors whose USED flag is set (a fresh
 * ring's descriptors have it clear until the device uses them, §2.8.1).
 */
function usedSoFar(rig: InprocBlkRig, q: number): number {
  const l = placeRing(rig.layout, rig.ringSize(QUEUE_SIZE), RING_BASE + q * QUEUE_STRIDE);
  if (l.layout === "split") return rig.memory.readU16(l.usedAddr + VIRTQ_USED_OFF_IDX);
  let used = 0;
  for (let i = 0; i < l.size; i++) {
    const flags = rig.memory.readU16(l.descAddr + i * PVIRTQ_DESC_SIZE + PVIRTQ_DESC_OFF_FLAGS);
    if ((flags & VIRTQ_DESC_F_USED) !== 0) used++;
  }
  return used;
}

/** Snapshots the whole guest memory now and again after `ms`; returns the number of bytes that changed. */
async function changedBytesOver(rig: InprocBlkRig, ms: number): Promise<number> {
  const size = rig.memory.layout[0]!.size;
  const before = new Uint8Array(size);
  rig.memory.read(0, before);
  let changed = 0;
  for (let t = 0; t < ms; t += 100) {
    await sleep(100);
    const now = new Uint8Array(size);
    rig.memory.read(0, now);
    for (let i = 0; i < size; i++) if (now[i] !== before[i]) changed++;
  }
  return changed;
}

for (const layout of RING_LAYOUTS) {
  const on = (name: string): string => `${name} (${layout} rings)`;
  const rigOn = (o: Parameters<typeof InprocBlkRig.start>[0]) =>
    InprocBlkRig.start({ ...o, layout });

  test(
    on(
      "reset with requests in flight on 2 queues: completed before the acknowledgement, then guest memory never changes",
    ),
    async () => {
      const DELAY = 150;
      const path = writeImage(tmp.dir, "reset.img", pattern(DISK_BYTES, 3));
      const rig = await rigOn({
        backing: { kind: "test-file", path, delayMs: DELAY } satisfies TestFileSpec,
        workerModule: TEST_WORKER,
        numQueues: 2,
        maxInFlight: 8,
        queueSize: QUEUE_SIZE,
      });
      try {
        await rig.init({ queueSize: rig.ringSize(QUEUE_SIZE) });
        const reqs: RawReq[] = [];
        for (let i = 0; i < 40; i++) {
          const queue = i % 2;
          reqs.push(
            i % 4 < 2
              ? { queue, type: IN, sector: i * 128, inLen: 64 * 1024 }
              : { queue, type: OUT, sector: i * 128, out: pattern(64 * 1024, i) },
          );
        }
        const r = await rig.command<{ submitted: number; completed: number; failed: number }>({
          cmd: "reset-in-flight",
          reqs,
          delayBeforeResetMs: DELAY / 3,
        });
        assert.equal(r.submitted, 40);
        assert.equal(
          r.completed + r.failed,
          r.submitted,
          "every request either completed or failed",
        );
        assert.ok(r.failed > 0, "requests not yet popped fail on the driver side");
        const stops = rig.blk.lastStops;
        assert.deepEqual(
          stops.map((s) => s.queue),
          [0, 1],
        );
        const drained = stops.reduce((n, s) => n + s.drained, 0);
        assert.ok(drained > 0, "the reset met requests in flight in the workers");
        assert.ok(
          r.completed >= drained,
          "requests in flight were completed before the reset was acknowledged",
        );
        assert.equal(rig.device.readStatus(), 0);
        // In-flight I/O would have finished within DELAY; watch memory for several times as long.
        assert.equal(
          await changedBytesOver(rig, 4 * DELAY),
          0,
          "no write to guest memory after the reset",
        );
        // The device works again after a new initialization.
        await rig.init({ queueSize: rig.ringSize(QUEUE_SIZE) });
        assert.equal((await rig.one({ type: IN, sector: 0, inLen: 512 })).status, OK);
      } finally {
        await rig.close();
      }
    },
  );

  test(
    on(
      "reset under the BlkDriver with requests in flight: pending promises fail with DEVICE_RESET, none hangs, memory then still",
    ),
    async () => {
      const DELAY = 150;
      const path = writeImage(tmp.dir, "reset-driver.img", pattern(DISK_BYTES, 6));
      const rig = await rigOn({
        backing: { kind: "test-file", path, delayMs: DELAY } satisfies TestFileSpec,
        workerModule: TEST_WORKER,
        numQueues: 2,
        maxInFlight: 4,
        queueSize: QUEUE_SIZE,
      });
      try {
        await rig.blkInit(2, rig.ringSize(QUEUE_SIZE));
        const r = await rig.command<ResetReport>({
          cmd: "blk-reset-in-flight",
          count: 24,
          delayMs: DELAY / 3,
        });
        assert.deepEqual(r.other, [], "no other failure");
        assert.equal(r.resolved + r.resetRejected, 24, "every promise settled");
        assert.ok(r.resetRejected > 0, "requests the device had not taken fail with DEVICE_RESET");
        const drained = rig.blk.lastStops.reduce((n, s) => n + s.drained, 0);
        assert.ok(drained > 0, "the reset met requests in flight in the workers");
        assert.ok(r.resolved >= drained, "requests in flight completed before the acknowledgement");
        assert.equal(
          await changedBytesOver(rig, 4 * DELAY),
          0,
          "no write to guest memory after the reset",
        );
        await rig.command({ cmd: "blk-stop" });
      } finally {
        await rig.close();
      }
    },
  );

  test(
    on(
      "a ring violation on queue 1 halts queue 0's worker too: nothing more reaches queue 0's used ring",
    ),
    async () => {
      const DELAY = 150;
      const path = writeImage(tmp.dir, "broken.img", pattern(DISK_BYTES, 4));
      const rig = await rigOn({
        backing: { kind: "test-file", path, delayMs: DELAY } satisfies TestFileSpec,
        workerModule: TEST_WORKER,
        numQueues: 2,
        queueSize: QUEUE_SIZE,
      });
      try {
        assert.equal(rig.blk.workerCount, 2);
        await rig.init({ queueSize: rig.ringSize(QUEUE_SIZE) });
        const r = await rig.run([
          { queue: 0, type: IN, sector: 0, inLen: 4096 },
          { queue: 0, type: IN, sector: 8, inLen: 4096 },
          { queue: 1, type: IN, sector: 0, inLen: 512, corruptHead: true },
        ]);
        assert.equal(r.broken, true);
        assert.equal(r.status & NEEDS_RESET, NEEDS_RESET);
        assert.ok(rig.device.broken !== null);
        assert.equal(
          rig.device.broken.code === ErrorCode.DESC_OUT_OF_BOUNDS ||
            rig.device.broken.code === ErrorCode.INDIRECT_TABLE,
          true,
        );
        await sleep(3 * DELAY);
        assert.equal(
          usedSoFar(rig, 0),
          0,
          "queue 0's reads finished in the worker but were not completed",
        );
        assert.equal(usedSoFar(rig, 1), 0);
        assert.equal(await rig.reset(), 3);
        const drained = rig.blk.lastStops.find((s) => s.queue === 0)?.drained;
        assert.ok(drained !== undefined);
        await rig.init({ queueSize: rig.ringSize(QUEUE_SIZE) });
        assert.equal((await rig.one({ queue: 1, type: IN, sector: 0, inLen: 512 })).status, OK);
      } finally {
        await rig.close();
      }
    },
  );

  test(
    on(
      "read-only: every write-type request fails with IOERR; the file's bytes and mtime are unchanged",
    ),
    async () => {
      const initial = pattern(DISK_BYTES, 5);
      const path = writeImage(tmp.dir, "ro.img", initial);
      const past = new Date("2020-01-01T00:00:00Z");
      utimesSync(path, past, past);
      const mtime = statSync(path).mtimeMs;
      const rig = await rigOn({
        backing: { kind: "file", path, readOnly: true },
        numQueues: 2,
      });
      try {
        assert.equal(rig.blk.blkConfig.readOnly, true);
        const { features } = await rig.init();
        assert.ok(
          (features & (1n << BigInt(blk.VIRTIO_BLK_F_RO))) !== 0n,
          "VIRTIO_BLK_F_RO offered and accepted",
        );
        const UNMAP = blk.VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP;
        const writes: RawReq[] = [0, 1].flatMap((queue) => [
          { queue, type: OUT, sector: 0, out: pattern(4096, 6) },
          { queue, type: OUT, sector: CAPACITY - 1, out: pattern(512, 6) },
          { queue, type: blk.VIRTIO_BLK_T_WRITE_ZEROES, out: segments([{ sector: 0, num: 8 }]) },
          {
            queue,
            type: blk.VIRTIO_BLK_T_WRITE_ZEROES,
            out: segments([{ sector: 0, num: 8, flags: UNMAP }]),
          },
          { queue, type: blk.VIRTIO_BLK_T_DISCARD, out: segments([{ sector: 0, num: 8 }]) },
        ]);
        const r = await rig.run(writes);
        r.results.forEach((res, i) =>
          assert.deepEqual([res!.status, res!.len], [IOERR, 1], `request ${i}`),
        );
        const rd = await rig.one({ queue: 1, type: IN, sector: 0, inLen: 4096 });
        assert.equal(rd.status, OK);
        assert.deepEqual(rd.data, initial.subarray(0, 4096));
        assert.equal((await rig.one({ type: blk.VIRTIO_BLK_T_FLUSH })).status, OK);
        assert.equal((await rig.one({ type: blk.VIRTIO_BLK_T_GET_ID, inLen: 20 })).status, OK);
      } finally {
        await rig.close();
      }
      assert.deepEqual(new Uint8Array(readFileSync(path)), initial, "file bytes unchanged");
      assert.equal(statSync(path).mtimeMs, mtime, "mtime unchanged");
    },
  );
}

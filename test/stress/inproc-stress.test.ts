/**
 * Stress: driver and device in two worker threads over the in-process
 * transport, more than 10 million requests in total, every payload hashed by
 * the device and checked by the driver, every request completed exactly once
 * (driver-side bitmap; DriverQueue also rejects a used id that is not an
 * outstanding head), with EVENT_IDX and with flag-based suppression, in
 * sleep mode and busy-poll mode, with rings small enough to fill up.
 *
 * No lost wake-up: every wait is bounded (waitUsed 20 s: a timeout is a
 * stall and fails the run; each session 150 s; the test 300 s), and the
 * device never wakes up on its own within a run, so a lost kick stalls.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, featureBit } from "../../src/spec/virtio.ts";
import type { PumpOptions } from "../../examples/checksum-driver.ts";
import { runSession, type SessionOptions } from "../../examples/session.ts";

const VERSION_1 = featureBit(VIRTIO_F_VERSION_1);
const EVENT_IDX = featureBit(VIRTIO_RING_F_EVENT_IDX);

/**
 * The device sleeps up to 120 s at a time, so a lost kick is not papered over by a
 * periodic wake-up: it shows as a driver-side stall (waitUsed times out after 20 s).
 */
const DEVICE_SLEEP = { wait: "block", sleepSliceMs: 120_000 } as const;

const run = (
  total: number,
  batch: number,
  maxInFlight: number,
  payloadBytes = 16,
): PumpOptions => ({
  total,
  batch,
  maxInFlight,
  payloadBytes,
  waitTimeoutMs: 20_000,
  verify: true,
});

interface Case {
  readonly name: string;
  readonly session: Omit<SessionOptions, "mode" | "timeoutMs">;
}

const CASES: readonly Case[] = [
  {
    name: "EVENT_IDX, sleep",
    session: {
      features: VERSION_1 | EVENT_IDX,
      queueSize: 256,
      deviceLoop: DEVICE_SLEEP,
      driverSpin: 0,
      runs: [run(3_000_000, 32, 256), run(1_000_000, 1, 64, 24), run(100_000, 1, 1)],
    },
  },
  {
    name: "flags, sleep",
    session: {
      features: VERSION_1,
      queueSize: 256,
      deviceLoop: DEVICE_SLEEP,
      driverSpin: 0,
      runs: [run(3_000_000, 32, 256), run(1_000_000, 7, 64, 40), run(100_000, 1, 1)],
    },
  },
  {
    name: "EVENT_IDX, small ring (16), ring-full path",
    session: {
      features: VERSION_1 | EVENT_IDX,
      queueSize: 16,
      deviceLoop: DEVICE_SLEEP,
      driverSpin: 0,
      runs: [run(500_000, 4, 16)],
    },
  },
  {
    name: "EVENT_IDX, busy-poll",
    session: {
      features: VERSION_1 | EVENT_IDX,
      queueSize: 128,
      deviceLoop: { ...DEVICE_SLEEP, spin: 2000 },
      driverSpin: 2000,
      runs: [run(1_000_000, 16, 128)],
    },
  },
  {
    name: "flags, busy-poll",
    session: {
      features: VERSION_1,
      queueSize: 128,
      deviceLoop: { ...DEVICE_SLEEP, spin: 2000 },
      driverSpin: 2000,
      runs: [run(500_000, 16, 128)],
    },
  },
];

test(
  "inproc stress: >10M checksummed requests across workers, both suppression schemes",
  { timeout: 300_000 },
  async (t) => {
    let grand = 0;
    const t0 = performance.now();
    for (const c of CASES) {
      const report = await runSession({ ...c.session, mode: "checksum", timeoutMs: 150_000 });
      const wantEventIdx = (c.session.features & EVENT_IDX) !== 0n;
      assert.equal(
        (report.driver.features & EVENT_IDX) !== 0n,
        wantEventIdx,
        `${c.name}: features`,
      );
      assert.deepEqual(report.device.log, [], `${c.name}: the device logged a problem`);
      let total = 0;
      report.driver.runs.forEach((r, i) => {
        const want = c.session.runs[i]!.total;
        const res = r.result;
        assert.equal(res.requests, want, `${c.name} run ${i}: completed`);
        assert.equal(res.mismatches, 0, `${c.name} run ${i}: hash or length mismatches`);
        assert.equal(res.duplicates, 0, `${c.name} run ${i}: completed twice`);
        assert.equal(res.missing, 0, `${c.name} run ${i}: never completed`);
        total += want;
        t.diagnostic(
          `${c.name} run ${i} (batch ${c.session.runs[i]!.batch}, in flight ≤ ${c.session.runs[i]!.maxInFlight}): ` +
            `${want} req in ${res.elapsedMs.toFixed(0)} ms = ${Math.round(want / (res.elapsedMs / 1000))}/s; ` +
            `kicks ${r.stats.kicksRung} sent / ${r.stats.kicksSuppressed} suppressed, ${r.stats.sleeps} driver sleeps`,
        );
      });
      // The device saw exactly the requests the driver completed.
      assert.equal(report.device.checksum.requests, total, `${c.name}: device request count`);
      const dev = report.device.device;
      t.diagnostic(
        `${c.name}: calls ${dev.notificationsSent} sent / ${dev.notificationsSuppressed} suppressed, ` +
          `${report.device.transport.sleeps} device sleeps`,
      );
      grand += total;
    }
    t.diagnostic(`total ${grand} requests in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    assert.ok(grand >= 10_000_000);
  },
);

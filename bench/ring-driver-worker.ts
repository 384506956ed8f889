/**
 * Driver thread of the ring benchmark (worker_threads): initializes the
 * device over the in-process transport, then runs timed loops of
 * 1-descriptor chains against the device in "null" mode (it returns each
 * chain with used length 0): throughput at a given kick batch with up to a
 * ring's worth in flight, and ping-pong latency with one request in flight.
 *
 * @module
 */
import type { DriverRing, Segment } from "../src/ring/driver-ring.ts";
import { placeRing, type RingLayoutKind } from "../src/ring/ring-layout.ts";
import {
  InprocDriverTransport,
  type DriverTransportStats,
  type InprocShared,
} from "../src/transport/inproc/index.ts";
import { nodeParentEndpoint } from "../src/dataplane/node-threads.ts";

/** A timed loop. */
export type RingJob =
  | {
      readonly kind: "throughput";
      readonly total: number;
      readonly batch: number;
      /** Wait for room with enableCallbacksDelayed (default false, as Linux ringtest). */
      readonly delayed?: boolean;
    }
  | { readonly kind: "pingpong"; readonly total: number };

export interface RingDriverInit {
  readonly shared: InprocShared;
  readonly features: bigint;
  readonly queueSize: number;
  /** The ring layout `features` select (VIRTIO_F_RING_PACKED for "packed"). */
  readonly layout: RingLayoutKind;
  readonly ringBase: number;
  readonly bufAddr: number;
  readonly spin: number;
  readonly jobs: readonly RingJob[];
}

export interface RingJobResult {
  readonly job: RingJob;
  readonly elapsedMs: number;
  readonly roundTripsPerSec: number;
  /** Ping-pong only: per-request latency in µs. */
  readonly medianUs?: number;
  readonly p99Us?: number;
  readonly stats: DriverTransportStats;
}

const WAIT_MS = 10_000;
const NONE: Segment[] = [];

const parent = nodeParentEndpoint();
const off = parent.onMessage((m) => {
  off();
  try {
    parent.postMessage({ type: "ring-done", results: drive(m as RingDriverInit) });
  } catch (e) {
    parent.postMessage({ type: "ring-error", message: e instanceof Error ? e.message : String(e) });
  }
});

function drive(init: RingDriverInit): RingJobResult[] {
  const driver = new InprocDriverTransport(init.shared, { spin: init.spin });
  driver.run(driver.negotiate(init.features));
  const dq = driver.run(
    driver.setupQueue<number>(0, placeRing(init.layout, init.queueSize, init.ringBase)),
  );
  driver.run(driver.start());
  const seg: Segment[] = [{ addr: init.bufAddr, len: 64 }];
  const results: RingJobResult[] = [];
  for (const job of init.jobs) {
    const before = { ...driver.stats };
    const r =
      job.kind === "throughput"
        ? throughput(driver, dq, seg, job.total, job.batch, job.delayed ?? false)
        : pingpong(driver, dq, seg, job.total);
    const stats = { ...driver.stats };
    for (const k of Object.keys(stats) as (keyof DriverTransportStats)[]) stats[k] -= before[k];
    results.push({ job, ...r, stats });
  }
  driver.run(driver.reset());
  return results;
}

function waitOrThrow(driver: InprocDriverTransport, dq: DriverRing<number>, delayed = false): void {
  const w = driver.waitUsed(0, WAIT_MS, delayed);
  dq.disableCallbacks();
  if (w !== "used") throw new Error(`waitUsed: ${w}`);
}

/** Linux ringtest's loop: add up to `batch`, kick, take completions, wait only when full. */
function throughput(
  driver: InprocDriverTransport,
  dq: DriverRing<number>,
  seg: Segment[],
  total: number,
  batch: number,
  delayed: boolean,
): { elapsedMs: number; roundTripsPerSec: number } {
  let started = 0;
  let completed = 0;
  dq.disableCallbacks();
  const t0 = performance.now();
  while (completed < total) {
    let added = 0;
    // stage(): the batch becomes visible at once when kick() → kickNeeded() publishes avail.idx.
    while (started < total && added < batch && dq.stage(seg, NONE, started)) {
      started++;
      added++;
    }
    if (added > 0) driver.kick(0);
    let got = 0;
    while (dq.nextUsed()) got++;
    completed += got;
    // Room is what the driver waits for when the ring is full: ask to be woken after 3/4 completed.
    if (got === 0 && (started === total || dq.numFree === 0))
      waitOrThrow(driver, dq, delayed && started < total);
  }
  const elapsedMs = performance.now() - t0;
  return { elapsedMs, roundTripsPerSec: total / (elapsedMs / 1000) };
}

/** One request in flight; per-request latency. */
function pingpong(
  driver: InprocDriverTransport,
  dq: DriverRing<number>,
  seg: Segment[],
  total: number,
): { elapsedMs: number; roundTripsPerSec: number; medianUs: number; p99Us: number } {
  const samples = new Float64Array(total);
  dq.disableCallbacks();
  const t0 = performance.now();
  for (let i = 0; i < total; i++) {
    const t = performance.now();
    dq.add(seg, NONE, i);
    driver.kick(0);
    while (!dq.nextUsed()) waitOrThrow(driver, dq);
    samples[i] = performance.now() - t;
  }
  const elapsedMs = performance.now() - t0;
  samples.sort();
  return {
    elapsedMs,
    roundTripsPerSec: total / (elapsedMs / 1000),
    medianUs: samples[Math.floor(total / 2)]! * 1000,
    p99Us: samples[Math.floor(total * 0.99)]! * 1000,
  };
}

/**
 * Ring benchmark: round trips of 1-descriptor chains between a driver
 * worker and a device worker over the in-process transport (split
 * virtqueue of 256, EVENT_IDX, device in "null" mode), at kick batch 1 and
 * 32 with up to a ring's worth in flight, and ping-pong latency with one
 * request in flight; in sleep mode (Atomics.wait) and busy-poll mode. The
 * baseline, measured in the same run, carries the same round trips with
 * postMessage over a MessagePort between two workers.
 *
 * Each point is repeated (interleaved) and reported as median / min / max.
 *
 * @module
 */
import { MessageChannel } from "node:worker_threads";
import { GuestMemory } from "../src/memory/guest-memory.ts";
import { vringLayout } from "../src/ring/layout.ts";
import { VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, featureBit } from "../src/spec/virtio.ts";
import {
  createRegisters,
  nextMessage,
  stopInprocDevice,
  type InprocShared,
  type WorkerThread,
} from "../src/transport/inproc/index.ts";
import type { DeviceWorkerInit } from "../examples/device-worker.ts";
import { threadHost } from "../examples/session.ts";
import type { RingDriverInit, RingJob, RingJobResult } from "./ring-driver-worker.ts";
import type { PostMessageInit, PostMessageJobResult } from "./postmessage-worker.ts";

/** Sizes of the run. */
export interface RingBenchOptions {
  readonly reps: number;
  readonly throughputTotal: number;
  readonly pingpongTotal: number;
  /** Busy-poll rounds before sleeping in busy-poll mode. */
  readonly pollSpin: number;
}

/** Median / min / max of repeated measurements. */
export interface Spread {
  readonly median: number;
  readonly min: number;
  readonly max: number;
}

/** One benchmark point. */
export interface RingPoint {
  readonly transport: "ring-wait" | "ring-poll" | "postmessage";
  readonly job: "batch-1" | "batch-32" | "ping-pong";
  readonly roundTripsPerSec: Spread;
  readonly medianLatencyUs?: Spread;
  readonly p99LatencyUs?: Spread;
  /** Median round trips/s divided by the postMessage baseline's for the same job. */
  readonly ratioToBaseline?: number;
  /** Ring points: kicks rung / suppressed per round trip (medians). */
  readonly kicksPerRoundTrip?: number;
  readonly sleepsPerRoundTrip?: number;
}

export interface RingBenchReport {
  readonly name: "ring";
  readonly date: string;
  readonly node: string;
  readonly cpus: number;
  readonly options: RingBenchOptions;
  readonly points: readonly RingPoint[];
}

const QUEUE_SIZE = 256;
const RING_BASE = 0x10000;
const BUF = 0x20000;
const TIMEOUT_MS = 300_000;

const isType =
  <T>(...types: string[]) =>
  (m: unknown): m is T =>
    typeof m === "object" && m !== null && types.includes((m as { type: string }).type);

function jobsFor(o: RingBenchOptions): RingJob[] {
  const jobs: RingJob[] = [];
  for (let r = 0; r < o.reps; r++) {
    jobs.push({ kind: "throughput", total: o.throughputTotal, batch: 1 });
    jobs.push({ kind: "throughput", total: o.throughputTotal, batch: 32 });
    jobs.push({ kind: "pingpong", total: o.pingpongTotal });
  }
  return jobs;
}

const jobName = (j: RingJob): RingPoint["job"] =>
  j.kind === "pingpong" ? "ping-pong" : j.batch === 1 ? "batch-1" : "batch-32";

async function ringSession(o: RingBenchOptions, spin: number): Promise<RingJobResult[]> {
  const memory = GuestMemory.createShared([{ guestPhysAddr: 0, size: 1 << 20 }]);
  const shared: InprocShared = { registers: createRegisters(1), memory: memory.toTransferable() };
  const threads: WorkerThread[] = [];
  try {
    const deviceInit: DeviceWorkerInit = {
      shared,
      mode: "null",
      queueSize: QUEUE_SIZE,
      loop: { wait: "block", spin },
    };
    const device = threadHost.spawn(
      new URL("../examples/device-worker.ts", import.meta.url),
      deviceInit,
    );
    threads.push(device);
    await nextMessage(device, isType("device-ready"), TIMEOUT_MS);
    const init: RingDriverInit = {
      shared,
      features: featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_RING_F_EVENT_IDX),
      queueSize: QUEUE_SIZE,
      ringBase: vringLayout(QUEUE_SIZE, RING_BASE).descAddr,
      bufAddr: BUF,
      spin,
      jobs: jobsFor(o),
    };
    const driver = threadHost.spawn(new URL("./ring-driver-worker.ts", import.meta.url), init);
    threads.push(driver);
    const m = await nextMessage<{ type: string; results?: RingJobResult[]; message?: string }>(
      driver,
      isType("ring-done", "ring-error"),
      TIMEOUT_MS,
    );
    if (m.type === "ring-error") throw new Error(`ring driver: ${m.message}`);
    return m.results!;
  } finally {
    stopInprocDevice(shared.registers);
    await Promise.all(threads.map((t) => t.terminate()));
  }
}

async function postMessageSession(o: RingBenchOptions): Promise<PostMessageJobResult[]> {
  const { port1, port2 } = new MessageChannel();
  const threads: WorkerThread[] = [];
  const url = new URL("./postmessage-worker.ts", import.meta.url);
  try {
    const echoInit: PostMessageInit = { role: "echo", port: port2 };
    const echo = threadHost.spawn(url, echoInit, [port2]);
    threads.push(echo);
    await nextMessage(echo, isType("echo-ready"), TIMEOUT_MS);
    const init: PostMessageInit = {
      role: "driver",
      port: port1,
      jobs: jobsFor(o),
      window: QUEUE_SIZE,
    };
    const driver = threadHost.spawn(url, init, [port1]);
    threads.push(driver);
    const m = await nextMessage<{
      type: string;
      results?: PostMessageJobResult[];
      message?: string;
    }>(driver, isType("pm-done", "pm-error"), TIMEOUT_MS);
    if (m.type === "pm-error") throw new Error(`postMessage driver: ${m.message}`);
    return m.results!;
  } finally {
    await Promise.all(threads.map((t) => t.terminate()));
  }
}

function spread(values: readonly number[]): Spread {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const median = s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
  return { median, min: s[0]!, max: s[s.length - 1]! };
}

function points(
  transport: RingPoint["transport"],
  results: readonly (RingJobResult | PostMessageJobResult)[],
): RingPoint[] {
  const out: RingPoint[] = [];
  for (const job of ["batch-1", "batch-32", "ping-pong"] as const) {
    const rs = results.filter((r) => jobName(r.job) === job);
    const rings = rs.filter((r): r is RingJobResult => "stats" in r);
    out.push({
      transport,
      job,
      roundTripsPerSec: spread(rs.map((r) => r.roundTripsPerSec)),
      ...(job === "ping-pong"
        ? {
            medianLatencyUs: spread(rs.map((r) => r.medianUs!)),
            p99LatencyUs: spread(rs.map((r) => r.p99Us!)),
          }
        : {}),
      ...(rings.length > 0
        ? {
            kicksPerRoundTrip: spread(rings.map((r) => r.stats.kicksRung / r.job.total)).median,
            sleepsPerRoundTrip: spread(rings.map((r) => r.stats.sleeps / r.job.total)).median,
          }
        : {}),
    });
  }
  return out;
}

/** Runs the whole ring benchmark (sequentially: the machine may have only 2 cores). */
export async function ringBench(o: RingBenchOptions, cpus: number): Promise<RingBenchReport> {
  const baseline = points("postmessage", await postMessageSession(o));
  const wait = points("ring-wait", await ringSession(o, 0));
  const poll = points("ring-poll", await ringSession(o, o.pollSpin));
  const ratio = (p: RingPoint): RingPoint => {
    const b = baseline.find((x) => x.job === p.job)!;
    return { ...p, ratioToBaseline: p.roundTripsPerSec.median / b.roundTripsPerSec.median };
  };
  return {
    name: "ring",
    date: new Date().toISOString(),
    node: process.version,
    cpus,
    options: o,
    points: [...wait.map(ratio), ...poll.map(ratio), ...baseline],
  };
}

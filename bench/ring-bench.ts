/**
 * Ring benchmark: round trips of 1-descriptor chains between a driver
 * worker and a device worker over the in-process transport (a virtqueue of
 * 256, EVENT_IDX, device in "null" mode), at kick batch 1 and 32 with up to
 * a ring's worth in flight, and ping-pong latency with one request in
 * flight; in sleep mode (Atomics.wait) and busy-poll mode; with split rings
 * (VIRTIO 1.2 §2.7) and packed rings (§2.8), each packed point also as a
 * ratio to the split one of the same transport and job. The
 * baseline, measured in the same run, carries the same round trips with
 * postMessage over a MessagePort between two workers; and, when it could be
 * built (./ringtest-c.ts), Linux's C ringtest with the matching options.
 *
 * Each repetition runs every transport once, in turn (postMessage, ring-wait
 * and ring-poll on split then packed rings, then the C runs), each transport in fresh workers that first
 * run the three jobs at a tenth of their size as a warm-up; every point is
 * reported as median / min / max over the repetitions.
 *
 * @module
 */
import { MessageChannel } from "node:worker_threads";
import { GuestMemory } from "../src/memory/guest-memory.ts";
import { placeRing, type RingLayoutKind } from "../src/ring/ring-layout.ts";
import {
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  VIRTIO_RING_F_EVENT_IDX,
  featureBit,
} from "../src/spec/virtio.ts";
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
import {
  ringtestArgs,
  ringtestRunFor,
  runRingtest,
  type RingtestMode,
  type RingtestRun,
} from "./ringtest-c.ts";

/** Sizes of the run. */
export interface RingBenchOptions {
  readonly reps: number;
  readonly throughputTotal: number;
  readonly pingpongTotal: number;
  /** Busy-poll rounds before sleeping in busy-poll mode. */
  readonly pollSpin: number;
  /**
   * Round trips per C ringtest run: sleeping ping-pong (slow: two wake-ups
   * per round trip), and every other job.
   */
  readonly ringtestCycles: { readonly sleepPingpong: number; readonly other: number };
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
  /** Ring points: the virtqueue layout (absent in results of runs before packed rings: split). */
  readonly layout?: RingLayoutKind;
  readonly job: "batch-1" | "batch-32" | "ping-pong";
  readonly roundTripsPerSec: Spread;
  readonly medianLatencyUs?: Spread;
  readonly p99LatencyUs?: Spread;
  /** Median round trips/s divided by the postMessage baseline's for the same job. */
  readonly ratioToBaseline?: number;
  /** Median round trips/s divided by the C ringtest's for the same job and mode. */
  readonly ratioToC?: number;
  /** Packed points: median round trips/s divided by the split point's of the same transport and job. */
  readonly ratioToSplit?: number;
  /** Ring points: kicks rung / suppressed per round trip (medians). */
  readonly kicksPerRoundTrip?: number;
  readonly sleepsPerRoundTrip?: number;
}

/** One C ringtest point (./ringtest-c.ts). */
export interface RingtestPoint {
  /** sleep: compared with ring-wait; poll: with ring-poll. */
  readonly mode: RingtestMode;
  readonly job: RingPoint["job"];
  /** The ringtest options of the run. */
  readonly args: string;
  readonly roundTripsPerSec: Spread;
}

export interface RingBenchReport {
  readonly name: "ring";
  readonly date: string;
  readonly node: string;
  readonly cpus: number;
  readonly options: RingBenchOptions;
  readonly points: readonly RingPoint[];
  /** Linux's C ringtest in the same run; absent when it could not be built or run. */
  readonly c?: readonly RingtestPoint[];
  /** What the C ringtest was built from, e.g. "linux-source-6.1 6.1.192-3". */
  readonly ringtestSource?: string;
}

/** The C ringtest binary to compare with, and its source. */
export interface RingtestBinary {
  readonly bin: string;
  readonly source?: string;
}

const QUEUE_SIZE = 256;
const RING_BASE = 0x10000;
const BUF = 0x20000;
const TIMEOUT_MS = 300_000;

const isType =
  <T>(...types: string[]) =>
  (m: unknown): m is T =>
    typeof m === "object" && m !== null && types.includes((m as { type: string }).type);

const JOBS = ["batch-1", "batch-32", "ping-pong"] as const;
/** Warm-up jobs at the start of every session (their results are dropped). */
const WARMUP_JOBS = JOBS.length;
const WARMUP_DIVISOR = 10;

/** One repetition's jobs, after the same jobs at a tenth of their size as a warm-up. */
function jobsFor(o: RingBenchOptions): RingJob[] {
  const jobs = (div: number): RingJob[] => [
    { kind: "throughput", total: Math.ceil(o.throughputTotal / div), batch: 1 },
    { kind: "throughput", total: Math.ceil(o.throughputTotal / div), batch: 32 },
    { kind: "pingpong", total: Math.ceil(o.pingpongTotal / div) },
  ];
  return [...jobs(WARMUP_DIVISOR), ...jobs(1)];
}

const jobName = (j: RingJob): RingPoint["job"] =>
  j.kind === "pingpong" ? "ping-pong" : j.batch === 1 ? "batch-1" : "batch-32";

async function ringSession(
  o: RingBenchOptions,
  spin: number,
  layout: RingLayoutKind,
): Promise<RingJobResult[]> {
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
      features:
        featureBit(VIRTIO_F_VERSION_1) |
        featureBit(VIRTIO_RING_F_EVENT_IDX) |
        (layout === "packed" ? featureBit(VIRTIO_F_RING_PACKED) : 0n),
      queueSize: QUEUE_SIZE,
      layout,
      ringBase: placeRing(layout, QUEUE_SIZE, RING_BASE).descAddr,
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
    return m.results!.slice(WARMUP_JOBS);
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
    return m.results!.slice(WARMUP_JOBS);
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
  layout?: RingLayoutKind,
): RingPoint[] {
  const out: RingPoint[] = [];
  for (const job of JOBS) {
    const rs = results.filter((r) => jobName(r.job) === job);
    const rings = rs.filter((r): r is RingJobResult => "stats" in r);
    out.push({
      transport,
      ...(layout === undefined ? {} : { layout }),
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

/** One C ringtest run's result. */
interface RingtestResult {
  readonly mode: RingtestMode;
  readonly job: RingPoint["job"];
  readonly args: string;
  readonly roundTripsPerSec: number;
}

function ringtestRunOf(
  o: RingBenchOptions,
  mode: RingtestMode,
  job: RingPoint["job"],
): RingtestRun {
  const c = o.ringtestCycles;
  return ringtestRunFor(
    mode,
    job,
    mode === "sleep" && job === "ping-pong" ? c.sleepPingpong : c.other,
  );
}

/** One repetition of every C ringtest point. */
async function ringtestRound(bin: string, o: RingBenchOptions): Promise<RingtestResult[]> {
  const out: RingtestResult[] = [];
  for (const mode of ["sleep", "poll"] as const)
    for (const job of JOBS) {
      const run = ringtestRunOf(o, mode, job);
      const r = await runRingtest(bin, run);
      out.push({
        mode,
        job,
        args: ringtestArgs(run).join(" "),
        roundTripsPerSec: r.roundTripsPerSec,
      });
    }
  return out;
}

function ringtestPoints(results: readonly RingtestResult[]): RingtestPoint[] {
  return (["sleep", "poll"] as const).flatMap((mode) =>
    JOBS.map((job) => {
      const rs = results.filter((r) => r.mode === mode && r.job === job);
      return {
        mode,
        job,
        args: rs[0]!.args,
        roundTripsPerSec: spread(rs.map((r) => r.roundTripsPerSec)),
      };
    }),
  );
}

/** Our point with its ratios to the postMessage baseline, the C ringtest and (packed) split rings. */
function withRatios(
  p: RingPoint,
  baseline: readonly RingPoint[],
  c: readonly RingtestPoint[],
  split: readonly RingPoint[],
): RingPoint {
  const b = baseline.find((x) => x.job === p.job)!;
  const mode = p.transport === "ring-wait" ? "sleep" : "poll";
  const cp = c.find((x) => x.mode === mode && x.job === p.job);
  const sp =
    p.layout === "packed"
      ? split.find((x) => x.transport === p.transport && x.job === p.job)
      : undefined;
  return {
    ...p,
    ratioToBaseline: p.roundTripsPerSec.median / b.roundTripsPerSec.median,
    ...(cp ? { ratioToC: p.roundTripsPerSec.median / cp.roundTripsPerSec.median } : {}),
    ...(sp ? { ratioToSplit: p.roundTripsPerSec.median / sp.roundTripsPerSec.median } : {}),
  };
}

interface Collected {
  readonly pm: PostMessageJobResult[];
  readonly wait: RingJobResult[];
  readonly poll: RingJobResult[];
  readonly waitPacked: RingJobResult[];
  readonly pollPacked: RingJobResult[];
  /** Undefined once a C run failed (the C points are then left out). */
  c: RingtestResult[] | undefined;
}

/** Every repetition: each transport in turn, then the C runs. */
async function collect(
  o: RingBenchOptions,
  ringtest: RingtestBinary | undefined,
  log: (line: string) => void,
): Promise<Collected> {
  const r: Collected = {
    pm: [],
    wait: [],
    poll: [],
    waitPacked: [],
    pollPacked: [],
    c: ringtest ? [] : undefined,
  };
  for (let rep = 1; rep <= o.reps; rep++) {
    const t0 = Date.now();
    r.pm.push(...(await postMessageSession(o)));
    r.wait.push(...(await ringSession(o, 0, "split")));
    r.poll.push(...(await ringSession(o, o.pollSpin, "split")));
    r.waitPacked.push(...(await ringSession(o, 0, "packed")));
    r.pollPacked.push(...(await ringSession(o, o.pollSpin, "packed")));
    if (ringtest && r.c) {
      try {
        r.c.push(...(await ringtestRound(ringtest.bin, o)));
      } catch (e) {
        log(
          `C ringtest failed, left out: ${(e instanceof Error ? e.message : String(e)).split("\n")[0]}`,
        );
        r.c = undefined;
      }
    }
    log(`[ring ${rep}/${o.reps}] done (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
  }
  return r;
}

/**
 * Runs the whole ring benchmark (sequentially: the machine may have only 2
 * cores), with the C ringtest when `ringtest` is given.
 */
export async function ringBench(
  o: RingBenchOptions,
  cpus: number,
  ringtest?: RingtestBinary,
  log: (line: string) => void = (l) => console.log(l),
): Promise<RingBenchReport> {
  const r = await collect(o, ringtest, log);
  const baseline = points("postmessage", r.pm);
  const c = r.c ? ringtestPoints(r.c) : undefined;
  const split = [...points("ring-wait", r.wait, "split"), ...points("ring-poll", r.poll, "split")];
  const packed = [
    ...points("ring-wait", r.waitPacked, "packed"),
    ...points("ring-poll", r.pollPacked, "packed"),
  ];
  const ours = [...split, ...packed];
  return {
    name: "ring",
    date: new Date().toISOString(),
    node: process.version,
    cpus,
    options: o,
    points: [...ours.map((p) => withRatios(p, baseline, c ?? [], split)), ...baseline],
    ...(c ? { c, ...(ringtest?.source ? { ringtestSource: ringtest.source } : {}) } : {}),
  };
}

/**
 * Guest-less benchmark: the project's vhost-user front-end, in a Node
 * process of its own (./guestless/driver.ts), drives each vhost-user-blk
 * backend directly — `virtio-ts vhost-user-blk` and qemu-storage-daemon —
 * with 4 KiB random reads and writes at total queue depths 1, 32 and 128,
 * on 1 and 2 queues, over the same image as the guest benchmark.
 *
 * One session per backend, queue count and repetition (fresh backend, fresh
 * driver process, one warm-up second, then every job); sessions are
 * interleaved across backends. The driver measures latency, its own CPU time
 * and the backend's (/proc/PID/stat, every thread), so a front-end
 * bottleneck shows as front-end CPU per I/O near 1 s / IOPS.
 *
 * @module
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  baselineOf,
  isVirtioTs,
  startBenchBackend,
  type BenchBackend,
  type VhostBackendKind,
} from "./lib/backends.ts";
import { flushAndWarm } from "./lib/image.ts";
import { processMemory } from "./lib/procfs.ts";
import { ratio, spreadOf, type Spread } from "./lib/stats.ts";
import type { DriverInput, DriverJob, DriverJobResult, DriverOutput } from "./guestless/driver.ts";

/** Options of {@link guestlessBench}. */
export interface GuestlessBenchOptions {
  readonly imagePath: string;
  readonly reps: number;
  /** Seconds per job. */
  readonly seconds: number;
  readonly warmupSeconds: number;
  readonly depths: readonly number[];
  /** Which jobs (default both). */
  readonly rws?: readonly DriverJob["rw"][];
  readonly queues: readonly number[];
  readonly backends: readonly VhostBackendKind[];
  readonly log: (line: string) => void;
  /** Node options / CLI arguments for virtio-ts (profiling, tracing). */
  readonly virtioTsNodeArgs?: readonly string[];
  readonly virtioTsArgs?: readonly string[];
}

/** One session: one backend, queue count and repetition. */
export interface GuestlessSession {
  readonly backend: VhostBackendKind;
  readonly queues: number;
  readonly rep: number;
  readonly error?: string;
  readonly results: readonly DriverJobResult[];
  /** Driver counters (kicks, suppressed kicks, requests). */
  readonly driverStats?: Readonly<Record<string, number>>;
  /** Backend peak RSS (VmHWM) in bytes. */
  readonly backendHwm?: number;
  readonly wallMs: number;
}

/** Summary of one backend × queues × job over the repetitions. */
export interface GuestlessPoint {
  readonly backend: VhostBackendKind;
  readonly queues: number;
  readonly rw: DriverJob["rw"];
  readonly depth: number;
  readonly iops?: Spread;
  readonly meanLatUs?: Spread;
  readonly p50LatUs?: Spread;
  readonly p99LatUs?: Spread;
  readonly p999LatUs?: Spread;
  readonly backendCpuUsPerIo?: Spread;
  readonly frontendCpuUsPerIo?: Spread;
  /** virtio-ts / qsd of the same repetition (paired). */
  readonly iopsRatio?: Spread;
  readonly cpuPerIoRatio?: Spread;
}

/** The guest-less benchmark's JSON report. */
export interface GuestlessBenchReport {
  readonly name: "guestless";
  readonly date: string;
  readonly options: Omit<
    GuestlessBenchOptions,
    "log" | "virtioTsNodeArgs" | "virtioTsArgs" | "imagePath"
  >;
  readonly sessions: readonly GuestlessSession[];
  readonly points: readonly GuestlessPoint[];
  /** Backend peak RSS per backend × queues, MiB. */
  readonly memory: readonly { backend: VhostBackendKind; queues: number; hwmMiB: Spread }[];
}

const DRIVER = fileURLToPath(new URL("./guestless/driver.ts", import.meta.url));

/** Runs the driver process; resolves with its output or rejects with its stderr tail. */
function runDriver(input: DriverInput, timeoutMs: number): Promise<DriverOutput> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", DRIVER, JSON.stringify(input)], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    const kill = (): void => void child.kill("SIGKILL");
    process.once("exit", kill);
    let out = "";
    let err = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => (out += c));
    child.stderr.setEncoding("utf8").on("data", (c: string) => (err = (err + c).slice(-8000)));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      err += `\n[driver killed after ${timeoutMs} ms]`;
    }, timeoutMs);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      process.off("exit", kill);
      const line = out.trim().split("\n").pop() ?? "";
      if (code === 0 && line.startsWith("{")) {
        try {
          resolve(JSON.parse(line) as DriverOutput);
          return;
        } catch {
          // fall through to the error
        }
      }
      reject(new Error(`driver exited code=${code} signal=${signal}: ${err.trim().slice(-1500)}`));
    });
  });
}

function jobsOf(o: GuestlessBenchOptions): DriverJob[] {
  const jobs: DriverJob[] = [];
  for (const rw of o.rws ?? (["randread", "randwrite"] as const))
    for (const depth of o.depths) jobs.push({ rw, depth, seconds: o.seconds });
  return jobs;
}

async function session(
  o: GuestlessBenchOptions,
  backend: VhostBackendKind,
  queues: number,
  rep: number,
): Promise<GuestlessSession> {
  const started = Date.now();
  flushAndWarm(o.imagePath);
  const dir = mkdtempSync(join(o.imagePath, "..", "gl-"));
  const socket = join(dir, "vhost-user.sock");
  let server: BenchBackend | undefined;
  let error: string | undefined;
  let out: DriverOutput | undefined;
  let hwm: number | undefined;
  const jobs = jobsOf(o);
  try {
    server = await startBenchBackend(backend, {
      socketPath: socket,
      imagePath: o.imagePath,
      numQueues: queues,
      ...(isVirtioTs(backend) && o.virtioTsNodeArgs ? { nodeArgs: o.virtioTsNodeArgs } : {}),
      ...(isVirtioTs(backend) && o.virtioTsArgs ? { extraArgs: o.virtioTsArgs } : {}),
    });
    const timeoutMs = 60_000 + (o.warmupSeconds + jobs.length * (o.seconds + 10)) * 1000;
    out = await runDriver(
      { socket, numQueues: queues, backendPid: server.pid, warmupSeconds: o.warmupSeconds, jobs },
      timeoutMs,
    );
    const failed = out.results.find((r) => r.error !== undefined);
    if (failed) error = `${failed.rw} QD${failed.depth}: ${failed.error}`;
  } catch (e) {
    error = (e as Error).message;
  }
  if (server) {
    hwm = processMemory(server.pid)?.hwm;
    if (server.status) error ??= `backend exited: ${server.diagnostics()}`;
    await server.stop();
  }
  rmSync(dir, { recursive: true, force: true });
  return {
    backend,
    queues,
    rep,
    ...(error ? { error } : {}),
    results: out?.results.filter((r) => r.error === undefined) ?? [],
    ...(out ? { driverStats: out.stats } : {}),
    ...(hwm !== undefined ? { backendHwm: hwm } : {}),
    wallMs: Date.now() - started,
  };
}

function summarize(
  sessions: readonly GuestlessSession[],
  o: GuestlessBenchOptions,
): Pick<GuestlessBenchReport, "points" | "memory"> {
  const points: GuestlessPoint[] = [];
  const memory: GuestlessBenchReport["memory"][number][] = [];
  for (const queues of o.queues) {
    for (const backend of o.backends) {
      const mine = sessions.filter((s) => s.backend === backend && s.queues === queues);
      for (const job of jobsOf(o)) {
        const pick = (s: GuestlessSession): DriverJobResult | undefined =>
          s.results.find((r) => r.rw === job.rw && r.depth === job.depth);
        const got = (f: (r: DriverJobResult) => number): Spread | undefined =>
          spreadOf(
            mine.map((s) => {
              const r = pick(s);
              return r ? f(r) : NaN;
            }),
          );
        const paired = (f: (r: DriverJobResult) => number): Spread | undefined =>
          baselineOf(backend) === undefined
            ? undefined
            : spreadOf(
                mine.map((s) => {
                  const q = sessions.find(
                    (x) => x.backend === baselineOf(backend) && x.queues === queues && x.rep === s.rep,
                  );
                  const a = pick(s);
                  const b = q && pick(q);
                  return (a && b && ratio(f(a), f(b))) ?? NaN;
                }),
              );
        points.push({
          backend,
          queues,
          rw: job.rw,
          depth: job.depth,
          iops: got((r) => r.iops),
          meanLatUs: got((r) => r.meanLatUs),
          p50LatUs: got((r) => r.p50LatUs),
          p99LatUs: got((r) => r.p99LatUs),
          p999LatUs: got((r) => r.p999LatUs),
          backendCpuUsPerIo: got((r) => r.backendCpuUsPerIo),
          frontendCpuUsPerIo: got((r) => r.frontendCpuUsPerIo),
          iopsRatio: paired((r) => r.iops),
          cpuPerIoRatio: paired((r) => r.backendCpuUsPerIo),
        });
      }
      const hwm = spreadOf(mine.map((s) => (s.backendHwm ?? NaN) / (1 << 20)));
      if (hwm) memory.push({ backend, queues, hwmMiB: hwm });
    }
  }
  return { points, memory };
}

/** Runs the whole guest-less benchmark. */
export async function guestlessBench(o: GuestlessBenchOptions): Promise<GuestlessBenchReport> {
  const plan: { backend: VhostBackendKind; queues: number; rep: number }[] = [];
  for (let rep = 1; rep <= o.reps; rep++)
    for (const queues of o.queues)
      for (const backend of o.backends) plan.push({ backend, queues, rep });
  const sessions: GuestlessSession[] = [];
  const t0 = Date.now();
  for (const [i, p] of plan.entries()) {
    const s = await session(o, p.backend, p.queues, p.rep);
    sessions.push(s);
    const done = i + 1;
    const eta = ((Date.now() - t0) / done) * (plan.length - done);
    const figures = s.results
      .map((r) => `${r.rw === "randread" ? "R" : "W"}${r.depth} ${(r.iops / 1000).toFixed(1)}k`)
      .join(" ");
    o.log(
      `[guest-less ${done}/${plan.length}] ${p.backend} ${p.queues}q rep ${p.rep}: ${figures}` +
        `${s.error ? ` — FAILED: ${s.error.split("\n")[0]}` : ""} (${(s.wallMs / 1000).toFixed(0)} s; ETA ${(eta / 60_000).toFixed(1)} min)`,
    );
  }
  return {
    name: "guestless",
    date: new Date().toISOString(),
    options: {
      reps: o.reps,
      seconds: o.seconds,
      warmupSeconds: o.warmupSeconds,
      depths: o.depths,
      queues: o.queues,
      backends: o.backends,
    },
    sessions,
    ...summarize(sessions, o),
  };
}

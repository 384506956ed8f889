/**
 * Guest-less benchmark: the project's vhost-user front-end, in a Node
 * process of its own (./guestless/driver.ts), drives each vhost-user-blk
 * backend directly — `virtio-ts vhost-user-blk` and qemu-storage-daemon —
 * with 4 KiB random reads and writes at total queue depths 1, 32 and 128,
 * on 1 and 2 queues, over the same image as the guest benchmark; and the
 * virtio-ts daemon once more over packed virtqueues (`virtio-ts-packed`,
 * paired with virtio-ts on split rings; both daemons are compared on split
 * rings, the only ones qemu-storage-daemon offers).
 *
 * One session per backend, queue count and repetition (fresh backend, fresh
 * driver process, one warm-up second, then every job); sessions are
 * interleaved across backends. The driver measures latency, its own CPU time
 * and the backend's (/proc/PID/stat, every thread), so a front-end
 * bottleneck shows as front-end CPU per I/O near 1 s / IOPS.
 *
 * System calls per I/O (./syscalls.ts): the last repetition's session of
 * each backend and queue count runs two more jobs after the timed ones —
 * 4 KiB random reads, then writes, at QD32 — with `strace -c -f` attached to
 * the backend for exactly that job; only their system-call counts are kept
 * (strace slows the backend, so their speed is not reported).
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
import {
  ensureStrace,
  JobTracer,
  straceJobs,
  unmeasuredPoints,
  type SyscallPoint,
} from "./syscalls.ts";
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
  /** Seconds of each strace-traced job (see the module comment); 0 or absent: none. */
  readonly straceSeconds?: number;
}

/** One session: one backend, queue count and repetition. */
export interface GuestlessSession {
  readonly backend: VhostBackendKind;
  readonly queues: number;
  readonly rep: number;
  readonly error?: string;
  readonly results: readonly DriverJobResult[];
  /** Driver counters (kicks, suppressed kicks, requests) at the end of the session (every job). */
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
  /** System calls per I/O, per backend × queues × traced job (absent: not traced). */
  readonly syscalls?: readonly SyscallPoint[];
}

const DRIVER = fileURLToPath(new URL("./guestless/driver.ts", import.meta.url));

/** Calls `onLine` with every complete line of a text stream. */
function eachLine(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  let pending = "";
  stream.on("data", (c: string) => {
    pending += c;
    for (let nl = pending.indexOf("\n"); nl >= 0; nl = pending.indexOf("\n")) {
      onLine(pending.slice(0, nl));
      pending = pending.slice(nl + 1);
    }
  });
}

/**
 * Runs the driver process; resolves with its output or rejects with its
 * stderr tail. `onSync` answers the driver's `@EVENT` lines of `pause` jobs:
 * once it settles, the driver is told to go on.
 */
function runDriver(
  input: DriverInput,
  timeoutMs: number,
  onSync?: (event: string) => Promise<void>,
): Promise<DriverOutput> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", DRIVER, JSON.stringify(input)], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    const kill = (): void => void child.kill("SIGKILL");
    process.once("exit", kill);
    let out = "";
    let err = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => (out += c));
    child.stderr.setEncoding("utf8").on("data", (c: string) => (err = (err + c).slice(-8000)));
    child.stdin.on("error", () => undefined); // the driver may be gone when told to go on
    if (onSync)
      eachLine(child.stdout, (line) => {
        if (line.startsWith("@")) void onSync(line.slice(1)).then(() => child.stdin.write("go\n"));
      });
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      err += `\n[driver killed after ${timeoutMs} ms]`;
    }, timeoutMs);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      process.off("exit", kill);
      const parsed = parseDriverOutput(out);
      if (code === 0 && parsed) resolve(parsed);
      else
        reject(
          new Error(`driver exited code=${code} signal=${signal}: ${err.trim().slice(-1500)}`),
        );
    });
  });
}

/** The driver's result: the last line of its stdout, if it is JSON. */
function parseDriverOutput(out: string): DriverOutput | undefined {
  const line = out.trim().split("\n").pop() ?? "";
  if (!line.startsWith("{")) return undefined;
  try {
    return JSON.parse(line) as DriverOutput;
  } catch {
    return undefined;
  }
}

function jobsOf(o: GuestlessBenchOptions): DriverJob[] {
  const jobs: DriverJob[] = [];
  for (const rw of o.rws ?? (["randread", "randwrite"] as const))
    for (const depth of o.depths) jobs.push({ rw, depth, seconds: o.seconds });
  return jobs;
}

/** Driver time bound: start-up, warm-up, each job plus slack (strace attach and detach for a traced one). */
function driverTimeoutMs(o: GuestlessBenchOptions, jobs: readonly DriverJob[]): number {
  const slack = (j: DriverJob): number => j.seconds + (j.pause ? 60 : 10);
  return 60_000 + (o.warmupSeconds + jobs.reduce((t, j) => t + slack(j), 0)) * 1000;
}

function startBackend(
  o: GuestlessBenchOptions,
  backend: VhostBackendKind,
  socket: string,
  queues: number,
): Promise<BenchBackend> {
  return startBenchBackend(backend, {
    socketPath: socket,
    imagePath: o.imagePath,
    numQueues: queues,
    ...(isVirtioTs(backend) && o.virtioTsNodeArgs ? { nodeArgs: o.virtioTsNodeArgs } : {}),
    ...(isVirtioTs(backend) && o.virtioTsArgs ? { extraArgs: o.virtioTsArgs } : {}),
  });
}

/** What one session produced: the timed results, and the traced jobs' system calls. */
interface SessionOutcome {
  readonly session: GuestlessSession;
  readonly syscalls: readonly SyscallPoint[];
}

/** What the driver of one session produced. */
interface Driven {
  readonly out?: DriverOutput;
  readonly tracer?: JobTracer;
  readonly error?: string;
}

/** Runs the driver against a started backend, with strace around the `pause` jobs if `trace`. */
async function drive(
  o: GuestlessBenchOptions,
  server: BenchBackend,
  socket: string,
  queues: number,
  jobs: readonly DriverJob[],
  trace: boolean,
): Promise<Driven> {
  const timeoutMs = driverTimeoutMs(o, jobs);
  const tracer = trace ? new JobTracer(server.pid, timeoutMs) : undefined;
  const input = {
    socket,
    numQueues: queues,
    backendPid: server.pid,
    warmupSeconds: o.warmupSeconds,
    jobs,
    ...(server.kind === "virtio-ts-packed" ? { packed: true } : {}),
  };
  try {
    const out = await runDriver(input, timeoutMs, tracer && ((e) => tracer.onSync(e)));
    const failed = out.results.find((r) => r.error !== undefined && !r.pause);
    return {
      out,
      tracer,
      ...(failed ? { error: `${failed.rw} QD${failed.depth}: ${failed.error}` } : {}),
    };
  } catch (e) {
    return { tracer, error: (e as Error).message };
  } finally {
    tracer?.close();
  }
}

async function session(
  o: GuestlessBenchOptions,
  backend: VhostBackendKind,
  queues: number,
  rep: number,
  trace: boolean,
): Promise<SessionOutcome> {
  const started = Date.now();
  flushAndWarm(o.imagePath);
  const dir = mkdtempSync(join(o.imagePath, "..", "gl-"));
  const socket = join(dir, "vhost-user.sock");
  const jobs = [...jobsOf(o), ...(trace ? straceJobs(o.straceSeconds ?? 0) : [])];
  let server: BenchBackend | undefined;
  let driven: Driven;
  try {
    server = await startBackend(o, backend, socket, queues);
    driven = await drive(o, server, socket, queues, jobs, trace);
  } catch (e) {
    driven = { error: (e as Error).message };
  }
  const stopped = server && (await stopBackend(server));
  rmSync(dir, { recursive: true, force: true });
  const error = driven.error ?? stopped?.error;
  const results = driven.out?.results ?? [];
  return {
    session: {
      backend,
      queues,
      rep,
      ...(error ? { error } : {}),
      results: results.filter((r) => r.error === undefined && !r.pause),
      ...(driven.out ? { driverStats: driven.out.stats } : {}),
      ...(stopped?.hwm !== undefined ? { backendHwm: stopped.hwm } : {}),
      wallMs: Date.now() - started,
    },
    syscalls: driven.tracer?.points(backend, queues, jobs, results, error) ?? [],
  };
}

/** Reads the backend's peak RSS, notes whether it died, and stops it. */
async function stopBackend(server: BenchBackend): Promise<{ hwm?: number; error?: string }> {
  const hwm = processMemory(server.pid)?.hwm;
  const error = server.status ? `backend exited: ${server.diagnostics()}` : undefined;
  await server.stop();
  return { ...(hwm !== undefined ? { hwm } : {}), ...(error ? { error } : {}) };
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
                    (x) =>
                      x.backend === baselineOf(backend) && x.queues === queues && x.rep === s.rep,
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

function logSession(
  o: GuestlessBenchOptions,
  s: GuestlessSession,
  progress: { done: number; of: number; etaMs: number },
): void {
  const figures = s.results
    .map((r) => `${r.rw === "randread" ? "R" : "W"}${r.depth} ${(r.iops / 1000).toFixed(1)}k`)
    .join(" ");
  o.log(
    `[guest-less ${progress.done}/${progress.of}] ${s.backend} ${s.queues}q rep ${s.rep}: ${figures}` +
      `${s.error ? ` — FAILED: ${s.error.split("\n")[0]}` : ""} (${(s.wallMs / 1000).toFixed(0)} s; ETA ${(progress.etaMs / 60_000).toFixed(1)} min)`,
  );
}

function logSyscalls(o: GuestlessBenchOptions, points: readonly SyscallPoint[]): void {
  for (const p of points) {
    const head = `  [strace] ${p.backend} ${p.queues}q ${p.rw} QD${p.depth}`;
    const threads = `threads attached ${p.threadsAttached ?? "?"} of ${p.threadsSeen ?? "?"}`;
    if (p.perIo === undefined) o.log(`${head}: not measured — ${p.error?.split("\n")[0]}`);
    else
      o.log(
        `${head}: ${p.perIo.toFixed(2)} syscalls/IO over ${p.ios} I/Os (${(p.top ?? [])
          .map((t) => `${t.syscall} ${t.perIo.toFixed(2)}`)
          .join(", ")}; ${threads})`,
      );
  }
}

/** Runs the whole guest-less benchmark. */
export async function guestlessBench(o: GuestlessBenchOptions): Promise<GuestlessBenchReport> {
  const plan: { backend: VhostBackendKind; queues: number; rep: number }[] = [];
  for (let rep = 1; rep <= o.reps; rep++)
    for (const queues of o.queues)
      for (const backend of o.backends) plan.push({ backend, queues, rep });
  const straceMissing = o.straceSeconds ? await ensureStrace(o.log) : undefined;
  const trace = (o.straceSeconds ?? 0) > 0 && straceMissing === undefined;
  const sessions: GuestlessSession[] = [];
  const syscalls: SyscallPoint[] = [];
  const t0 = Date.now();
  for (const [i, p] of plan.entries()) {
    // strace counts per backend: packed rings add nothing to qemu-storage-daemon's pairing.
    const traced = trace && p.rep === o.reps && p.backend !== "virtio-ts-packed";
    const r = await session(o, p.backend, p.queues, p.rep, traced);
    sessions.push(r.session);
    syscalls.push(...r.syscalls);
    const done = i + 1;
    logSession(o, r.session, {
      done,
      of: plan.length,
      etaMs: ((Date.now() - t0) / done) * (plan.length - done),
    });
    logSyscalls(o, r.syscalls);
  }
  if (straceMissing !== undefined)
    syscalls.push(
      ...unmeasuredPoints(
        o.backends.filter((b) => b !== "virtio-ts-packed"),
        o.queues,
        straceMissing,
      ),
    );
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
      ...(o.straceSeconds ? { straceSeconds: o.straceSeconds } : {}),
    },
    sessions,
    ...summarize(sessions, o),
    ...(o.straceSeconds ? { syscalls } : {}),
  };
}

/**
 * Real-guest benchmark: a Linux guest under QEMU (TCG) runs fio against a
 * virtio-blk disk served by each backend in turn — this project's
 * `virtio-ts vhost-user-blk`, qemu-storage-daemon's vhost-user-blk export,
 * and QEMU's own virtio-blk (`aio=io_uring`) — all on the same raw image.
 *
 * One QEMU run per backend, queue count and repetition: the guest first
 * switches the disk's cache to "write back" (`/sys/block/vda/cache_type`,
 * which reaches every backend as a virtio config write of `writeback`; no
 * workload issues flushes), then runs the fio workloads of ./guest/fio.ts as
 * steps. Runs are interleaved (rep 1 of every backend, then rep 2, ...), so
 * drift on the shared machine hits every backend alike.
 *
 * Backend cost is read from procfs while the guest runs: CPU time of the
 * whole backend process (all threads) between the start and end markers of
 * each step, divided by the I/Os fio completed in it; and its peak resident
 * set (`VmHWM`) after the run, with the RssAnon / RssShmem split of the
 * largest sample. QEMU's own virtio-blk runs inside the QEMU process that
 * also emulates the guest, so it has no separate backend cost.
 *
 * @module
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { GuestRunError, parseSerialLog, runGuest } from "../test/interop/guest/runner.ts";
import type { GuestDisk, GuestStep } from "../test/interop/guest/runner.ts";
import {
  baselineOf,
  isVirtioTs,
  startBenchBackend,
  type BenchBackend,
  type VhostBackendKind,
} from "./lib/backends.ts";
import { flushAndWarm } from "./lib/image.ts";
import { cpuSeconds, processMemory, type ProcMemory } from "./lib/procfs.ts";
import { ratio, spreadOf, type Spread } from "./lib/stats.ts";
import {
  fioCommand,
  GUEST_WORKLOADS,
  parseFioJson,
  type FioResult,
  type FioWorkload,
} from "./guest/fio.ts";

/** A backend of the guest benchmark. */
export type GuestBackendKind = VhostBackendKind | "qemu-builtin";

/** Options of {@link guestBench}. */
export interface GuestBenchOptions {
  /** Raw image every backend serves (created by the caller). */
  readonly imagePath: string;
  readonly imageBytes: number;
  readonly reps: number;
  /** fio runtime of each workload. */
  readonly runtimeSeconds: number;
  readonly queues: readonly number[];
  readonly backends: readonly GuestBackendKind[];
  readonly workloads?: readonly FioWorkload[];
  /** Progress lines. */
  readonly log: (line: string) => void;
  /** Node options for the virtio-ts backend (e.g. `--cpu-prof`). */
  readonly virtioTsNodeArgs?: readonly string[];
  /** Extra arguments for virtio-ts (e.g. `--verbose`). */
  readonly virtioTsArgs?: readonly string[];
  /** Where a failed run's message, backend output and serial log are written. */
  readonly failureDir?: string;
}

/** One workload of one run. */
export interface GuestWorkloadMeasure {
  readonly fio: FioResult;
  /** Backend CPU seconds (user + system, all threads) over the step. */
  readonly backendCpuSeconds?: number;
  /** Backend CPU microseconds per fio I/O. */
  readonly backendCpuUsPerIo?: number;
}

/** One QEMU run: one backend, queue count and repetition. */
export interface GuestRunMeasure {
  readonly backend: GuestBackendKind;
  readonly queues: number;
  readonly rep: number;
  /** Why a boot of this run failed (the workloads that finished are kept). */
  readonly error?: string;
  /** Workloads without a result, and why (e.g. a hung step). */
  readonly failed?: Readonly<Record<string, string>>;
  readonly workloads: Readonly<Record<string, GuestWorkloadMeasure>>;
  /** Backend peak RSS (VmHWM) and the largest RSS sample's split, bytes. */
  readonly backendMemory?: ProcMemory;
  /** What the guest saw: cache type before/after the switch, queue limits. */
  readonly guestView?: string;
  readonly wallMs: number;
}

/** Summary of one backend × queues × workload over the repetitions. */
export interface GuestPoint {
  readonly backend: GuestBackendKind;
  readonly queues: number;
  readonly workload: string;
  readonly label: string;
  readonly iops?: Spread;
  readonly mibPerSec?: Spread;
  readonly meanLatUs?: Spread;
  readonly p99LatUs?: Spread;
  readonly backendCpuUsPerIo?: Spread;
  /** virtio-ts / qsd of the same repetition (paired), for virtio-ts points. */
  readonly iopsRatio?: Spread;
  readonly cpuPerIoRatio?: Spread;
}

/** Peak memory of one backend × queues over the repetitions. */
export interface GuestMemoryPoint {
  readonly backend: VhostBackendKind;
  readonly queues: number;
  readonly hwmMiB: Spread;
  readonly anonMiB?: Spread;
  readonly shmemMiB?: Spread;
}

/** The guest benchmark's JSON report. */
export interface GuestBenchReport {
  readonly name: "guest";
  readonly date: string;
  readonly options: Omit<
    GuestBenchOptions,
    "log" | "virtioTsNodeArgs" | "virtioTsArgs" | "imagePath" | "failureDir"
  > & {
    readonly workloads: readonly FioWorkload[];
  };
  readonly runs: readonly GuestRunMeasure[];
  readonly points: readonly GuestPoint[];
  readonly memory: readonly GuestMemoryPoint[];
}

const MiB = 1 << 20;

/** Guest shell: report the disk's cache mode and queue limits, then switch it to write back. */
const PREP_STEP: GuestStep = {
  name: "prep",
  sh: [
    "d=/sys/block/${VTS_DISK#/dev/}; q=$d/queue",
    'echo "cache_type_before=$(cat $d/cache_type)"',
    "echo 'write back' > $d/cache_type",
    'echo "cache_type=$(cat $d/cache_type) write_cache=$(cat $q/write_cache)"',
    'echo "max_sectors_kb=$(cat $q/max_sectors_kb) max_segments=$(cat $q/max_segments) max_segment_size=$(cat $q/max_segment_size) hw_queues=$(ls $q/../mq | wc -l)"',
  ].join("\n"),
};

/** Wall-time bound of one QEMU run. */
function runTimeoutMs(o: GuestBenchOptions, workloads: number): number {
  return 60_000 + workloads * (o.runtimeSeconds + 20) * 1000;
}

/**
 * Watches the serial console while the guest runs: which step is running
 * and since when (host time), and — with a backend pid — samples the
 * backend: CPU at each step's start and end marker (the runner polls the
 * serial log every 100 ms; every step sleeps 0.5 s before fio starts, so the
 * start sample precedes its I/O), and memory at every poll.
 */
class ConsoleWatch {
  readonly begin = new Map<string, number>();
  readonly end = new Map<string, number>();
  peak: ProcMemory | undefined;
  /** The step running now and the host time its start marker was seen. */
  current: { name: string; since: number } | undefined;
  #scanned = 0;

  constructor(readonly pid: number | undefined) {}

  onSerial(log: string): void {
    const fresh = log.slice(this.#scanned);
    const last = fresh.lastIndexOf("\n");
    if (last >= 0) {
      this.#scanned += last + 1;
      for (const m of fresh.slice(0, last).matchAll(/^VTS-(BEGIN|END) (\S+)/gm)) {
        const name = m[2]!;
        const isBegin = m[1] === "BEGIN";
        this.current = isBegin ? { name, since: Date.now() } : undefined;
        const map = isBegin ? this.begin : this.end;
        const cpu = this.pid === undefined ? undefined : cpuSeconds(this.pid);
        if (cpu !== undefined && !map.has(name)) map.set(name, cpu);
      }
    }
    const mem = this.pid === undefined ? undefined : processMemory(this.pid);
    if (mem && (this.peak === undefined || mem.rss > this.peak.rss)) this.peak = mem;
  }

  /** CPU seconds over step `name`, if both markers were seen. */
  cpuOver(name: string): number | undefined {
    const a = this.begin.get(name);
    const b = this.end.get(name);
    return a === undefined || b === undefined ? undefined : b - a;
  }

  /** Why the run should stop now: a step running far longer than it can. */
  hung(limitMs: (step: string) => number): string | undefined {
    const c = this.current;
    if (c === undefined || Date.now() - c.since <= limitMs(c.name)) return undefined;
    return `step ${c.name} hung: no end marker ${((Date.now() - c.since) / 1000).toFixed(0)} s after its start`;
  }
}

function fmtK(n: number): string {
  return n >= 10_000 ? `${(n / 1000).toFixed(1)}k` : n.toFixed(0);
}

/** What one QEMU boot produced. */
interface BootOutcome {
  readonly workloads: Record<string, GuestWorkloadMeasure>;
  /** The workloads that failed (hung, or fio failed), with the reason. */
  readonly failed: Record<string, string>;
  readonly error?: string;
  readonly backendMemory?: ProcMemory;
  readonly guestView?: string;
}

/** Slack of a workload step beyond fio's runtime (fio start-up, JSON output). */
const STEP_SLACK_MS = 30_000;

/** One QEMU boot running `workloads` in order; never rejects. */
async function guestBoot(
  o: GuestBenchOptions,
  backend: GuestBackendKind,
  queues: number,
  label: string,
  workloads: readonly FioWorkload[],
): Promise<BootOutcome> {
  flushAndWarm(o.imagePath);
  const dir = mkdtempSync(join(o.imagePath, "..", "run-"));
  const socket = join(dir, "vhost-user.sock");
  let server: BenchBackend | undefined;
  let watch = new ConsoleWatch(undefined);
  let serialLog = "";
  let error: string | undefined;
  const steps: GuestStep[] = [
    PREP_STEP,
    ...workloads.map((w) => ({
      name: w.id,
      sh: `sleep 0.5\n${fioCommand(w, { runtimeSeconds: o.runtimeSeconds, numJobs: queues, diskBytes: o.imageBytes })}`,
    })),
  ];
  const stepLimit = (step: string): number =>
    (step === PREP_STEP.name ? 0 : o.runtimeSeconds * 1000) + STEP_SLACK_MS;
  try {
    let disk: GuestDisk;
    if (backend === "qemu-builtin") {
      disk = { kind: "virtio-blk", image: o.imagePath, numQueues: queues, aio: "io_uring" };
    } else {
      server = await startBenchBackend(backend, {
        socketPath: socket,
        imagePath: o.imagePath,
        numQueues: queues,
        ...(isVirtioTs(backend) && o.virtioTsNodeArgs ? { nodeArgs: o.virtioTsNodeArgs } : {}),
        ...(isVirtioTs(backend) && o.virtioTsArgs ? { extraArgs: o.virtioTsArgs } : {}),
      });
      watch = new ConsoleWatch(server.pid);
      disk = { kind: "vhost-user", socket, numQueues: queues };
    }
    const s = server;
    const r = await runGuest({
      disk,
      smp: queues,
      fio: true,
      timeoutMs: runTimeoutMs(o, workloads.length),
      steps,
      keepOnFailure: false,
      onSerial: (log) => watch.onSerial(log),
      abortIf: () =>
        (s?.status ? `${s.kind} exited during the run` : undefined) ?? watch.hung(stepLimit),
      ...(s ? { diagnostics: () => s.diagnostics() } : {}),
    });
    serialLog = r.serialLog;
  } catch (e) {
    error = (e as Error).message.split("\n")[0];
    if (e instanceof GuestRunError) serialLog = e.serialLog;
    if (o.failureDir) {
      mkdirSync(o.failureDir, { recursive: true });
      const file = join(o.failureDir, `guest-${label}.log`);
      writeFileSync(file, `${(e as Error).message}\n--- serial log ---\n${serialLog}`);
      error += ` (details in ${relative(process.cwd(), file)})`;
    }
  }
  // Markers the runner read after its last poll; the backend is idle now, so late samples are exact.
  watch.onSerial(serialLog + "\n");
  const hwm = server ? processMemory(server.pid)?.hwm : undefined;
  if (server) await server.stop();
  rmSync(dir, { recursive: true, force: true });
  const parsed = parseSerialLog(serialLog);
  const results: Record<string, GuestWorkloadMeasure> = {};
  const failed: Record<string, string> = {};
  for (const w of workloads) {
    const step = parsed.steps.find((x) => x.name === w.id);
    if (step === undefined) continue;
    if (step.rc !== 0) {
      failed[w.id] =
        step.rc === null
          ? (error ?? "did not finish")
          : `exit status ${step.rc}: ${step.output.slice(-200)}`;
      continue;
    }
    try {
      const fio = parseFioJson(w, step.output);
      const cpu = watch.cpuOver(w.id);
      results[w.id] = {
        fio,
        ...(cpu !== undefined
          ? { backendCpuSeconds: cpu, backendCpuUsPerIo: (cpu * 1e6) / Math.max(1, fio.ios) }
          : {}),
      };
    } catch (e) {
      failed[w.id] = (e as Error).message.split("\n")[0]!;
    }
  }
  const peak = watch.peak;
  const view = parsed.steps.find((x) => x.name === "prep")?.output.replace(/\r/g, "");
  return {
    workloads: results,
    failed,
    ...(error ? { error } : {}),
    ...(peak ? { backendMemory: { ...peak, hwm: hwm ?? peak.hwm } } : {}),
    ...(view !== undefined ? { guestView: view } : {}),
  };
}

/**
 * One backend × queues × repetition. A workload that fails or hangs (the
 * step watchdog stops the boot) is recorded and skipped; the workloads after
 * it run in a fresh boot with a fresh backend. Never rejects.
 */
async function guestRun(
  o: GuestBenchOptions,
  backend: GuestBackendKind,
  queues: number,
  rep: number,
  workloads: readonly FioWorkload[],
): Promise<GuestRunMeasure> {
  const started = Date.now();
  const results: Record<string, GuestWorkloadMeasure> = {};
  const failed: Record<string, string> = {};
  const errors: string[] = [];
  let memory: ProcMemory | undefined;
  let guestView: string | undefined;
  let remaining = workloads;
  for (let boot = 1; remaining.length > 0 && boot <= workloads.length; boot++) {
    const label = `${backend}-${queues}q-rep${rep}-boot${boot}`;
    const b = await guestBoot(o, backend, queues, label, remaining);
    Object.assign(results, b.workloads);
    Object.assign(failed, b.failed);
    if (b.error) errors.push(b.error);
    if (b.backendMemory && (!memory || b.backendMemory.hwm > memory.hwm)) memory = b.backendMemory;
    guestView ??= b.guestView;
    // Resume after the first workload that produced nothing (a boot that never
    // reached its first workload ends the repetition).
    const stuck = remaining.findIndex((w) => results[w.id] === undefined);
    if (stuck < 0 || (b.error === undefined && Object.keys(b.failed).length === 0)) break;
    if (stuck === 0 && failed[remaining[0]!.id] === undefined) break;
    failed[remaining[stuck]!.id] ??= b.error ?? "no result";
    remaining = remaining.slice(stuck + 1);
  }
  return {
    backend,
    queues,
    rep,
    ...(errors.length ? { error: errors.join("; ") } : {}),
    ...(Object.keys(failed).length ? { failed } : {}),
    workloads: results,
    ...(memory ? { backendMemory: memory } : {}),
    ...(guestView !== undefined ? { guestView } : {}),
    wallMs: Date.now() - started,
  };
}

function summarize(
  runs: readonly GuestRunMeasure[],
  o: GuestBenchOptions,
  workloads: readonly FioWorkload[],
): { points: GuestPoint[]; memory: GuestMemoryPoint[] } {
  const points: GuestPoint[] = [];
  const memory: GuestMemoryPoint[] = [];
  for (const queues of o.queues) {
    for (const backend of o.backends) {
      const mine = runs.filter((r) => r.backend === backend && r.queues === queues);
      for (const w of workloads) {
        const got = (f: (m: GuestWorkloadMeasure) => number | undefined): Spread | undefined =>
          spreadOf(
            mine.map((r) => {
              const m = r.workloads[w.id];
              return m ? (f(m) ?? NaN) : NaN;
            }),
          );
        const paired = (f: (m: GuestWorkloadMeasure) => number | undefined): Spread | undefined =>
          baselineOf(backend) === undefined
            ? undefined
            : spreadOf(
                mine.map((r) => {
                  const q = runs.find(
                    (x) =>
                      x.backend === baselineOf(backend) && x.queues === queues && x.rep === r.rep,
                  );
                  const a = r.workloads[w.id];
                  const b = q?.workloads[w.id];
                  return (a && b && ratio(f(a), f(b))) ?? NaN;
                }),
              );
        const point: GuestPoint = {
          backend,
          queues,
          workload: w.id,
          label: w.label,
          iops: got((m) => m.fio.iops),
          mibPerSec: got((m) => m.fio.mibPerSec),
          meanLatUs: got((m) => m.fio.meanLatUs),
          p99LatUs: got((m) => m.fio.p99LatUs),
          backendCpuUsPerIo: got((m) => m.backendCpuUsPerIo),
          iopsRatio: paired((m) => m.fio.iops),
          cpuPerIoRatio: paired((m) => m.backendCpuUsPerIo),
        };
        points.push(point);
      }
      if (backend !== "qemu-builtin") {
        const mem = mine.map((r) => r.backendMemory);
        const hwm = spreadOf(mem.map((m) => (m ? m.hwm / MiB : NaN)));
        if (hwm)
          memory.push({
            backend,
            queues,
            hwmMiB: hwm,
            anonMiB: spreadOf(mem.map((m) => (m ? m.rssAnon / MiB : NaN))),
            shmemMiB: spreadOf(mem.map((m) => (m ? m.rssShmem / MiB : NaN))),
          });
      }
    }
  }
  return { points, memory };
}

/** Runs the whole real-guest benchmark. */
export async function guestBench(o: GuestBenchOptions): Promise<GuestBenchReport> {
  const workloads = o.workloads ?? GUEST_WORKLOADS;
  const plan: { backend: GuestBackendKind; queues: number; rep: number }[] = [];
  for (let rep = 1; rep <= o.reps; rep++)
    for (const queues of o.queues)
      for (const backend of o.backends) plan.push({ backend, queues, rep });
  const runs: GuestRunMeasure[] = [];
  const t0 = Date.now();
  for (const [i, p] of plan.entries()) {
    const r = await guestRun(o, p.backend, p.queues, p.rep, workloads);
    runs.push(r);
    const done = i + 1;
    const eta = ((Date.now() - t0) / done) * (plan.length - done);
    const figures = workloads
      .map((w) => {
        const m = r.workloads[w.id];
        if (!m) return `${w.id} -`;
        const cpu =
          m.backendCpuUsPerIo === undefined ? "" : ` ${m.backendCpuUsPerIo.toFixed(1)}µs/io`;
        return `${w.id} ${fmtK(m.fio.iops)}${cpu}`;
      })
      .join(", ");
    o.log(
      `[guest ${done}/${plan.length}] ${p.backend} ${p.queues}q rep ${p.rep}: ${figures}` +
        `${r.error ? ` — FAILED: ${r.error}` : ""} (${(r.wallMs / 1000).toFixed(0)} s; ETA ${(eta / 60_000).toFixed(1)} min)`,
    );
  }
  const { points, memory } = summarize(runs, o, workloads);
  return {
    name: "guest",
    date: new Date().toISOString(),
    options: {
      imageBytes: o.imageBytes,
      reps: o.reps,
      runtimeSeconds: o.runtimeSeconds,
      queues: o.queues,
      backends: o.backends,
      workloads,
    },
    runs,
    points,
    memory,
  };
}

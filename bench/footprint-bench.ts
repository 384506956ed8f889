/**
 * The footprint benchmark: what a backend costs when it is not busy, and
 * per disk when one process serves many — virtio-ts and qemu-storage-daemon
 * side by side, repetitions interleaved. Not a test: nothing here asserts.
 *
 * - **Idle**: one export, a front-end connected (rings started, a few I/Os
 *   done), {@link IDLE_SETTLE_SECONDS} to settle, then `idleSeconds` without I/O: the backend's CPU time over that
 *   span (`/proc/PID/stat`, all threads) as a percentage of one CPU.
 * - **Many exports**: one process serving `exports` disks (repeated
 *   `--export`), each with a front-end connected, against one process
 *   serving one: resident memory without guest RAM (`VmRSS − RssShmem`), and
 *   the difference per added export. Then every disk at once runs the
 *   guest-less soak workload (4 KiB random reads and writes, every read
 *   checked against the last write, a stall watchdog) for `loadSeconds`.
 * - **Small-memory mode**: peak resident memory (`VmHWM`) of one export
 *   under the same workload at depth 32 with `--io-threads 0` and with one
 *   I/O thread.
 *
 * @module
 */
import { spawn } from "node:child_process";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { VhostUserBlk } from "../src/devices/blk/vhost-user-frontend.ts";
import { spawnBackend, virtioTsCommand } from "../test/interop/guest/backends.ts";
import { drive, sparseImage } from "../test/reliability/guestless-soak.ts";
import { isVirtioTs, type VhostBackendKind } from "./lib/backends.ts";
import { cpuSeconds, listeningSocketOwner, processMemory } from "./lib/procfs.ts";
import { spreadOf, type Spread } from "./lib/stats.ts";

/** Options of {@link footprintBench}. */
export interface FootprintBenchOptions {
  /** A directory for the images and sockets (emptied by the caller). */
  readonly dir: string;
  readonly reps: number;
  /** Exports of the many-exports run (default 16). */
  readonly exports: number;
  readonly idleSeconds: number;
  readonly loadSeconds: number;
  readonly backends: readonly VhostBackendKind[];
  readonly log: (line: string) => void;
}

/** What the runs measured, per backend (spreads over the repetitions). */
export interface FootprintRow {
  readonly backend: VhostBackendKind;
  /** Backend CPU over the idle span, % of one CPU. */
  readonly idleCpuPercent: Spread | null;
  /** Memory without guest RAM, one export, connected, MiB. */
  readonly oneExportMiB: Spread | null;
  /** The same with `exports` exports. */
  readonly manyExportsMiB: Spread | null;
  /** (many − one) / (exports − 1). */
  readonly perAddedExportMiB: Spread | null;
  /** Exports whose workload passed, and how many ran, summed over the repetitions. */
  readonly loadPassed: number;
  readonly loadRuns: number;
  /** Reads + writes completed by all exports under load (median per repetition). */
  readonly loadIops: Spread | null;
  /** Peak memory under load, one export, `--io-threads 0` (virtio-ts) or the only mode (qsd). */
  readonly smallHwmMiB: Spread | null;
  /** virtio-ts only: the same with one I/O thread. */
  readonly oneThreadHwmMiB: Spread | null;
  /** Private memory (RssAnon) after that load: --io-threads 0 (virtio-ts) or the only mode (qsd). */
  readonly smallAnonMiB?: Spread | null;
  /** virtio-ts only: the same with one I/O thread. */
  readonly oneThreadAnonMiB?: Spread | null;
  /** File-backed resident memory (RssFile: the executable and its libraries) after that load. */
  readonly fileMiB?: Spread | null;
  /** The first failures, for the report. */
  readonly failures: readonly string[];
}

export interface FootprintBenchReport {
  readonly date: string;
  /** A bare `node` process in the same run (idle, nothing loaded): its RSS and RssFile, MiB. */
  readonly bareNode?: { readonly rssMiB: Spread | null; readonly fileMiB: Spread | null };
  readonly options: Omit<FootprintBenchOptions, "log" | "dir">;
  readonly rows: readonly FootprintRow[];
}

const MiB = 1 << 20;
/** Seconds between the front-end's last I/O and the start of the idle span. */
export const IDLE_SETTLE_SECONDS = 10;
const IMAGE_MIB = 64;

interface Export {
  readonly socket: string;
  readonly image: string;
}

/** Command line of one backend serving `exports` (each one queue). */
function command(
  kind: VhostBackendKind,
  exports: readonly Export[],
  ioThreads: number,
): { cmd: string; args: string[] } {
  if (!isVirtioTs(kind))
    return {
      cmd: "qemu-storage-daemon",
      args: exports.flatMap((x, i) => [
        "--blockdev",
        `driver=file,node-name=f${i},filename=${x.image},cache.direct=off,aio=io_uring`,
        "--export",
        `type=vhost-user-blk,id=e${i},node-name=f${i},addr.type=unix,addr.path=${x.socket},writable=on,num-queues=1`,
      ]),
    };
  const { cmd, args } = virtioTsCommand();
  return {
    cmd,
    args: [
      ...args,
      "vhost-user-blk",
      "--writeback",
      "--io-threads",
      String(ioThreads),
      ...exports.flatMap((x, i) => ["--export", `id=d${i},socket=${x.socket},image=${x.image}`]),
    ],
  };
}

/** A started backend with its front-ends connected. */
interface Served {
  readonly pid: number;
  readonly disks: VhostUserBlk[];
  readonly alive: () => boolean;
  readonly stop: () => Promise<void>;
}

async function serve(
  kind: VhostBackendKind,
  exports: readonly Export[],
  ioThreads: number,
): Promise<Served> {
  // Every run starts from zeroed images: the workload checks reads against
  // what it wrote itself, starting at generation 0 (all zeros).
  for (const x of exports) sparseImage(x.image, IMAGE_MIB);
  const { cmd, args } = command(kind, exports, ioThreads);
  const last = exports[exports.length - 1]!.socket;
  const b = await spawnBackend(kind, cmd, args, last, { listening: last });
  const disks: VhostUserBlk[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(disks.map((d) => d.destroy().catch(() => {})));
    await b.stop();
  };
  try {
    const pid = listeningSocketOwner(last);
    if (pid === undefined) throw new Error(`no process holds ${last}\n${b.diagnostics()}`);
    // Split rings against both back-ends (qemu-storage-daemon offers no packed rings): like for like.
    const options = { numQueues: 1, exclude: ["RING_PACKED"] as const };
    for (const x of exports) disks.push(await VhostUserBlk.connect(x.socket, options));
    const buf = new Uint8Array(4096);
    for (const d of disks) for (let i = 0; i < 8; i++) await d.read(i * 4096, buf);
    return { pid, disks, alive: () => b.status === undefined, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** A bare idle `node` process's memory (the floor any Node program starts from). */
async function bareNode(): Promise<ReturnType<typeof processMemory>> {
  const p = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore" });
  try {
    await sleep(1000);
    return p.pid === undefined ? undefined : processMemory(p.pid);
  } finally {
    p.kill();
  }
}

/** Memory without the guest RAM the backend maps (shared with the front-end), MiB. */
function ownMiB(pid: number): number | undefined {
  const m = processMemory(pid);
  return m === undefined ? undefined : (m.rss - m.rssShmem) / MiB;
}

/** One repetition of one backend; pushes into `acc`. */
async function repetition(
  kind: VhostBackendKind,
  o: FootprintBenchOptions,
  xs: readonly Export[],
  acc: Accumulator,
): Promise<void> {
  // Idle, and memory with one export.
  let s = await serve(kind, xs.slice(0, 1), 1);
  try {
    // Start-up work (V8's optimizing compiler and GC after the connection)
    // settles first: the idle figure is the steady state.
    await sleep(IDLE_SETTLE_SECONDS * 1000);
    const c0 = cpuSeconds(s.pid);
    await sleep(o.idleSeconds * 1000);
    const c1 = cpuSeconds(s.pid);
    if (c0 !== undefined && c1 !== undefined) acc.idle.push(((c1 - c0) / o.idleSeconds) * 100);
    const one = ownMiB(s.pid);
    if (one !== undefined) acc.one.push(one);
  } finally {
    await s.stop();
  }
  // Many exports: idle memory, then all under load at once.
  s = await serve(kind, xs, 1);
  try {
    await sleep(1000);
    const many = ownMiB(s.pid);
    if (many !== undefined) acc.many.push(many);
    await load(s, o, acc);
  } finally {
    await s.stop();
  }
  // Peak memory of one export under load, per threading mode.
  for (const threads of isVirtioTs(kind) ? [0, 1] : [1]) {
    s = await serve(kind, xs.slice(0, 1), threads);
    try {
      await drive(s.disks[0]!, { seconds: o.loadSeconds, imageMiB: IMAGE_MIB }, s.alive);
      const m = processMemory(s.pid);
      if (m !== undefined) {
        const small = threads === 0 || !isVirtioTs(kind);
        (small ? acc.small : acc.oneThread).push(m.hwm / MiB);
        (small ? acc.smallAnon : acc.oneThreadAnon).push(m.rssAnon / MiB);
        acc.file.push(m.rssFile / MiB);
      }
    } catch (e) {
      acc.failures.push(`peak memory, ${threads} I/O threads: ${(e as Error).message}`);
    } finally {
      await s.stop();
    }
  }
}

/** Every disk of `s` runs the soak workload at once (depth 4 each). */
async function load(s: Served, o: FootprintBenchOptions, acc: Accumulator): Promise<void> {
  const runs = await Promise.allSettled(
    s.disks.map((d) =>
      drive(d, { seconds: o.loadSeconds, depth: 4, imageMiB: IMAGE_MIB }, s.alive),
    ),
  );
  let ios = 0;
  runs.forEach((r, i) => {
    acc.loadRuns++;
    if (r.status === "fulfilled") {
      acc.loadPassed++;
      ios += r.value.reads + r.value.writes;
    } else acc.failures.push(`export ${i} under load: ${(r.reason as Error).message}`);
  });
  acc.iops.push(ios / o.loadSeconds);
}

interface Accumulator {
  idle: number[];
  one: number[];
  many: number[];
  small: number[];
  oneThread: number[];
  smallAnon: number[];
  oneThreadAnon: number[];
  file: number[];
  iops: number[];
  loadPassed: number;
  loadRuns: number;
  failures: string[];
}

const spread = (v: number[]): Spread | null => spreadOf(v) ?? null;

/** Runs the footprint benchmark. */
export async function footprintBench(o: FootprintBenchOptions): Promise<FootprintBenchReport> {
  const xs: Export[] = Array.from({ length: o.exports }, (_, i) => ({
    socket: join(o.dir, `fp${i}.sock`),
    image: join(o.dir, `fp${i}.img`),
  }));
  const acc = new Map<VhostBackendKind, Accumulator>();
  for (const k of o.backends)
    acc.set(k, {
      ...{ idle: [], one: [], many: [], small: [], oneThread: [], iops: [] },
      ...{ smallAnon: [], oneThreadAnon: [], file: [] },
      ...{ loadPassed: 0, loadRuns: 0, failures: [] },
    });
  const bare = { rss: [] as number[], file: [] as number[] };
  for (let rep = 1; rep <= o.reps; rep++) {
    const b = await bareNode();
    if (b !== undefined) {
      bare.rss.push(b.rss / MiB);
      bare.file.push(b.rssFile / MiB);
    }
    for (const kind of o.backends) {
      const t = Date.now();
      const a = acc.get(kind)!;
      const known = a.failures.length;
      try {
        await repetition(kind, o, xs, a);
      } catch (e) {
        a.failures.push(`rep ${rep}: ${(e as Error).message.split("\n")[0]}`);
      }
      o.log(
        `[footprint ${rep}/${o.reps}] ${kind}: idle ${a.idle.at(-1)?.toFixed(2) ?? "?"} % CPU, ` +
          `${a.one.at(-1)?.toFixed(1) ?? "?"} MiB (1 export) → ${a.many.at(-1)?.toFixed(1) ?? "?"} MiB ` +
          `(${o.exports}), ${a.loadPassed}/${a.loadRuns} exports passed under load (${((Date.now() - t) / 1000).toFixed(0)} s)`,
      );
      for (const f of a.failures.slice(known)) o.log(`[footprint ${rep}/${o.reps}] ${kind}: ${f}`);
    }
  }
  return {
    date: new Date().toISOString(),
    options: {
      reps: o.reps,
      exports: o.exports,
      idleSeconds: o.idleSeconds,
      loadSeconds: o.loadSeconds,
      backends: o.backends,
    },
    bareNode: { rssMiB: spread(bare.rss), fileMiB: spread(bare.file) },
    rows: o.backends.map((backend) => row(backend, acc.get(backend)!, o.exports)),
  };
}

function row(backend: VhostBackendKind, a: Accumulator, exports: number): FootprintRow {
  const n = Math.min(a.one.length, a.many.length);
  const per = Array.from({ length: n }, (_, i) => (a.many[i]! - a.one[i]!) / (exports - 1));
  return {
    backend,
    idleCpuPercent: spread(a.idle),
    oneExportMiB: spread(a.one),
    manyExportsMiB: spread(a.many),
    perAddedExportMiB: spread(per),
    loadPassed: a.loadPassed,
    loadRuns: a.loadRuns,
    loadIops: spread(a.iops),
    smallHwmMiB: spread(a.small),
    oneThreadHwmMiB: spread(a.oneThread),
    smallAnonMiB: spread(a.smallAnon),
    oneThreadAnonMiB: spread(a.oneThreadAnon),
    fileMiB: spread(a.file),
    failures: a.failures.slice(0, 5),
  };
}

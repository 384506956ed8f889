/**
 * The benchmark report: terminal tables for each benchmark, the cost targets
 * (./targets.ts) checked against the measurements, and docs/benchmarks.md with its
 * SVG charts (docs/benchmarks/*.svg), generated from the JSON results in
 * bench/results/.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import type { BlkBenchReport } from "./blk-bench.ts";
import type { GuestBenchReport, GuestPoint } from "./guest-bench.ts";
import type { GuestlessBenchReport, GuestlessPoint } from "./guestless-bench.ts";
import { IDLE_SETTLE_SECONDS, type FootprintBenchReport } from "./footprint-bench.ts";
import type { RingBenchReport } from "./ring-bench.ts";
import { checkTargets, targetsTable } from "./targets.ts";
import { BACKEND_LABELS } from "./lib/backends.ts";
import type { MachineInfo } from "./lib/machine.ts";
import { renderBarChart, SERIES_COLORS, type BarSeries } from "./lib/svg.ts";
import type { Spread } from "./lib/stats.ts";
import { byJob, fmt, markdownTable, ratioCell, spreadCell, type Table } from "./lib/table.ts";
import { syscallsSection } from "./syscalls-table.ts";

/** How and where the benchmarks ran (bench/results/meta.json). */
export interface BenchMeta {
  readonly machine: MachineInfo;
  /** When the last run finished. */
  readonly date: string;
  /** The command line of the last run. */
  readonly command: string;
  /** Wall seconds per section of the last run. */
  readonly seconds: Readonly<Record<string, number>>;
  /** Whether the last run was a --quick run. */
  readonly quick: boolean;
}

/** Everything a report can show; absent parts are skipped. */
export interface BenchResults {
  readonly meta?: BenchMeta;
  readonly ring?: RingBenchReport;
  readonly blk?: BlkBenchReport;
  readonly guest?: GuestBenchReport;
  readonly guestless?: GuestlessBenchReport;
  readonly footprint?: FootprintBenchReport;
}

/** Results written by older runs name files by absolute path; the report shows them from the repository. */
const REPO_PREFIX = fileURLToPath(new URL("../", import.meta.url));

const label = (b: string): string => BACKEND_LABELS[b as keyof typeof BACKEND_LABELS] ?? b;
const us = (n: number): string => (n >= 1000 ? fmt(n) : n.toFixed(1));

// ---------------------------------------------------------------- tables

/** Real-guest results: one row per queue count × workload × backend. */
export function guestTable(r: GuestBenchReport): Table {
  const rows = r.points.map((p) => [
    p.label,
    String(p.queues),
    label(p.backend),
    spreadCell(p.iops),
    spreadCell(p.mibPerSec),
    spreadCell(p.meanLatUs, us),
    spreadCell(p.p99LatUs, us),
    spreadCell(p.backendCpuUsPerIo),
    ratioCell(p.iopsRatio),
    ratioCell(p.cpuPerIoRatio),
  ]);
  const order = new Map(r.options.workloads.map((w, i) => [w.id, i]));
  const keyed = rows.map((row, i) => ({ row, p: r.points[i]! }));
  keyed.sort(
    (a, b) => a.p.queues - b.p.queues || order.get(a.p.workload)! - order.get(b.p.workload)!,
  );
  return {
    header: [
      "workload",
      "queues",
      "backend",
      "IOPS",
      "MiB/s",
      "mean lat µs",
      "p99 lat µs",
      "backend CPU µs/IO",
      "IOPS × qsd",
      "CPU/IO × qsd",
    ],
    rows: keyed.map((k) => k.row),
  };
}

/** Backend peak memory during the guest runs. */
export function guestMemoryTable(r: GuestBenchReport): Table {
  return {
    header: ["backend", "queues", "peak RSS MiB (VmHWM)", "anon MiB", "guest RAM pages MiB"],
    rows: r.memory.map((m) => [
      label(m.backend),
      String(m.queues),
      spreadCell(m.hwmMiB),
      spreadCell(m.anonMiB),
      spreadCell(m.shmemMiB),
    ]),
  };
}

/** Guest-less results: one row per job × queue count × backend. */
export function guestlessTable(r: GuestlessBenchReport): Table {
  const sorted = [...r.points].sort(byJob);
  return {
    header: [
      "job",
      "QD",
      "queues",
      "backend",
      "IOPS",
      "p50 µs",
      "p99 µs",
      "p99.9 µs",
      "backend CPU µs/IO",
      "frontend CPU µs/IO",
      "IOPS × pair",
      "CPU/IO × pair",
    ],
    rows: sorted.map((p) => [
      `4K ${p.rw}`,
      String(p.depth),
      String(p.queues),
      label(p.backend),
      spreadCell(p.iops),
      spreadCell(p.p50LatUs, us),
      spreadCell(p.p99LatUs, us),
      spreadCell(p.p999LatUs, us),
      spreadCell(p.backendCpuUsPerIo),
      spreadCell(p.frontendCpuUsPerIo),
      ratioCell(p.iopsRatio),
      ratioCell(p.cpuPerIoRatio),
    ]),
  };
}

/** Backend peak memory during the guest-less sessions. */
export function guestlessMemoryTable(r: GuestlessBenchReport): Table {
  return {
    header: ["backend", "queues", "peak RSS MiB (VmHWM)"],
    rows: r.memory.map((m) => [label(m.backend), String(m.queues), spreadCell(m.hwmMiB)]),
  };
}

/** Footprint results: idle CPU, memory per export, small-memory mode (./footprint-bench.ts). */
export function footprintTable(r: FootprintBenchReport): Table {
  const n = r.options.exports;
  return {
    header: [
      "backend",
      "idle CPU %",
      "RSS MiB, 1 export",
      `RSS MiB, ${n} exports`,
      "MiB per added export",
      `${n} exports under load: passed`,
      "IOPS (all exports)",
      "peak RSS MiB, --io-threads 0",
      "peak RSS MiB, 1 I/O thread",
      "private MiB after load, --io-threads 0",
      "private MiB after load, 1 I/O thread",
      "file-backed MiB",
    ],
    rows: r.rows.map((x) => [
      label(x.backend),
      spreadCell(x.idleCpuPercent ?? undefined),
      spreadCell(x.oneExportMiB ?? undefined),
      spreadCell(x.manyExportsMiB ?? undefined),
      spreadCell(x.perAddedExportMiB ?? undefined),
      `${x.loadPassed} of ${x.loadRuns}`,
      spreadCell(x.loadIops ?? undefined),
      spreadCell(x.smallHwmMiB ?? undefined),
      spreadCell(x.oneThreadHwmMiB ?? undefined),
      spreadCell(x.smallAnonMiB ?? undefined),
      spreadCell(x.oneThreadAnonMiB ?? undefined),
      spreadCell(x.fileMiB ?? undefined),
    ]),
  };
}

const C_LABEL = { sleep: "C ringtest, sleep", poll: "C ringtest, poll" } as const;

/** Ring benchmark results (bench/ring-bench.ts), with Linux's C ringtest when measured. */
export function ringTable(r: RingBenchReport): Table {
  const ours = r.points.map((p) => [
    p.transport,
    p.transport === "postmessage" ? "–" : (p.layout ?? "split"),
    p.job,
    spreadCell(p.roundTripsPerSec as Spread),
    p.ratioToBaseline === undefined ? "baseline" : p.ratioToBaseline.toFixed(1),
    p.ratioToC === undefined ? "–" : p.ratioToC.toFixed(2),
    p.ratioToSplit === undefined ? "–" : p.ratioToSplit.toFixed(2),
    spreadCell(p.medianLatencyUs as Spread | undefined),
    spreadCell(p.p99LatencyUs as Spread | undefined),
    p.kicksPerRoundTrip === undefined ? "" : p.kicksPerRoundTrip.toFixed(3),
    p.sleepsPerRoundTrip === undefined ? "" : p.sleepsPerRoundTrip.toFixed(3),
  ]);
  const c = (r.c ?? []).map((p) => [
    C_LABEL[p.mode],
    "split",
    p.job,
    spreadCell(p.roundTripsPerSec as Spread),
    "–",
    "C",
    "–",
    "–",
    "–",
    "",
    "",
  ]);
  return {
    header: [
      "transport",
      "layout",
      "job",
      "round trips/s",
      "× postMessage",
      "× C ringtest",
      "× split",
      "latency µs",
      "p99 µs",
      "kicks/rt",
      "sleeps/rt",
    ],
    rows: [...ours, ...c],
  };
}

/** blk benchmark results (bench/blk-bench.ts). */
export function blkTable(r: BlkBenchReport): Table {
  return {
    header: ["path", "queues", "depth", "IOPS", "× fs.read", "CPU µs/IO", "× fs.read"],
    rows: r.points.map((p) => [
      p.mode,
      String(p.queues),
      String(p.depth),
      spreadCell(p.iops as Spread),
      p.iopsRatioToBaseline === undefined ? "baseline" : p.iopsRatioToBaseline.toFixed(2),
      spreadCell(p.cpuUsPerIo as Spread),
      p.cpuRatioToBaseline === undefined ? "baseline" : p.cpuRatioToBaseline.toFixed(2),
    ]),
  };
}

// ---------------------------------------------------------------- targets

/** One target of issue 5 and how the measurements compare. */
// ---------------------------------------------------------------- charts

function seriesFor<P extends { backend: string }>(
  points: readonly P[],
  backends: readonly string[],
  categories: readonly ((p: P) => boolean)[],
  value: (p: P) => Spread | undefined,
): BarSeries[] {
  return backends.map((b, i) => ({
    name: label(b),
    color: SERIES_COLORS[i % SERIES_COLORS.length]!,
    values: categories.map((match) => {
      const p = points.find((x) => x.backend === b && match(x));
      return p ? value(p) : undefined;
    }),
  }));
}

/** The SVG charts of the report, by file name. */
export function renderCharts(r: BenchResults): Record<string, string> {
  const charts: Record<string, string> = {};
  if (r.guest) {
    const g = r.guest;
    for (const queues of g.options.queues) {
      const cats = g.options.workloads.map((w) => ({
        name: w.label,
        match: (p: GuestPoint) => p.workload === w.id && p.queues === queues,
      }));
      const mk = (
        title: string,
        unit: string,
        backends: readonly string[],
        v: (p: GuestPoint) => Spread | undefined,
      ): string =>
        renderBarChart({
          title,
          unit,
          categories: cats.map((c) => c.name),
          series: seriesFor(
            g.points,
            backends,
            cats.map((c) => c.match),
            v,
          ),
        });
      charts[`guest-iops-${queues}q.svg`] = mk(
        `Real guest (QEMU TCG), ${queues} queue${queues > 1 ? "s" : ""}: IOPS (median, min–max)`,
        "IOPS",
        g.options.backends,
        (p) => p.iops,
      );
      charts[`guest-cpu-${queues}q.svg`] = mk(
        `Real guest, ${queues} queue${queues > 1 ? "s" : ""}: backend CPU µs per I/O (lower is better)`,
        "µs per I/O",
        g.options.backends.filter((b) => b !== "qemu-builtin"),
        (p) => p.backendCpuUsPerIo,
      );
    }
  }
  if (r.guestless) {
    const gl = r.guestless;
    for (const queues of gl.options.queues) {
      const cats = (["randread", "randwrite"] as const).flatMap((rw) =>
        gl.options.depths.map((depth) => ({
          name: `${rw === "randread" ? "read" : "write"} QD${depth}`,
          match: (p: GuestlessPoint) => p.rw === rw && p.depth === depth && p.queues === queues,
        })),
      );
      const mk = (
        title: string,
        unit: string,
        v: (p: GuestlessPoint) => Spread | undefined,
      ): string =>
        renderBarChart({
          title,
          unit,
          categories: cats.map((c) => c.name),
          series: seriesFor(
            gl.points,
            gl.options.backends,
            cats.map((c) => c.match),
            v,
          ),
        });
      charts[`guestless-iops-${queues}q.svg`] = mk(
        `Guest-less (vhost-user front-end), ${queues} queue${queues > 1 ? "s" : ""}: 4 KiB IOPS`,
        "IOPS",
        (p) => p.iops,
      );
      charts[`guestless-cpu-${queues}q.svg`] = mk(
        `Guest-less, ${queues} queue${queues > 1 ? "s" : ""}: backend CPU µs per I/O (lower is better)`,
        "µs per I/O",
        (p) => p.backendCpuUsPerIo,
      );
    }
  }
  return charts;
}

// ---------------------------------------------------------------- markdown

const GiB = 1 << 30;

function machineSection(m: BenchMeta | undefined): string[] {
  if (!m) return ["Machine: not recorded (run `npm run bench`)."];
  const mi = m.machine;
  return [
    `| | |`,
    `| --- | --- |`,
    `| date | ${m.date} |`,
    `| command | \`${m.command}\`${m.quick ? " (quick: smoke-test sizes, not for comparison)" : ""} |`,
    `| CPU | ${mi.cpuModel}, ${mi.cpus} logical CPUs available |`,
    `| memory | ${(mi.memoryBytes / GiB).toFixed(1)} GiB |`,
    `| kernel | Linux ${mi.kernel} |`,
    `| Node | ${mi.node} |`,
    `| QEMU | ${mi.qemu} |`,
    `| qemu-storage-daemon | ${mi.qsd} |`,
    `| wall time | ${Object.entries(m.seconds)
      .map(([k, v]) => `${k} ${(v / 60).toFixed(1)} min`)
      .join(", ")} |`,
  ];
}

/** docs/benchmarks.md; charts are referenced as benchmarks/<file>. */
export function renderMarkdown(r: BenchResults, charts: Readonly<Record<string, string>>): string {
  const L: string[] = [];
  const chart = (file: string, alt: string): void => {
    if (charts[file]) L.push(`![${alt}](benchmarks/${file})`, "");
  };
  L.push(
    "# Benchmarks",
    "",
    "<!-- Generated by `npm run bench` (bench/run.ts, bench/report.ts) from bench/results/*.json. Do not edit by hand. -->",
    "",
    "virtio-ts's vhost-user-blk backend measured side by side with what one would use instead —",
    "qemu-storage-daemon's vhost-user-blk export and QEMU's built-in virtio-blk — in the same run, on the",
    "same image, plus the in-process ring and virtio-blk benchmarks. Every figure is the **median of the",
    "repetitions, with min–max in parentheses**; every ratio is virtio-ts / qemu-storage-daemon of the same",
    "repetition (adjacent in time), summarized the same way.",
    "",
    "## How to run",
    "",
    "```sh",
    "npm run bench                      # everything (~25-30 min on 2 cores); rewrites this file",
    "npm run bench -- --only guest      # a subset: ring, blk, guest, guestless, footprint",
    "npm run bench -- --quick           # smoke-test sizes (1 repetition, short runs)",
    "npm run bench -- --reps 5          # more repetitions of the guest and guest-less runs",
    "npm run bench -- --report          # only regenerate this file from bench/results/*.json",
    "npm run bench -- --cpu-prof DIR    # also write V8 CPU profiles of the virtio-ts backend to DIR",
    "```",
    "",
    "The real-guest part installs what it needs on first use (like the interop tests: QEMU, fio, a",
    "Debian kernel; root on Debian bookworm); the ring part builds Linux's C ringtest once from Debian's",
    "`linux-source-6.1` (installed if missing) into `~/.cache/virtio-ts/`. Results:",
    "`bench/results/{ring,blk,guest,guestless,footprint,meta}.json` (git-ignored); a run with `--only` keeps the other sections' last results, each with its own date.",
    "",
    "## Machine",
    "",
    ...machineSection(r.meta),
    "",
  );
  const checks = checkTargets(r);
  L.push(
    "## Targets",
    "",
    "Measured, not asserted. Medians of the paired ratios; a cell meets an IOPS target at ratio ≥ 1.00",
    "and a CPU target at ≤ 1.00. A target without a measurement in this run says so.",
    "",
    markdownTable(targetsTable(checks)),
    "",
  );
  if (r.guest) {
    const g = r.guest;
    const o = g.options;
    L.push(
      "## Real guest (Linux under QEMU TCG, fio)",
      "",
      `Run ${g.date}. A Linux 6.1 guest (q35, TCG \`-cpu max\`, 256 MiB shared-memfd RAM, one vCPU per queue)`,
      `runs fio against \`/dev/vda\`: ${o.workloads.map((w) => w.label).join(", ")}; each`,
      `\`--time_based --runtime=${o.runtimeSeconds}\` with no ramp, \`libaio\`, \`--direct=1\`, random offsets`,
      "over the whole disk. With 2 queues the guest has 2 vCPUs and fio runs 2 jobs (one per vCPU, each on",
      "its half of the disk) at the stated depth each. One QEMU boot per backend × queues × repetition runs",
      `all workloads in order (random writes last); ${o.reps} repetitions, interleaved across backends.`,
      "",
      `- **Image**: one raw file of ${(o.imageBytes / GiB).toFixed(o.imageBytes % GiB ? 2 : 0)} GiB, every block written (no holes, no unwritten`,
      "  extents). **Host page cache: not dropped** — before every run the image is flushed (`fdatasync`,",
      "  no dirty pages left from the previous run's writes) and read once, so every backend starts with",
      "  the whole image cached and the runs compare data paths, not the host disk.",
      "- **Backends**: `virtio-ts vhost-user-blk --writeback`; `qemu-storage-daemon --blockdev",
      "  driver=file,cache.direct=off,aio=io_uring --export type=vhost-user-blk` (default",
      "  `writethrough=off`); QEMU's `-drive ...,aio=io_uring,cache=writeback` + `virtio-blk-pci`. All",
      "  use the host page cache and complete a write once it is there; the guest also sets the disk's",
      "  `cache_type` to `write back`. fio issues no flushes.",
      "- **O_DIRECT pairing** (when run): `virtio-ts vhost-user-blk --writeback --direct` against",
      "  `qemu-storage-daemon ... cache.direct=on,aio=native` — neither uses the host page cache; each",
      "  is compared with the other (its IOPS × / CPU/IO × columns).",
      "- **Backend CPU per I/O**: user + system time of the backend process, all threads",
      "  (`/proc/PID/stat`), between the step's start and end markers on the serial console, divided by",
      "  fio's completed I/Os. QEMU's built-in virtio-blk runs inside the process that also emulates the",
      "  guest, so it has no separate figure. Under TCG the guest is the bottleneck: IOPS mostly measure",
      "  the guest, CPU per I/O measures the backend.",
      "",
      markdownTable(guestTable(g)),
      "",
    );
    for (const q of o.queues) {
      chart(`guest-iops-${q}q.svg`, `real-guest IOPS, ${q} queue(s)`);
      chart(`guest-cpu-${q}q.svg`, `real-guest backend CPU per I/O, ${q} queue(s)`);
    }
    L.push(
      "Backend memory over the runs (`VmHWM` of `/proc/PID/status`, read just before the backend",
      "stops; the split is the largest RSS sample taken every 100 ms: anonymous memory, and shared",
      "memory = guest RAM pages the backend touched through its mapping):",
      "",
      markdownTable(guestMemoryTable(g)),
      "",
    );
    const failed = g.runs.flatMap((x) =>
      Object.entries(x.failed ?? {}).map(
        ([w, why]) =>
          `- ${label(x.backend)}, ${x.queues}q, rep ${x.rep}, ${w}: ${why.replaceAll(REPO_PREFIX, "")}`,
      ),
    );
    if (failed.length)
      L.push(
        "Workloads without a result (a hung workload is stopped by a watchdog; the ones after it",
        "run in a fresh boot with a fresh backend):",
        "",
        ...failed,
        "",
      );
  }
  if (r.guestless) {
    const gl = r.guestless;
    const o = gl.options;
    L.push(
      "## Guest-less (the vhost-user front-end drives the backend directly)",
      "",
      `Run ${gl.date}. A separate Node process (bench/guestless/driver.ts) connects with the project's`,
      "vhost-user front-end (`VhostUserBlk`: memfd guest memory shared with the backend, the virtio-blk",
      "driver, rings of 256 entries, EVENT_IDX and indirect descriptors when offered) and keeps QD requests in",
      "flight — one async loop per slot, each with its own zero-copy 4 KiB buffer, spread round-robin",
      "over the queues (QD is the total). Offsets are uniform and 4 KiB aligned over the same image as",
      `above. Per session: a fresh backend, ${o.warmupSeconds} s of warm-up reads, then each job for ${o.seconds} s;`,
      `${o.reps} repetitions, interleaved across backends. Latency is per request as the front-end sees it;`,
      "CPU per I/O is the backend's (`/proc/PID/stat`, all threads) and the front-end process's own",
      "(`process.cpuUsage`) over the job. A front-end CPU per I/O close to 1 s / IOPS means the front-end",
      "was the bottleneck. At QD1 both processes sleep between requests, so the figures depend on where",
      "the scheduler puts them: on one CPU a wake-up is a cheap context switch, on two it is an",
      "inter-processor interrupt (costly in a VM); sessions then differ by up to 4× for every backend",
      "alike, which the paired ratios absorb. Rings are split (VIRTIO 1.2 §2.7) against both backends",
      "(qemu-storage-daemon offers no packed rings); `virtio-ts packed rings` is the same daemon driven",
      "over packed rings (§2.8). × pair is virtio-ts ÷ qemu-storage-daemon, and packed rings ÷",
      "virtio-ts on split rings, of the same repetition.",
      "",
      markdownTable(guestlessTable(gl)),
      "",
    );
    for (const q of o.queues) {
      chart(`guestless-iops-${q}q.svg`, `guest-less IOPS, ${q} queue(s)`);
      chart(`guestless-cpu-${q}q.svg`, `guest-less backend CPU per I/O, ${q} queue(s)`);
    }
    L.push("Backend peak memory per session:", "", markdownTable(guestlessMemoryTable(gl)), "");
    L.push(...syscallsSection(gl));
    const failed = gl.sessions.filter((x) => x.error);
    if (failed.length)
      L.push(
        "Failed sessions (their finished jobs are counted):",
        "",
        ...failed.map(
          (x) => `- ${label(x.backend)}, ${x.queues}q, rep ${x.rep}: ${x.error!.split("\n")[0]}`,
        ),
        "",
      );
  }
  if (r.footprint) L.push(...footprintSection(r.footprint));
  if (r.blk) {
    const o = r.blk.options;
    L.push(
      "## In-process virtio-blk (bench/blk-bench.ts)",
      "",
      `Run ${r.blk.date}. 4 KiB random reads from a page-cached ${(o.imageBytes / (1 << 20)).toFixed(0)} MiB image through the`,
      "device (control on the main thread, one dataplane worker per queue, the driver in its own worker),",
      "against the same reads done directly with `fs.read` (the floor) and `FileHandle.read`, in the same",
      `run; ${o.reps} repetitions. CPU is per I/O over every thread of the process.`,
      "",
      markdownTable(blkTable(r.blk)),
      "",
    );
  }
  if (r.ring) L.push(...ringSection(r.ring));
  return L.join("\n");
}

function ringtestText(r: RingBenchReport): string[] {
  if (!r.c?.length)
    return [
      "Linux's C ringtest was not measured in this run (it could not be built or run: see the",
      "run's output).",
    ];
  return [
    `Linux's C ring benchmark runs in the same repetitions, after ours: \`tools/virtio/ringtest\` built`,
    `from Debian's ${r.ringtestSource ?? "linux-source-6.1"} (only that directory extracted, its Makefile's`,
    '`virtio_ring_0_9`). Two threads of one process ("guest" and "host") pass 1-descriptor buffers',
    "through a split ring with event indices; `--sleep` makes each side sleep on an eventfd when its",
    "ring is empty and notify the other (compared with ring-wait), without it both busy-poll and never",
    "notify (compared with ring-poll). Every kick and call also spins ~1000 TSC cycles (ringtest's",
    "model of a VM exit and entry). No CPU pinning, as ours. Round trips/s is `--run-cycles` divided",
    "by the process's wall time; × C ringtest is our median over the C median for the same job and",
    "mode. Options per row:",
    "",
    ...r.c.map((p) => `- ${C_LABEL[p.mode]}, ${p.job}: \`${p.args}\``),
  ];
}

function ringSection(r: RingBenchReport): string[] {
  return [
    "## In-process ring (bench/ring-bench.ts)",
    "",
    `Run ${r.date}. Round trips of 1-descriptor chains between a driver worker and a device worker`,
    "over the in-process transport (a ring of 256, EVENT_IDX, device in null mode), sleeping",
    "(`Atomics.wait`) or busy-polling, against postMessage between two workers in the same run;",
    `${r.options.reps} repetitions, each running every transport in fresh workers after a short warm-up.`,
    "Each ring transport runs with split rings (VIRTIO 1.2 §2.7) and packed rings (§2.8);",
    "× split is a packed point's median over the split point's of the same transport and job.",
    "",
    ...ringtestText(r),
    "",
    markdownTable(ringTable(r)),
    "",
  ];
}

/** The same-run floor of any Node program, when measured. */
function bareNodeLine(f: FootprintBenchReport): string[] {
  const b = f.bareNode;
  if (!b?.rssMiB || !b.fileMiB) return [];
  return [
    `- **The Node floor**: a bare idle \`node\` process in this run is ${spreadCell(b.rssMiB)} MiB resident, of`,
    `  which ${spreadCell(b.fileMiB)} MiB are file-backed pages of the \`node\` executable; every peak RSS`,
    "  figure of virtio-ts includes that floor, qemu-storage-daemon's does not.",
  ];
}

function footprintSection(f: FootprintBenchReport): string[] {
  const o = f.options;
  const failures = f.rows.flatMap((x) => x.failures.map((e) => `- ${label(x.backend)}: ${e}`));
  return [
    "## Footprint: idle, many exports, small-memory mode (bench/footprint-bench.ts)",
    "",
    `Run ${f.date}; ${o.reps} repetitions, interleaved across backends. Each backend serves sparse 64 MiB`,
    "images, one queue each, through the page cache (`--writeback`; qemu-storage-daemon",
    "`cache.direct=off,aio=io_uring`), every export with the project's front-end connected.",
    "",
    `- **Idle CPU**: one export, a few reads, ${IDLE_SETTLE_SECONDS} s to settle (start-up work of the JIT and GC), then`,
    `  ${o.idleSeconds} s without I/O; the backend's CPU time over that span as a percentage of one CPU.`,
    `- **Memory per export**: resident memory without the mapped guest RAM (\`VmRSS − RssShmem\`) of one`,
    `  process serving 1 export and one serving ${o.exports}, idle and connected; the difference over the`,
    `  ${o.exports - 1} added exports. Then all ${o.exports} run the guest-less soak workload at once for ${o.loadSeconds} s (4 KiB`,
    "  random reads and writes at depth 4 each; every read checked against the last write; a stall",
    "  watchdog): an export passes when it finishes without a stall or mismatch.",
    `- **Small-memory mode**: peak resident memory (\`VmHWM\`) of one export under the same workload at`,
    `  depth 32 for ${o.loadSeconds} s, with \`--io-threads 0\` (queues on the main thread) and with one I/O thread.`,
    "  After the load, its private memory (`RssAnon`: heaps, stacks, buffers) and its file-backed",
    "  memory (`RssFile`: pages of the executable and libraries, shared with every process that maps",
    "  them and reclaimable) are read as well.",
    ...bareNodeLine(f),
    "",
    markdownTable(footprintTable(f)),
    "",
    ...(failures.length ? ["Failures:", "", ...failures, ""] : []),
  ];
}

/**
 * `npm run bench`: runs every benchmark, writes each report as JSON to
 * bench/results/<name>.json (git-ignored), prints progress and a table per
 * benchmark, and regenerates docs/benchmarks.md (with its SVG charts in
 * docs/benchmarks/) from all the results there. Not a test: nothing here
 * asserts timing.
 *
 *   --only LIST     run only these sections: ring, blk, guest, guestless, footprint (comma-separated)
 *   --quick         smaller runs (a smoke check of the harness); also BENCH_QUICK=1
 *   --reps N        repetitions of the guest and guest-less runs (default 3)
 *   --report        run nothing, only regenerate docs/benchmarks.md from the results
 *   --cpu-prof DIR  run the virtio-ts backend under `node --cpu-prof`, profiles in DIR
 *
 * @module
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { ringBench, type RingBenchOptions } from "./ring-bench.ts";
import { ensureRingtest, ringtestSource } from "./ringtest-c.ts";
import { blkBench, blkBenchOptions, blkTable } from "./blk-bench.ts";
import { guestBench } from "./guest-bench.ts";
import { guestlessBench } from "./guestless-bench.ts";
import { createImage } from "./lib/image.ts";
import { machineInfo } from "./lib/machine.ts";
import { textTable } from "./lib/table.ts";
import { SYSCALLS_TITLE, syscallsTable } from "./syscalls-table.ts";
import { footprintBench } from "./footprint-bench.ts";
import { checkTargets, targetsTable } from "./targets.ts";
import {
  footprintTable,
  guestlessMemoryTable,
  guestlessTable,
  guestMemoryTable,
  guestTable,
  renderCharts,
  ringTable,
  renderMarkdown,
  type BenchMeta,
  type BenchResults,
} from "./report.ts";

const SECTIONS = ["ring", "blk", "guest", "guestless", "footprint"] as const;
type Section = (typeof SECTIONS)[number];

const { values: flags } = parseArgs({
  options: {
    only: { type: "string" },
    quick: { type: "boolean", default: false },
    reps: { type: "string" },
    report: { type: "boolean", default: false },
    "cpu-prof": { type: "string" },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (flags.help) {
  console.log(readFileSync(fileURLToPath(import.meta.url), "utf8").split("*/")[0]);
  process.exit(0);
}
const quick = flags.quick || process.env.BENCH_QUICK === "1";
const only = new Set<string>(flags.only ? flags.only.split(",").map((s) => s.trim()) : SECTIONS);
for (const s of only)
  if (!(SECTIONS as readonly string[]).includes(s))
    throw new RangeError(`--only: unknown section ${s} (known: ${SECTIONS.join(", ")})`);
const reps = flags.reps === undefined ? (quick ? 1 : 3) : Number(flags.reps);
if (!(Number.isInteger(reps) && reps >= 1))
  throw new RangeError("--reps must be a positive integer");
const wanted = (s: Section): boolean => !flags.report && only.has(s);

const resultsDir = fileURLToPath(new URL("./results/", import.meta.url));
const docsDir = fileURLToPath(new URL("../docs/", import.meta.url));

function writeResult(name: string, report: unknown): void {
  mkdirSync(resultsDir, { recursive: true });
  writeFileSync(`${resultsDir}${name}.json`, JSON.stringify(report, null, 2) + "\n");
}

function readResult<T>(name: string): T | undefined {
  try {
    return JSON.parse(readFileSync(`${resultsDir}${name}.json`, "utf8")) as T;
  } catch {
    return undefined;
  }
}

const progress = (line: string): void => console.log(line);

/** Ring benchmark sizes: --quick, and the full run. */
const RING_OPTIONS: Record<"quick" | "full", RingBenchOptions> = {
  quick: {
    reps: 3,
    throughputTotal: 100_000,
    pingpongTotal: 5_000,
    pollSpin: 20_000,
    ringtestCycles: { sleepPingpong: 20_000, other: 1_000_000 },
  },
  full: {
    reps: 5,
    throughputTotal: 1_000_000,
    pingpongTotal: 30_000,
    pollSpin: 20_000,
    ringtestCycles: { sleepPingpong: 100_000, other: 5_000_000 },
  },
};

async function runRing(cpus: number): Promise<void> {
  const bin = await ensureRingtest(progress);
  const source = bin === undefined ? undefined : ringtestSource(bin);
  console.log(`\nring benchmark${bin ? `, with Linux's C ringtest (${bin})` : ""}`);
  const ring = await ringBench(
    RING_OPTIONS[quick ? "quick" : "full"],
    cpus,
    bin === undefined ? undefined : { bin, ...(source ? { source } : {}) },
    progress,
  );
  writeResult("ring", ring);
  console.log(JSON.stringify(ring, null, 2));
  console.log();
  console.log(
    `ring benchmark (${cpus} CPUs, Node ${process.version}); written to bench/results/ring.json`,
  );
  console.log(textTable(ringTable(ring)));
}

async function runBlk(cpus: number): Promise<void> {
  const blk = await blkBench(blkBenchOptions(quick), cpus);
  writeResult("blk", blk);
  console.log();
  console.log(`blk benchmark (${cpus} CPUs); written to bench/results/blk.json`);
  console.log(blkTable(blk));
}

/** The image the guest and guest-less runs share (created once per run). */
interface SharedImage {
  readonly path: string;
  readonly bytes: number;
}

async function runGuest(
  image: SharedImage,
  nodeArgs: readonly string[] | undefined,
): Promise<void> {
  console.log(`\nreal-guest benchmark (${reps} repetitions; progress per QEMU run)`);
  // Failure logs of earlier runs would be mistaken for this run's.
  const failureDir = join(resultsDir, "failures");
  rmSync(failureDir, { recursive: true, force: true });
  const r = await guestBench({
    imagePath: image.path,
    imageBytes: image.bytes,
    reps,
    runtimeSeconds: quick ? 3 : 8,
    queues: [1, 2],
    backends: ["virtio-ts", "qsd", "qemu-builtin", "virtio-ts-direct", "qsd-direct"],
    log: progress,
    failureDir,
    ...(nodeArgs ? { virtioTsNodeArgs: nodeArgs } : {}),
  });
  writeResult("guest", r);
  console.log(`\nreal guest; written to bench/results/guest.json`);
  console.log(textTable(guestTable(r)));
  console.log();
  console.log(textTable(guestMemoryTable(r)));
}

async function runGuestless(
  image: SharedImage,
  nodeArgs: readonly string[] | undefined,
): Promise<void> {
  console.log(`\nguest-less benchmark (${reps} repetitions; progress per session)`);
  const r = await guestlessBench({
    imagePath: image.path,
    reps,
    seconds: quick ? 1 : 4,
    warmupSeconds: quick ? 0.2 : 1,
    depths: [1, 32, 128],
    queues: [1, 2],
    backends: ["virtio-ts", "qsd", "virtio-ts-packed"],
    log: progress,
    straceSeconds: quick ? 2 : 3,
    ...(nodeArgs ? { virtioTsNodeArgs: nodeArgs } : {}),
  });
  writeResult("guestless", r);
  console.log(`\nguest-less; written to bench/results/guestless.json`);
  console.log(textTable(guestlessTable(r)));
  console.log();
  console.log(textTable(guestlessMemoryTable(r)));
  if (r.syscalls?.length) {
    console.log(`\n${SYSCALLS_TITLE}`);
    console.log(textTable(syscallsTable(r.syscalls)));
  }
}

async function runFootprint(): Promise<void> {
  console.log(`\nfootprint benchmark (${reps} repetitions)`);
  const dir = mkdtempSync(join(tmpdir(), "vts-footprint-"));
  try {
    const r = await footprintBench({
      dir,
      reps,
      exports: quick ? 4 : 16,
      idleSeconds: quick ? 2 : 10,
      loadSeconds: quick ? 2 : 5,
      backends: ["virtio-ts", "qsd"],
      log: progress,
    });
    writeResult("footprint", r);
    console.log(`\nfootprint; written to bench/results/footprint.json`);
    console.log(textTable(footprintTable(r)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Regenerates docs/benchmarks.md and its charts from bench/results/*.json. */
function writeReport(): void {
  const results: BenchResults = {
    meta: readResult("meta"),
    ring: readResult("ring"),
    blk: readResult("blk"),
    guest: readResult("guest"),
    guestless: readResult("guestless"),
    footprint: readResult("footprint"),
  };
  const charts = renderCharts(results);
  const chartDir = join(docsDir, "benchmarks");
  rmSync(chartDir, { recursive: true, force: true });
  mkdirSync(chartDir, { recursive: true });
  for (const [file, svg] of Object.entries(charts)) writeFileSync(join(chartDir, file), svg);
  writeFileSync(join(docsDir, "benchmarks.md"), renderMarkdown(results, charts));
  console.log(`\ntargets:`);
  console.log(textTable(targetsTable(checkTargets(results))));
  console.log(`\ndocs/benchmarks.md and docs/benchmarks/*.svg regenerated`);
}

async function main(): Promise<void> {
  // A signal exits through process.exit, so that exit handlers stop the backends and QEMU.
  process.once("SIGINT", () => process.exit(130));
  process.once("SIGTERM", () => process.exit(143));
  const cpus = availableParallelism();
  const seconds: Record<string, number> = {};
  const timed = async (name: string, f: () => Promise<void>): Promise<void> => {
    const t = Date.now();
    await f();
    seconds[name] = (Date.now() - t) / 1000;
  };
  if (wanted("ring")) await timed("ring", () => runRing(cpus));
  if (wanted("blk")) await timed("blk", () => runBlk(cpus));
  if (wanted("guest") || wanted("guestless")) {
    const dir = mkdtempSync(join(tmpdir(), "vts-bench-"));
    const removeDir = (): void => rmSync(dir, { recursive: true, force: true });
    process.once("exit", removeDir);
    const image = { path: join(dir, "disk.img"), bytes: (quick ? 256 : 1024) << 20 };
    const profDir = flags["cpu-prof"] === undefined ? undefined : resolve(flags["cpu-prof"]);
    if (profDir) mkdirSync(profDir, { recursive: true });
    const nodeArgs = profDir ? ["--cpu-prof", `--cpu-prof-dir=${profDir}`] : undefined;
    try {
      console.log(`\ncreating a fully written ${image.bytes >> 20} MiB raw image in ${dir}`);
      createImage(image.path, image.bytes);
      if (wanted("guest")) await timed("guest", () => runGuest(image, nodeArgs));
      if (wanted("guestless")) await timed("guestless", () => runGuestless(image, nodeArgs));
    } finally {
      removeDir();
    }
  }
  if (wanted("footprint")) await timed("footprint", runFootprint);
  if (!flags.report) {
    const meta: BenchMeta = {
      machine: machineInfo(),
      date: new Date().toISOString(),
      command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(" ")}` : ""}`,
      // Sections not run this time keep their last duration.
      seconds: { ...readResult<BenchMeta>("meta")?.seconds, ...seconds },
      quick,
    };
    writeResult("meta", meta);
  }
  writeReport();
}

await main();

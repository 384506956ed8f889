/**
 * `npm run bench`: runs every benchmark, writes each report as JSON to
 * bench/results/<name>.json (git-ignored), prints the JSON and a table.
 * Not a test: nothing here asserts timing.
 *
 *   BENCH_QUICK=1   smaller runs (a smoke check of the harness)
 *
 * @module
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { fileURLToPath } from "node:url";
import { ringBench, type RingBenchReport, type RingPoint } from "./ring-bench.ts";
import { blkBench, blkBenchOptions, blkTable } from "./blk-bench.ts";

const quick = process.env.BENCH_QUICK === "1";
const resultsDir = fileURLToPath(new URL("./results/", import.meta.url));

function fmt(n: number): string {
  return n >= 100 ? Math.round(n).toLocaleString("en-US") : n.toFixed(2);
}

function spreadCell(s: { median: number; min: number; max: number } | undefined): string {
  return s === undefined ? "" : `${fmt(s.median)} (${fmt(s.min)}–${fmt(s.max)})`;
}

function ringTable(r: RingBenchReport): string {
  const header = [
    "transport",
    "job",
    "round trips/s median (min–max)",
    "× postMessage",
    "latency µs median",
    "p99 µs",
    "kicks/rt",
    "sleeps/rt",
  ];
  const rows = r.points.map((p: RingPoint) => [
    p.transport,
    p.job,
    spreadCell(p.roundTripsPerSec),
    p.ratioToBaseline === undefined ? "baseline" : p.ratioToBaseline.toFixed(1),
    spreadCell(p.medianLatencyUs),
    spreadCell(p.p99LatencyUs),
    p.kicksPerRoundTrip === undefined ? "" : p.kicksPerRoundTrip.toFixed(3),
    p.sleepsPerRoundTrip === undefined ? "" : p.sleepsPerRoundTrip.toFixed(3),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ");
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

async function main(): Promise<void> {
  const cpus = availableParallelism();
  const ring = await ringBench(
    quick
      ? { reps: 3, throughputTotal: 100_000, pingpongTotal: 5_000, pollSpin: 20_000 }
      : { reps: 5, throughputTotal: 1_000_000, pingpongTotal: 30_000, pollSpin: 20_000 },
    cpus,
  );
  mkdirSync(resultsDir, { recursive: true });
  const json = JSON.stringify(ring, null, 2);
  writeFileSync(`${resultsDir}ring.json`, json + "\n");
  console.log(json);
  console.log();
  console.log(
    `ring benchmark (${cpus} CPUs, Node ${process.version}); written to bench/results/ring.json`,
  );
  console.log(ringTable(ring));

  const blk = await blkBench(blkBenchOptions(quick), cpus);
  writeFileSync(`${resultsDir}blk.json`, JSON.stringify(blk, null, 2) + "\n");
  console.log();
  console.log(`blk benchmark (${cpus} CPUs); written to bench/results/blk.json`);
  console.log(blkTable(blk));
}

await main();

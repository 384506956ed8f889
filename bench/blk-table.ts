/**
 * The blk benchmark's human table (bench/blk-bench.ts writes the JSON).
 *
 * @module
 */
import type { BlkBenchReport, Spread } from "./blk-bench.ts";

function fmt(n: number): string {
  return n >= 100 ? Math.round(n).toLocaleString("en-US") : n.toFixed(2);
}

function cell(s: Spread | undefined): string {
  return s === undefined ? "" : `${fmt(s.median)} (${fmt(s.min)}–${fmt(s.max)})`;
}

/** A human table of the report. */
export function blkTable(r: BlkBenchReport): string {
  const header = [
    "path",
    "queues",
    "depth",
    "IOPS median (min–max)",
    "× fs",
    "CPU µs/IO median (min–max)",
    "× fs",
    "driver / control / other µs/IO",
    "kicks / calls / wakeups per IO",
  ];
  const rows = r.points.map((p) => [
    p.mode,
    String(p.queues),
    String(p.depth),
    cell(p.iops),
    p.iopsRatioToBaseline === undefined ? "baseline" : p.iopsRatioToBaseline.toFixed(2),
    cell(p.cpuUsPerIo),
    p.cpuRatioToBaseline === undefined ? "baseline" : p.cpuRatioToBaseline.toFixed(2),
    p.driverCpuUsPerIo === undefined
      ? ""
      : `${fmt(p.driverCpuUsPerIo.median)} / ${fmt(p.controlCpuUsPerIo!.median)} / ${fmt(p.otherCpuUsPerIo!.median)}`,
    p.kicksPerIo === undefined
      ? ""
      : `${p.kicksPerIo.toFixed(3)} / ${p.callsPerIo!.toFixed(3)} / ${p.workerWakeupsPerIo!.toFixed(3)}`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ");
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

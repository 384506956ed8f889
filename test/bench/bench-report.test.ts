/**
 * Unit tests of the benchmark report: tables, SVG charts, and the issue-5
 * target checks on synthetic results.
 *
 * @module
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { niceStep, renderBarChart, tickLabel } from "../../bench/lib/svg.ts";
import { markdownTable, spreadCell, textTable } from "../../bench/lib/table.ts";
import { checkTargets, renderCharts, renderMarkdown } from "../../bench/report.ts";
import type { GuestBenchReport, GuestPoint } from "../../bench/guest-bench.ts";
import type { GuestlessBenchReport, GuestlessPoint } from "../../bench/guestless-bench.ts";
import { GUEST_WORKLOADS } from "../../bench/guest/fio.ts";

const one = (v: number) => ({ median: v, min: v, max: v, n: 1 });

test("tables: aligned text, Markdown with escaped pipes, spread cells", () => {
  const t = { header: ["a", "bb"], rows: [["x|y", "1"]] };
  assert.equal(textTable(t), "a    bb\n---  --\nx|y  1");
  assert.equal(markdownTable(t), "| a | bb |\n| --- | --- |\n| x\\|y | 1 |");
  assert.equal(spreadCell({ median: 1500, min: 1000, max: 2000, n: 3 }), "1,500 (1,000–2,000)");
  assert.equal(spreadCell(one(5)), "5.00");
  assert.equal(spreadCell(undefined), "–");
});

test("svg: tick steps and labels; a chart has one bar per measured value and a title", () => {
  assert.equal(niceStep(12_000), 20_000);
  assert.equal(niceStep(100), 100);
  assert.equal(tickLabel(0), "0");
  assert.equal(tickLabel(12_500), "12.5k");
  assert.equal(tickLabel(2_000_000), "2M");
  const svg = renderBarChart({
    title: "T <&>",
    unit: "IOPS",
    categories: ["a b", "c"],
    series: [
      { name: "s1", color: "#111111", values: [one(10), undefined] },
      { name: "s2", color: "#222222", values: [{ median: 5, min: 4, max: 7, n: 3 }, one(3)] },
    ],
  });
  assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.match(svg, /T &lt;&amp;&gt;/);
  assert.equal(svg.match(/<rect x="[\d.]+" y="[\d.]+" width="18"/g)?.length, 3);
  assert.equal(svg.match(/fill="#222222"><title>/g)?.length, 2);
  assert.match(svg, /<\/svg>\n$/);
});

function guestPoint(
  backend: GuestPoint["backend"],
  workload: string,
  iops: number,
  cpu?: number,
  ratios?: [number, number],
): GuestPoint {
  return {
    backend,
    queues: 1,
    workload,
    label: workload,
    iops: one(iops),
    ...(cpu === undefined ? {} : { backendCpuUsPerIo: one(cpu) }),
    ...(ratios ? { iopsRatio: one(ratios[0]), cpuPerIoRatio: one(ratios[1]) } : {}),
  };
}

function guestReport(ours: [number, number][]): GuestBenchReport {
  const ws = GUEST_WORKLOADS.slice(0, ours.length);
  return {
    name: "guest",
    date: "2026-01-01T00:00:00Z",
    options: {
      imageBytes: 1 << 30,
      reps: 3,
      runtimeSeconds: 8,
      queues: [1],
      backends: ["virtio-ts", "qsd"],
      workloads: ws,
    },
    runs: [],
    points: ws.flatMap((w, i) => [
      guestPoint("virtio-ts", w.id, 100, 10, ours[i]),
      guestPoint("qsd", w.id, 100, 10),
    ]),
    memory: [{ backend: "virtio-ts", queues: 1, hwmMiB: one(50) }],
  };
}

function guestlessReport(iopsRatios: number[], hwm: number): GuestlessBenchReport {
  const depths = [1, 32, 128];
  const points: GuestlessPoint[] = depths.map((depth, i) => ({
    backend: "virtio-ts",
    queues: 1,
    rw: "randread",
    depth,
    iops: one(1000),
    iopsRatio: one(iopsRatios[i]!),
  }));
  return {
    name: "guestless",
    date: "2026-01-01T00:00:00Z",
    options: {
      reps: 3,
      seconds: 4,
      warmupSeconds: 1,
      depths,
      queues: [1],
      backends: ["virtio-ts", "qsd"],
    },
    sessions: [],
    points,
    memory: [{ backend: "virtio-ts", queues: 1, hwmMiB: one(hwm) }],
  };
}

test("checkTargets: met only when every workload meets it; QD1 does not count guest-less", () => {
  const ok = checkTargets({
    guest: guestReport([
      [1.1, 0.9],
      [1.0, 1.0],
    ]),
    guestless: guestlessReport([0.2, 1.05, 1.2], 60),
  });
  assert.deepEqual(
    ok.map((c) => c.met),
    [true, true, true, true],
  );
  const bad = checkTargets({
    guest: guestReport([
      [1.1, 0.9],
      [0.95, 1.3],
    ]),
    guestless: guestlessReport([2, 0.5, 1.2], 70),
  });
  assert.deepEqual(
    bad.map((c) => c.met),
    [false, false, false, false],
  );
  assert.match(bad[0]!.measured, /lowest 0\.95× .*1 of 2 met/);
  assert.match(bad[1]!.measured, /highest 1\.30×/);
  assert.match(bad[2]!.measured, /lowest 0\.50× \(randread QD32, 1q\)/);
  assert.match(bad[3]!.measured, /70\.0 MiB/);
  assert.deepEqual(
    checkTargets({}).map((c) => c.met),
    [undefined, undefined, undefined, undefined],
  );
});

test("renderMarkdown: sections present for the results given, charts referenced", () => {
  const r = { guest: guestReport([[1.1, 0.9]]), guestless: guestlessReport([1, 1, 1], 50) };
  const charts = renderCharts(r);
  assert.ok(charts["guest-iops-1q.svg"] && charts["guestless-cpu-1q.svg"]);
  const md = renderMarkdown(r, charts);
  assert.match(md, /^# Benchmarks/);
  assert.match(md, /## Real guest/);
  assert.match(md, /## Guest-less/);
  assert.doesNotMatch(md, /## In-process ring/);
  assert.match(md, /!\[real-guest IOPS, 1 queue\(s\)\]\(benchmarks\/guest-iops-1q\.svg\)/);
  assert.match(md, /Host page cache: not dropped/);
});

/**
 * Unit tests of the benchmark report: tables, SVG charts, and the cost
 * target checks on synthetic results.
 *
 * @module
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { niceStep, renderBarChart, tickLabel } from "../../bench/lib/svg.ts";
import { markdownTable, spreadCell, textTable } from "../../bench/lib/table.ts";
import { renderCharts, renderMarkdown, ringTable } from "../../bench/report.ts";
import { checkTargets, type TargetCheck } from "../../bench/targets.ts";
import type { FootprintBenchReport, FootprintRow } from "../../bench/footprint-bench.ts";
import type { GuestBenchReport, GuestPoint } from "../../bench/guest-bench.ts";
import type { GuestlessBenchReport, GuestlessPoint } from "../../bench/guestless-bench.ts";
import { GUEST_WORKLOADS } from "../../bench/guest/fio.ts";
import type { RingBenchReport, RingPoint, RingtestPoint } from "../../bench/ring-bench.ts";

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

function guestlessReport(
  iopsRatios: number[],
  hwm: number,
  cpuRatios: number[] = iopsRatios.map(() => 0.9),
): GuestlessBenchReport {
  const depths = [1, 32, 128];
  const points: GuestlessPoint[] = depths.map((depth, i) => ({
    backend: "virtio-ts",
    queues: 1,
    rw: "randread",
    depth,
    iops: one(1000),
    iopsRatio: one(iopsRatios[i]!),
    cpuPerIoRatio: one(cpuRatios[i]!),
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

function footprintReport(idle: number, perExport: number, passed: number): FootprintBenchReport {
  const row: FootprintRow = {
    backend: "virtio-ts",
    idleCpuPercent: one(idle),
    oneExportMiB: one(50),
    manyExportsMiB: one(50 + 15 * perExport),
    perAddedExportMiB: one(perExport),
    loadPassed: passed,
    loadRuns: 16,
    loadIops: one(1000),
    smallHwmMiB: one(40),
    oneThreadHwmMiB: one(60),
    failures: [],
  };
  return {
    date: "2026-01-01T00:00:00Z",
    options: { reps: 1, exports: 16, idleSeconds: 10, loadSeconds: 5, backends: ["virtio-ts"] },
    rows: [row],
  };
}

test("checkTargets: met only when every cell meets it; absent measurements are not met", () => {
  const ok = checkTargets({
    guest: guestReport([
      [1.1, 0.9],
      [1.0, 1.0],
    ]),
    guestless: guestlessReport([1.2, 1.05, 1.2], 60),
    footprint: footprintReport(0.3, 2, 16),
  });
  const byName = (checks: TargetCheck[], re: RegExp): TargetCheck =>
    checks.find((c) => re.test(c.target))!;
  for (const re of [
    /^Guest-less IOPS/,
    /^Guest-less backend CPU/,
    /^Real guest .*page-cache/,
    /1 I\/O thread ≤ 64/,
    /io-threads 0/,
    /^Idle/,
    /16 exports/,
  ])
    assert.equal(byName(ok, re).met, true, String(re));
  assert.equal(byName(ok, /2 queues ≤ 80/).met, undefined, "no 2-queue guest-less run");
  assert.equal(byName(ok, /O_DIRECT pairing/).met, undefined);
  const bad = checkTargets({
    guest: guestReport([
      [1.1, 0.9],
      [0.95, 1.3],
    ]),
    guestless: guestlessReport([0.5, 1.5, 1.2], 70, [0.9, 1.1, 0.9]),
    footprint: footprintReport(1.5, 2, 15),
  });
  assert.match(
    byName(bad, /^Guest-less IOPS/).measured,
    /lowest 0\.50× \(randread QD1, 1q\); 2 of 3 met/,
  );
  assert.match(
    byName(bad, /^Guest-less backend CPU/).measured,
    /highest 1\.10× \(randread QD32, 1q\)/,
  );
  assert.match(byName(bad, /^Real guest .*page-cache/).measured, /highest 1\.30×/);
  assert.match(byName(bad, /1 I\/O thread ≤ 64/).measured, /70\.0 MiB/);
  assert.match(byName(bad, /16 exports/).measured, /15 of 16 export runs passed/);
  for (const re of [
    /^Guest-less IOPS/,
    /^Guest-less backend CPU/,
    /^Real guest .*page-cache/,
    /1 I\/O thread/,
    /^Idle/,
    /16 exports/,
  ])
    assert.equal(byName(bad, re).met, false, String(re));
  assert.ok(checkTargets({}).every((c) => c.met === undefined && c.measured === "not measured"));
});

test("renderMarkdown: sections present for the results given, charts referenced", () => {
  const r = {
    guest: guestReport([[1.1, 0.9]]),
    guestless: guestlessReport([1, 1, 1], 50),
    footprint: footprintReport(0.2, 1, 16),
  };
  const charts = renderCharts(r);
  assert.ok(charts["guest-iops-1q.svg"] && charts["guestless-cpu-1q.svg"]);
  const md = renderMarkdown(r, charts);
  assert.match(md, /^# Benchmarks/);
  assert.match(md, /## Real guest/);
  assert.match(md, /## Guest-less/);
  assert.doesNotMatch(md, /## In-process ring/);
  assert.match(md, /!\[real-guest IOPS, 1 queue\(s\)\]\(benchmarks\/guest-iops-1q\.svg\)/);
  assert.match(md, /Host page cache: not dropped/);
  assert.match(md, /## Footprint/);
  assert.match(md, /\| virtio-ts \| 0\.20 \|/);
});

const RING_JOBS = ["batch-1", "batch-32", "ping-pong"] as const;

/**
 * A ring report whose split ring-wait points run at `ours` round trips/s
 * against C's 1000 (no C: `c` false); packed points run at half the split
 * ones (ring-wait at 1 round trip/s, so they never meet a target).
 */
function ringReport(ours: Record<RingPoint["job"], number>, c = true): RingBenchReport {
  const pt = (
    transport: RingPoint["transport"],
    job: RingPoint["job"],
    v: number,
    layout?: "split" | "packed",
    ratioToSplit?: number,
  ): RingPoint => ({
    transport,
    ...(layout === undefined ? {} : { layout }),
    ...(ratioToSplit === undefined ? {} : { ratioToSplit }),
    job,
    roundTripsPerSec: one(v),
    ...(transport === "postmessage" ? {} : { ratioToBaseline: v / 100 }),
    ...(c && transport !== "postmessage" ? { ratioToC: v / 1000 } : {}),
  });
  const cPoints: RingtestPoint[] = (["sleep", "poll"] as const).flatMap((mode) =>
    RING_JOBS.map((job) => ({
      mode,
      job,
      args: `--ring-size 256 --run-cycles 1000 --batch ${job === "batch-32" ? 32 : 1}${mode === "sleep" ? " --sleep" : ""}`,
      roundTripsPerSec: one(1000),
    })),
  );
  return {
    name: "ring",
    date: "2026-01-01T00:00:00Z",
    node: "v20.0.0",
    cpus: 2,
    options: {
      reps: 3,
      throughputTotal: 1000,
      pingpongTotal: 100,
      pollSpin: 10,
      ringtestCycles: { sleepPingpong: 100, other: 1000 },
    },
    points: [
      ...RING_JOBS.map((job) => pt("ring-wait", job, ours[job], "split")),
      ...RING_JOBS.map((job) => pt("ring-poll", job, 2000)),
      ...RING_JOBS.map((job) => pt("ring-wait", job, 1, "packed", 1 / ours[job])),
      ...RING_JOBS.map((job) => pt("ring-poll", job, 1000, "packed", 0.5)),
      ...RING_JOBS.map((job) => pt("postmessage", job, 100)),
    ],
    ...(c ? { c: cPoints, ringtestSource: "linux-source-6.1 6.1.0-1" } : {}),
  };
}

test("checkTargets: the ring target compares ring-wait batch-32 and ping-pong with the C ringtest's --sleep runs", () => {
  const ringTarget = (r: RingBenchReport): TargetCheck =>
    checkTargets({ ring: r }).find((t) => /C ringtest/.test(t.target))!;
  const met = ringTarget(ringReport({ "batch-1": 10, "batch-32": 1500, "ping-pong": 1000 }));
  assert.equal(met.met, true);
  assert.match(met.measured, /lowest 1\.00× \(ring-wait ping-pong vs C --sleep\); 2 of 2 met/);
  // batch-1 is not part of the target: a slow batch-1 does not matter.
  const bad = ringTarget(ringReport({ "batch-1": 5000, "batch-32": 400, "ping-pong": 1200 }));
  assert.equal(bad.met, false);
  assert.match(bad.measured, /lowest 0\.40× \(ring-wait batch-32 vs C --sleep\); 1 of 2 met/);
  const none = ringTarget(ringReport({ "batch-1": 1, "batch-32": 1, "ping-pong": 1 }, false));
  assert.equal(none.met, undefined);
  assert.equal(none.measured, "not measured");
});

test("ringTable and renderMarkdown: layouts, C ringtest rows, × C ringtest and × split columns, the options of each C run", () => {
  const r = ringReport({ "batch-1": 500, "batch-32": 1500, "ping-pong": 800 });
  const t = ringTable(r);
  const col = t.header.indexOf("× C ringtest");
  const vsSplit = t.header.indexOf("× split");
  const rate = t.header.indexOf("round trips/s");
  assert.ok(col > 0 && vsSplit > 0 && rate > 0);
  const row = (transport: string, job: string, layout = "split"): readonly string[] =>
    t.rows.find((x) => x[0] === transport && x[1] === layout && x[2] === job)!;
  assert.equal(row("ring-wait", "batch-32")[col], "1.50");
  assert.equal(row("ring-poll", "ping-pong")[col], "2.00");
  assert.equal(row("ring-poll", "ping-pong")[vsSplit], "–");
  assert.equal(row("ring-poll", "ping-pong", "packed")[vsSplit], "0.50");
  assert.equal(row("postmessage", "batch-1", "–")[col], "–");
  assert.equal(row("C ringtest, sleep", "ping-pong")[rate], "1,000");
  assert.equal(row("C ringtest, poll", "batch-32")[col], "C");
  assert.equal(t.rows.length, 15 + 6);
  const md = renderMarkdown({ ring: r }, {});
  assert.match(md, /## In-process ring/);
  assert.match(md, /tools\/virtio\/ringtest`? built\s+from Debian's linux-source-6\.1 6\.1\.0-1/);
  assert.match(
    md,
    /- C ringtest, sleep, batch-32: `--ring-size 256 --run-cycles 1000 --batch 32 --sleep`/,
  );
  assert.match(md, /\| C ringtest, poll \| split \| ping-pong \|/);
  const noC = ringReport({ "batch-1": 1, "batch-32": 1, "ping-pong": 1 }, false);
  assert.equal(ringTable(noC).rows.length, 15);
  assert.match(renderMarkdown({ ring: noC }, {}), /C ringtest was not measured in this run/);
});

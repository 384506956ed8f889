/**
 * Unit tests of the benchmark helpers that parse or summarize: statistics,
 * procfs parsing, fio command lines and fio's JSON report.
 *
 * @module
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { percentileSorted, ratio, spreadOf } from "../../bench/lib/stats.ts";
import {
  cpuSeconds,
  listeningInodes,
  parseStatCpuTicks,
  parseStatusMemory,
  processMemory,
} from "../../bench/lib/procfs.ts";
import {
  extractFioJson,
  fioCommand,
  GUEST_WORKLOADS,
  parseFioJson,
} from "../../bench/guest/fio.ts";

test("spreadOf: median of odd and even counts, min, max; non-finite values left out", () => {
  assert.deepEqual(spreadOf([3, 1, 2]), { median: 2, min: 1, max: 3, n: 3 });
  assert.deepEqual(spreadOf([4, 1, 3, 2]), { median: 2.5, min: 1, max: 4, n: 4 });
  assert.deepEqual(spreadOf([NaN, 5, Infinity]), { median: 5, min: 5, max: 5, n: 1 });
  assert.equal(spreadOf([]), undefined);
  assert.equal(spreadOf([NaN]), undefined);
});

test("percentileSorted: nearest rank", () => {
  const s = Array.from({ length: 100 }, (_, i) => i + 1);
  assert.equal(percentileSorted(s, 50), 50);
  assert.equal(percentileSorted(s, 99), 99);
  assert.equal(percentileSorted(s, 100), 100);
  assert.equal(percentileSorted([7], 99), 7);
  assert.ok(Number.isNaN(percentileSorted([], 50)));
  assert.throws(() => percentileSorted(s, 0), RangeError);
});

test("ratio: only of positive finite numbers", () => {
  assert.equal(ratio(6, 3), 2);
  assert.equal(ratio(1, 0), undefined);
  assert.equal(ratio(undefined, 3), undefined);
  assert.equal(ratio(NaN, 3), undefined);
});

test("parseStatCpuTicks: utime + stime counted after the last ')' of the command name", () => {
  // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
  const rest = "S 1 1 1 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 9 0 100 0 0";
  assert.equal(parseStatCpuTicks(`42 (node) ${rest}`), 1234 + 567);
  assert.equal(parseStatCpuTicks(`42 (a) b (c)) ${rest}`), 1234 + 567);
  assert.throws(() => parseStatCpuTicks("garbage"));
  assert.throws(() => parseStatCpuTicks("42 (x) S 1"));
});

test("parseStatusMemory: kB lines to bytes, absent lines as 0", () => {
  const m = parseStatusMemory(
    "Name:\tnode\nVmHWM:\t   98304 kB\nVmRSS:\t   65536 kB\nRssAnon:\t   30000 kB\nRssFile:\t   30000 kB\n",
  );
  assert.equal(m.hwm, 98304 * 1024);
  assert.equal(m.rss, 65536 * 1024);
  assert.equal(m.rssAnon, 30000 * 1024);
  assert.equal(m.rssShmem, 0);
});

test("cpuSeconds and processMemory of this process; undefined for a pid that does not exist", () => {
  const cpu = cpuSeconds(process.pid);
  assert.ok(cpu !== undefined && cpu > 0);
  const mem = processMemory(process.pid);
  assert.ok(mem !== undefined && mem.hwm >= mem.rss && mem.rss > 0);
  assert.equal(cpuSeconds(2 ** 30), undefined);
  assert.equal(processMemory(2 ** 30), undefined);
});

test("listeningInodes: only listening sockets bound to exactly that path", () => {
  const table = [
    "Num       RefCount Protocol Flags    Type St Inode Path",
    "0000000000000000: 00000002 00000000 00010000 0001 01 1111 /tmp/a.sock",
    "0000000000000000: 00000003 00000000 00000000 0001 03 2222 /tmp/a.sock",
    "0000000000000000: 00000002 00000000 00010000 0001 01 3333 /tmp/a.sock.old",
    "0000000000000000: 00000002 00000000 00010000 0001 01 4444 /tmp/with space",
  ].join("\n");
  assert.deepEqual(listeningInodes(table, "/tmp/a.sock"), [1111]);
  assert.deepEqual(listeningInodes(table, "/tmp/with space"), [4444]);
  assert.deepEqual(listeningInodes(table, "/tmp/none"), []);
});

test("fioCommand: time-based libaio O_DIRECT JSON run; several jobs get pinned slices", () => {
  const w = GUEST_WORKLOADS[1]!;
  const one = fioCommand(w, { runtimeSeconds: 8, diskBytes: 1 << 30 });
  assert.match(one, /--rw=randread --bs=4096 --iodepth=32 --time_based --runtime=8/);
  assert.match(one, /--direct=1/);
  assert.doesNotMatch(one, /--numjobs/);
  const two = fioCommand(w, { runtimeSeconds: 8, numJobs: 2, diskBytes: 1 << 30 });
  assert.match(two, /--numjobs=2 --cpus_allowed=0-1 --cpus_allowed_policy=split/);
  assert.match(two, /--size=536870912 --offset_increment=536870912/);
  assert.throws(() => fioCommand(w, { runtimeSeconds: 0, diskBytes: 1 << 30 }), RangeError);
});

/** A trimmed fio 3.33 JSON report as the guest console prints it (CRLF). */
function fioOutput(dir: "read" | "write", error = 0): string {
  const figures = {
    iops: 12000.5,
    bw_bytes: 12000.5 * 4096,
    total_ios: 96004,
    runtime: 8000,
    lat_ns: { mean: 2500000, percentile: { "50.000000": 2000000, "99.000000": 8000000 } },
  };
  const empty = { ...figures, iops: 0, bw_bytes: 0, total_ios: 0 };
  const report = {
    "fio version": "fio-3.33",
    jobs: [
      {
        jobname: "x",
        error,
        read: dir === "read" ? figures : empty,
        write: dir === "write" ? figures : empty,
      },
    ],
    disk_util: [{ name: "vda", read_ios: 95000, write_ios: 10 }],
  };
  const json = JSON.stringify(report, null, 2).replace(/\n/g, "\r\n");
  return `fio: some warning\r\nVTS-FIO-JSON-BEGIN\r\n${json}\r\n\r\nVTS-FIO-JSON-END`;
}

test("parseFioJson: IOPS, MiB/s, mean and p99 latency in µs, I/O and request counts", () => {
  const r = parseFioJson(GUEST_WORKLOADS[0]!, fioOutput("read"));
  assert.equal(r.iops, 12000.5);
  assert.equal(r.mibPerSec, (12000.5 * 4096) / (1 << 20));
  assert.equal(r.meanLatUs, 2500);
  assert.equal(r.p99LatUs, 8000);
  assert.equal(r.ios, 96004);
  assert.equal(r.diskRequests, 95010);
  const wr = GUEST_WORKLOADS.find((w) => w.rw === "randwrite")!;
  assert.equal(parseFioJson(wr, fioOutput("write")).iops, 12000.5);
  assert.equal(parseFioJson(wr, fioOutput("read")).iops, 0, "the workload's direction is read");
});

test("parseFioJson: missing markers, a job error or missing figures throw", () => {
  const w = GUEST_WORKLOADS[0]!;
  assert.equal(extractFioJson("no markers here"), undefined);
  assert.throws(() => parseFioJson(w, "no markers here"), /no fio JSON report/);
  assert.throws(() => parseFioJson(w, fioOutput("read", 5)), /failed with error 5/);
  assert.throws(
    () => parseFioJson(w, 'VTS-FIO-JSON-BEGIN\n{"jobs":[{}]}\nVTS-FIO-JSON-END'),
    /lacks its randread figures/,
  );
});

test("summarizeProfile: self time per function and file, idle left out of the shares", async () => {
  const { summarizeProfile } = await import("../../bench/profile-summary.ts");
  const frame = (functionName: string, url: string) => ({ functionName, url, lineNumber: 0 });
  const s = summarizeProfile({
    nodes: [
      { id: 1, callFrame: frame("(root)", "") },
      { id: 2, callFrame: frame("(idle)", "") },
      { id: 3, callFrame: frame("read", "file:///x/a.ts") },
      { id: 4, callFrame: frame("write", "file:///x/a.ts") },
      { id: 5, callFrame: frame("", "file:///x/b.ts") },
    ],
    samples: [2, 3, 3, 4, 5, 2],
    timeDeltas: [100, 10, 10, 20, 60, 100],
  });
  assert.equal(s.totalMicros, 300);
  assert.equal(s.idleMicros, 200);
  assert.deepEqual(
    s.byFile.map((f) => [f.name, f.share]),
    [
      ["/x/b.ts", 0.6],
      ["/x/a.ts", 0.4],
    ],
  );
  assert.equal(s.byFunction[0]!.name, "(anonymous) /x/b.ts:1");
  assert.equal(s.byFunction.find((f) => f.name.startsWith("read"))!.micros, 20);
});

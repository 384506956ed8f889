/**
 * Unit tests of the guest-less benchmark's system-call counts: the parser of
 * strace's `-c` summary, the per-I/O figures, the report table and section,
 * and (when strace is installed and may trace) one real attach and detach.
 *
 * @module
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readdirSync } from "node:fs";
import {
  parseStraceSummary,
  perIoFigures,
  StraceRun,
  type SyscallPoint,
} from "../../bench/syscalls.ts";
import { syscallsSection, syscallsTable } from "../../bench/syscalls-table.ts";
import type { GuestlessBenchReport } from "../../bench/guestless-bench.ts";
import { run } from "../../test/interop/guest/install.ts";

/** `strace -c -f -p PID -o FILE` of a backend serving 4 KiB reads (strace 6.1 layout). */
const SAMPLE = `% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 38.95    0.412213          15     26582           io_uring_enter
 22.31    0.236112           8     26590           write
 17.10    0.180969           6     26604      1254 read
 12.44    0.131652          24      5412           ppoll
  6.02    0.063710          53      1201       203 futex
  3.18    0.033655          38       880           madvise
  0.00    0.000000           0         2           rt_sigprocmask
------ ----------- ----------- --------- --------- ----------------
100.00    1.058311          12     87271      1457 total
`;

test("strace -c summary: rows commonest first, errors, the total line", () => {
  const s = parseStraceSummary(SAMPLE);
  assert.deepEqual(s.total, { calls: 87271, errors: 1457 });
  assert.equal(s.rows.length, 7);
  assert.deepEqual(s.rows[0], { syscall: "read", calls: 26604, errors: 1254 });
  assert.deepEqual(s.rows[1], { syscall: "write", calls: 26590, errors: 0 });
  assert.deepEqual(
    s.rows.find((r) => r.syscall === "futex"),
    { syscall: "futex", calls: 1201, errors: 203 },
  );
  assert.equal(
    s.rows.reduce((t, r) => t + r.calls, 0),
    s.total.calls,
  );
});

test("strace -c summary: tables per personality merge; no table throws; no total sums rows", () => {
  const two = `${SAMPLE}System call usage summary for 32 bit mode:\n${SAMPLE}`;
  const s = parseStraceSummary(`strace: Process 9 attached\n${two}`);
  assert.deepEqual(s.total, { calls: 2 * 87271, errors: 2 * 1457 });
  assert.deepEqual(s.rows[0], { syscall: "read", calls: 2 * 26604, errors: 2 * 1254 });
  assert.throws(
    () => parseStraceSummary("strace: attach: ptrace(PTRACE_SEIZE, 1): EPERM\n"),
    /no strace -c/,
  );
  const noTotal = SAMPLE.split("\n").slice(0, 4).join("\n");
  assert.deepEqual(parseStraceSummary(noTotal).total, { calls: 26582 + 26590, errors: 0 });
});

test("per-I/O figures: total and the commonest calls over completed requests", () => {
  const f = perIoFigures(parseStraceSummary(SAMPLE), 26000, 3);
  assert.equal(f.ios, 26000);
  assert.equal(f.calls, 87271);
  assert.ok(Math.abs(f.perIo - 87271 / 26000) < 1e-12);
  assert.ok(Math.abs(f.errorsPerIo - 1457 / 26000) < 1e-12);
  assert.deepEqual(
    f.top.map((t) => t.syscall),
    ["read", "write", "io_uring_enter"],
  );
  assert.equal(f.top[0]!.perIo, 26604 / 26000);
  assert.throws(() => perIoFigures(parseStraceSummary(SAMPLE), 0), RangeError);
});

const point = (
  backend: SyscallPoint["backend"],
  queues: number,
  rw: SyscallPoint["rw"],
  perIo?: number,
): SyscallPoint => ({
  backend,
  queues,
  rw,
  depth: 32,
  ...(perIo === undefined
    ? { error: "strace -p 1 exited: Operation not permitted\nmore" }
    : {
        ios: 12345,
        calls: Math.round(perIo * 12345),
        perIo,
        errorsPerIo: 0,
        top: [
          { syscall: "io_uring_enter", perIo: perIo / 2 },
          { syscall: "write", perIo: perIo / 4 },
        ],
      }),
});

test("syscalls table: rows by job, queues, backend; top calls; ratio to qsd; not measured", () => {
  const t = syscallsTable([
    point("qsd", 1, "randwrite", 2),
    point("virtio-ts", 1, "randwrite", 3),
    point("qsd", 1, "randread", 4),
    point("virtio-ts", 1, "randread", 2),
    point("virtio-ts", 2, "randread"),
    point("qsd", 2, "randread", 4),
  ]);
  assert.equal(t.header.length, 7);
  assert.deepEqual(
    t.rows.map((r) => [r[0], r[1], r[2]]),
    [
      ["qemu-storage-daemon", "1", "4K randread QD32"],
      ["virtio-ts", "1", "4K randread QD32"],
      ["qemu-storage-daemon", "2", "4K randread QD32"],
      ["virtio-ts", "2", "4K randread QD32"],
      ["qemu-storage-daemon", "1", "4K randwrite QD32"],
      ["virtio-ts", "1", "4K randwrite QD32"],
    ],
  );
  assert.deepEqual(t.rows[1], [
    "virtio-ts",
    "1",
    "4K randread QD32",
    "12,345",
    "2.00",
    "io_uring_enter 1.00, write 0.50",
    "0.50",
  ]);
  assert.equal(t.rows[0]![6], "");
  assert.equal(t.rows[5]![6], "1.50");
  assert.deepEqual(t.rows[3]!.slice(3), [
    "–",
    "not measured",
    "strace -p 1 exited: Operation not permitted",
    "–",
  ]);
});

test("syscalls section: a heading, the method and the table; nothing when not traced", () => {
  const r = {
    name: "guestless",
    date: "2025-01-01T00:00:00.000Z",
    options: {
      reps: 1,
      seconds: 1,
      warmupSeconds: 0,
      depths: [32],
      queues: [1],
      backends: ["virtio-ts", "qsd"],
      straceSeconds: 3,
    },
    sessions: [],
    points: [],
    memory: [],
  } satisfies GuestlessBenchReport;
  assert.deepEqual(syscallsSection(r), []);
  const md = syscallsSection({ ...r, syscalls: [point("virtio-ts", 1, "randread", 2)] }).join("\n");
  assert.match(md, /^### System calls per I\/O \(strace -c -f\)$/m);
  assert.match(md, /QD32 for 3 s each/);
  assert.match(md, /\| virtio-ts \| 1 \| 4K randread QD32 \| 12,345 \| 2\.00 \|/);
});

async function straceWorks(): Promise<boolean> {
  try {
    await run("strace", ["-V"], { timeoutMs: 10_000 });
    return true;
  } catch {
    return false;
  }
}

test("strace -c -f -p attaches every thread of a live process and counts its calls", async (t) => {
  if (!(await straceWorks())) return t.skip("strace is not installed");
  const target = spawn(
    process.execPath,
    ["-e", "setInterval(() => require('node:fs').statSync('/'), 2)"],
    { stdio: "ignore" },
  );
  try {
    await new Promise((r) => setTimeout(r, 500));
    const threads = readdirSync(`/proc/${target.pid}/task`).length;
    const s = new StraceRun(target.pid!, 30_000);
    let attached: number;
    try {
      attached = await s.attached();
    } catch (e) {
      if (/not permitted/i.test((e as Error).message))
        return t.skip("ptrace is not permitted here");
      throw e;
    }
    assert.ok(threads > 1, `node runs several threads (${threads})`);
    assert.equal(attached, threads);
    await new Promise((r) => setTimeout(r, 300));
    const summary = await s.stop();
    assert.ok(summary.total.calls > 50, `counted ${summary.total.calls} calls`);
    assert.ok(
      summary.rows.some((r) => /stat/.test(r.syscall)),
      "the stat calls are counted",
    );
    assert.equal(target.exitCode, null, "the traced process runs on after strace detached");
  } finally {
    target.kill("SIGKILL");
  }
});

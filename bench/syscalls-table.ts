/**
 * The report of the guest-less benchmark's system-call counts
 * (./syscalls.ts): the table "System calls per I/O (strace -c -f)" for the
 * terminal and docs/benchmarks.md, and the Markdown paragraph saying how the
 * counts were taken.
 *
 * @module
 */
import type { GuestlessBenchReport } from "./guestless-bench.ts";
import { BACKEND_LABELS, baselineOf } from "./lib/backends.ts";
import { ratio } from "./lib/stats.ts";
import { byJob, markdownTable, type Table } from "./lib/table.ts";
import { STRACE_DEPTH, TOP_SYSCALLS, type SyscallPoint } from "./syscalls.ts";

/** Title of the table. */
export const SYSCALLS_TITLE = "System calls per I/O (strace -c -f)";

const perIo = (n: number): string =>
  n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2);

/** "name 1.00, name 0.50, …" */
function topCell(p: SyscallPoint): string {
  if (p.error !== undefined) return p.error.split("\n")[0]!;
  return (p.top ?? []).map((t) => `${t.syscall} ${perIo(t.perIo)}`).join(", ");
}

/** virtio-ts / qsd of the same queues and job; empty for qsd rows. */
function ratioCell(p: SyscallPoint, all: readonly SyscallPoint[]): string {
  if (baselineOf(p.backend) === undefined) return "";
  const q = all.find(
    (x) =>
      x.backend === baselineOf(p.backend) &&
      x.queues === p.queues &&
      x.rw === p.rw &&
      x.depth === p.depth,
  );
  const r = ratio(p.perIo, q?.perIo);
  return r === undefined ? "–" : r.toFixed(2);
}

/** One row per job × queue count × backend (backends of a job adjacent). */
export function syscallsTable(points: readonly SyscallPoint[]): Table {
  const sorted = [...points].sort(byJob);
  return {
    header: [
      "backend",
      "queues",
      "job",
      "I/Os traced",
      "syscalls/IO",
      `top ${TOP_SYSCALLS} syscalls (per I/O)`,
      "syscalls/IO × qsd",
    ],
    rows: sorted.map((p) => [
      BACKEND_LABELS[p.backend],
      String(p.queues),
      `4K ${p.rw} QD${p.depth}`,
      p.ios === undefined ? "–" : p.ios.toLocaleString("en-US"),
      p.perIo === undefined ? "not measured" : perIo(p.perIo),
      topCell(p),
      ratioCell(p, points),
    ]),
  };
}

/** The Markdown subsection of the guest-less section; empty when the run traced nothing. */
export function syscallsSection(r: GuestlessBenchReport): string[] {
  const points = r.syscalls ?? [];
  if (points.length === 0) return [];
  const seconds = r.options.straceSeconds ?? 0;
  return [
    `### ${SYSCALLS_TITLE}`,
    "",
    "Counted once per backend and queue count, in the last repetition's session after its timed jobs:",
    `one more job of 4 KiB random reads, then one of writes, at QD${STRACE_DEPTH} for ${seconds} s each, with`,
    "`strace -c -f -p PID` attached to the backend process — every thread it has (strace walks",
    "/proc/PID/task) and every thread it starts — from just before the job's first request to just",
    "after its last completed (the driver waits for the harness around the job; strace is then detached",
    "with SIGINT). Syscalls/IO is every call strace counted, over all threads, divided by the requests",
    `the job completed; the top ${TOP_SYSCALLS} are the commonest calls, per I/O. strace stops a thread twice per`,
    "system call, so these jobs run far slower than the timed ones (their IOPS are not reported) and a",
    "backend that batches under load may batch differently here: the counts show each backend's",
    "pattern, not an exact cost. Work submitted through io_uring costs one `io_uring_enter` per batch,",
    "not one call per request.",
    "",
    markdownTable(syscallsTable(points)),
    "",
  ];
}

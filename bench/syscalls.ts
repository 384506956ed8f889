/**
 * System calls per I/O for the guest-less benchmark: counts every system call
 * a vhost-user-blk backend makes during one job with `strace -c -f`.
 *
 * `strace -c -f -p PID -o FILE` attaches to the backend process. With `-f`,
 * `-p PID` attaches every thread of the process (strace(1): "-p PID -f will
 * attach all threads of process PID if it is multi-threaded"; strace walks
 * /proc/PID/task and reports "Process PID attached with N threads", which is
 * recorded next to the number of threads /proc/PID/task listed just before),
 * and follows the threads the process starts while traced. strace is attached
 * before the job starts and detached after its last request completed (the
 * guest-less driver waits for the parent around a `pause` job, see
 * ./guestless/driver.ts): SIGINT makes strace detach from every thread and
 * write its summary table, which {@link parseStraceSummary} reads. Each step
 * is bounded (attach, detach, and strace's whole lifetime); a strace still
 * running then is killed.
 *
 * strace stops the traced thread twice per system call, so a traced job runs
 * far slower than a timed one: only the counts are used, never its speed.
 *
 * @module
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { run } from "../test/interop/guest/install.ts";
import type { VhostBackendKind } from "./lib/backends.ts";
import type { DriverJob, DriverJobResult } from "./guestless/driver.ts";

/** One row of strace's `-c` summary. */
export interface SyscallCount {
  readonly syscall: string;
  readonly calls: number;
  readonly errors: number;
}

/** strace's `-c` summary: the rows, commonest first, and the `total` line. */
export interface StraceSummary {
  readonly rows: readonly SyscallCount[];
  readonly total: { readonly calls: number; readonly errors: number };
}

/** The system calls of one traced job of the guest-less benchmark. */
export interface SyscallPoint {
  readonly backend: VhostBackendKind;
  readonly queues: number;
  readonly rw: DriverJob["rw"];
  readonly depth: number;
  /** Requests completed during the traced job. */
  readonly ios?: number;
  /** System calls strace counted (all threads) over the job. */
  readonly calls?: number;
  /** calls / ios. */
  readonly perIo?: number;
  /** Failed system calls per I/O (e.g. EAGAIN reads of a drained eventfd). */
  readonly errorsPerIo?: number;
  /** The commonest system calls, per I/O. */
  readonly top?: readonly { readonly syscall: string; readonly perIo: number }[];
  /** Threads strace reported attaching, and the threads /proc/PID/task listed just before. */
  readonly threadsAttached?: number;
  readonly threadsSeen?: number;
  /** Why there is no figure (shown as "not measured"). */
  readonly error?: string;
}

/** Depth of the traced jobs. */
export const STRACE_DEPTH = 32;
/** How many of the commonest system calls a point keeps. */
export const TOP_SYSCALLS = 6;

const STRACE = "strace";
const ATTACH_TIMEOUT_MS = 15_000;
const DETACH_TIMEOUT_MS = 20_000;
const VERSION_TIMEOUT_MS = 10_000;
const APT_TIMEOUT_MS = 10 * 60_000;

// ---------------------------------------------------------------- parsing

const HEADER = /^%\s*time\s+seconds\s+usecs\/call\s+calls\s+errors\s+syscall\s*$/;
// % time, seconds, usecs/call, calls, errors (blank when none), syscall.
const ROW = /^\s*(\d+(?:\.\d+)?)\s+(\d+(?:\.\d+)?)\s+(\d+)\s+(\d+)\s+(?:(\d+)\s+)?(\S+)\s*$/;

/**
 * Parses the summary table `strace -c` writes (`% time seconds usecs/call
 * calls errors syscall`, a `total` line). A table per personality (e.g. 32-
 * and 64-bit system calls) is merged into one. Throws when there is no table.
 */
export function parseStraceSummary(text: string): StraceSummary {
  const byName = new Map<string, { calls: number; errors: number }>();
  let total: { calls: number; errors: number } | undefined;
  let inTable = false;
  for (const line of text.split("\n")) {
    if (HEADER.test(line.trim())) inTable = true;
    const m = inTable ? ROW.exec(line) : null;
    if (!m) continue;
    const calls = Number(m[4]);
    const errors = Number(m[5] ?? 0);
    const name = m[6]!;
    if (name === "total") {
      total = { calls: (total?.calls ?? 0) + calls, errors: (total?.errors ?? 0) + errors };
      continue;
    }
    const had = byName.get(name);
    byName.set(name, { calls: (had?.calls ?? 0) + calls, errors: (had?.errors ?? 0) + errors });
  }
  if (!inTable) throw new Error(`no strace -c summary table in: ${text.trim().slice(0, 200)}`);
  const rows = [...byName].map(([syscall, c]) => ({ syscall, ...c }));
  rows.sort((a, b) => b.calls - a.calls || a.syscall.localeCompare(b.syscall));
  total ??= rows.reduce((t, r) => ({ calls: t.calls + r.calls, errors: t.errors + r.errors }), {
    calls: 0,
    errors: 0,
  });
  return { rows, total };
}

/** Per-I/O figures of a summary over `ios` completed requests. */
export function perIoFigures(
  s: StraceSummary,
  ios: number,
  topN = TOP_SYSCALLS,
): Required<Pick<SyscallPoint, "ios" | "calls" | "perIo" | "errorsPerIo" | "top">> {
  if (!(ios > 0)) throw new RangeError(`no I/O completed in the traced job (${ios})`);
  return {
    ios,
    calls: s.total.calls,
    perIo: s.total.calls / ios,
    errorsPerIo: s.total.errors / ios,
    top: s.rows.slice(0, topN).map((r) => ({ syscall: r.syscall, perIo: r.calls / ios })),
  };
}

// ---------------------------------------------------------------- strace

/** The first line of `strace -V`, or undefined when strace does not run. */
async function straceVersion(): Promise<string | undefined> {
  try {
    const out = await run(STRACE, ["-V"], { timeoutMs: VERSION_TIMEOUT_MS });
    return out.split("\n")[0]?.trim();
  } catch {
    return undefined;
  }
}

/**
 * Makes sure strace runs, installing Debian's `strace` package when it is
 * missing (as root). Resolves with undefined when it runs, else with why not.
 */
export async function ensureStrace(log: (line: string) => void): Promise<string | undefined> {
  if (await straceVersion()) return undefined;
  if (process.getuid?.() !== 0) return "strace is not installed (and installing it needs root)";
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive", LC_ALL: "C" };
  const opts = { env, timeoutMs: APT_TIMEOUT_MS };
  try {
    log("strace is missing: apt-get install strace");
    await run("apt-get", ["update", "-q"], opts);
    await run("apt-get", ["install", "-y", "-q", "--no-install-recommends", "strace"], opts);
  } catch (e) {
    return `strace is not installed (apt-get failed: ${(e as Error).message.split("\n")[0]})`;
  }
  return (await straceVersion()) ? undefined : "strace is not installed (apt-get did not help)";
}

/** Resolves true if `p` settles within `ms`, else false. */
function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    void p.then(() => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/** One `strace -c -f -p PID -o FILE` run. */
export class StraceRun {
  readonly pid: number;
  readonly #child: ChildProcess;
  readonly #dir = mkdtempSync(join(tmpdir(), "vts-strace-"));
  readonly #closed: Promise<void>;
  readonly #lifetime: NodeJS.Timeout;
  readonly #killOnExit = (): void => this.kill();
  #stderr = "";
  #spawnFailed = false;

  /** Starts strace on `pid` (every thread); it is killed after `maxMs` whatever happens. */
  constructor(pid: number, maxMs: number) {
    this.pid = pid;
    this.#child = spawn(STRACE, ["-c", "-f", "-p", String(pid), "-o", this.#file], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    this.#child.stderr!.setEncoding("utf8").on("data", (c: string) => {
      this.#stderr = (this.#stderr + c).slice(-8000);
    });
    this.#closed = new Promise((resolve) => {
      this.#child.on("close", () => resolve());
      this.#child.on("error", (e) => {
        this.#spawnFailed = true;
        this.#stderr += `\n${e.message}`;
        resolve();
      });
    });
    this.#lifetime = setTimeout(this.#killOnExit, maxMs);
    process.once("exit", this.#killOnExit);
  }

  get #file(): string {
    return join(this.#dir, "summary.txt");
  }

  get #exited(): boolean {
    return this.#spawnFailed || this.#child.exitCode !== null || this.#child.signalCode !== null;
  }

  /** Resolves with the number of threads attached, once strace says it attached them all. */
  async attached(timeoutMs = ATTACH_TIMEOUT_MS): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = /Process \d+ attached(?: with (\d+) threads)?/.exec(this.#stderr);
      if (m) return m[1] === undefined ? 1 : Number(m[1]);
      if (this.#exited || Date.now() > deadline) {
        const why = this.#exited ? "exited" : `did not attach within ${timeoutMs} ms`;
        this.kill();
        throw new Error(`strace -p ${this.pid} ${why}: ${this.#stderr.trim().slice(-500)}`);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Detaches (SIGINT, bounded wait, then SIGKILL) and parses the summary. */
  async stop(timeoutMs = DETACH_TIMEOUT_MS): Promise<StraceSummary> {
    if (!this.#exited) this.#child.kill("SIGINT");
    const done = await within(this.#closed, timeoutMs);
    try {
      if (!done) throw new Error(`strace did not exit within ${timeoutMs} ms of SIGINT`);
      return parseStraceSummary(readFileSync(this.#file, "utf8"));
    } finally {
      this.kill();
    }
  }

  /** Kills strace if it still runs (no summary then) and removes its files. */
  kill(): void {
    if (!this.#exited) this.#child.kill("SIGKILL");
    clearTimeout(this.#lifetime);
    process.off("exit", this.#killOnExit);
    rmSync(this.#dir, { recursive: true, force: true });
  }
}

/** Threads of a process now (/proc/PID/task), or undefined if it is gone. */
function threadCount(pid: number): number | undefined {
  try {
    return readdirSync(`/proc/${pid}/task`).length;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------- jobs

/** The traced jobs of one session: 4 KiB random reads, then writes, at QD32. */
export function straceJobs(seconds: number): DriverJob[] {
  return (["randread", "randwrite"] as const).map((rw) => ({
    rw,
    depth: STRACE_DEPTH,
    seconds,
    pause: true,
  }));
}

interface Traced {
  threadsSeen?: number;
  threadsAttached?: number;
  summary?: StraceSummary;
  error?: string;
}

/**
 * Traces a backend during the driver's `pause` jobs: attaches strace at the
 * driver's `@before N`, detaches at `@after N`, and turns the summaries into
 * {@link SyscallPoint}s.
 */
export class JobTracer {
  readonly pid: number;
  readonly maxMs: number;
  #current: StraceRun | undefined;
  readonly #traced = new Map<number, Traced>();

  /** `maxMs` bounds each strace run. */
  constructor(pid: number, maxMs: number) {
    this.pid = pid;
    this.maxMs = maxMs;
  }

  /** Handles one driver event (`before N` / `after N`); never rejects. */
  async onSync(event: string): Promise<void> {
    const [what, n] = event.split(" ");
    const job = Number(n);
    const t = this.#traced.get(job) ?? {};
    this.#traced.set(job, t);
    try {
      if (what === "before") {
        t.threadsSeen = threadCount(this.pid);
        this.#current = new StraceRun(this.pid, this.maxMs);
        t.threadsAttached = await this.#current.attached();
      } else if (what === "after" && this.#current) {
        const s = this.#current;
        this.#current = undefined;
        t.summary = await s.stop();
      }
    } catch (e) {
      this.#current = undefined;
      t.error = (e as Error).message;
    }
  }

  /** Kills a strace still attached (the driver failed mid-job). */
  close(): void {
    this.#current?.kill();
    this.#current = undefined;
  }

  /** The points of the `pause` jobs; `results[i]` is job i's, when the driver got that far. */
  points(
    backend: VhostBackendKind,
    queues: number,
    jobs: readonly DriverJob[],
    results: readonly DriverJobResult[],
    sessionError?: string,
  ): SyscallPoint[] {
    const out: SyscallPoint[] = [];
    for (const [i, job] of jobs.entries()) {
      if (!job.pause) continue;
      const t = this.#traced.get(i) ?? {};
      const base: SyscallPoint = {
        backend,
        queues,
        rw: job.rw,
        depth: job.depth,
        ...(t.threadsSeen !== undefined ? { threadsSeen: t.threadsSeen } : {}),
        ...(t.threadsAttached !== undefined ? { threadsAttached: t.threadsAttached } : {}),
      };
      out.push(tracedPoint(base, results[i], t, sessionError));
    }
    return out;
  }
}

function tracedPoint(
  base: SyscallPoint,
  r: DriverJobResult | undefined,
  t: Traced,
  sessionError: string | undefined,
): SyscallPoint {
  let error: string | undefined;
  if (!r) error = sessionError ?? "the job did not run";
  else if (r.error !== undefined) error = `I/O error: ${r.error}`;
  else if (t.error !== undefined) error = t.error;
  else if (!t.summary) error = "strace gave no summary";
  if (error !== undefined || !r || !t.summary) return { ...base, error: error ?? "?" };
  try {
    return { ...base, ...perIoFigures(t.summary, r.ios) };
  } catch (e) {
    return { ...base, error: (e as Error).message };
  }
}

/** Points saying why nothing was measured (e.g. no strace), for every backend × queues × traced job. */
export function unmeasuredPoints(
  backends: readonly VhostBackendKind[],
  queues: readonly number[],
  error: string,
): SyscallPoint[] {
  return queues.flatMap((q) =>
    backends.flatMap((backend) =>
      straceJobs(0).map((j) => ({ backend, queues: q, rw: j.rw, depth: j.depth, error })),
    ),
  );
}

/**
 * Process accounting from Linux procfs for the benchmarks: CPU time of a
 * whole process (every thread, live or exited: `utime` + `stime` of
 * /proc/PID/stat are thread-group totals, proc(5)), its memory from
 * /proc/PID/status (`VmHWM` = peak resident set), and which process owns a
 * listening Unix socket (so a backend started through a wrapper is measured
 * itself, not the wrapper).
 *
 * @module
 */
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";

let clockTicks: number | undefined;

/** `sysconf(_SC_CLK_TCK)`: the unit of utime/stime (100 on Linux unless configured otherwise). */
export function clockTicksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim());
    } catch {
      clockTicks = 100;
    }
    if (!(clockTicks > 0)) clockTicks = 100;
  }
  return clockTicks;
}

/**
 * utime + stime in clock ticks from the text of /proc/PID/stat. The command
 * name (field 2) may hold spaces and parentheses, so fields are counted
 * after its last `)`: state is field 3, utime field 14, stime field 15.
 */
export function parseStatCpuTicks(stat: string): number {
  const close = stat.lastIndexOf(")");
  if (close < 0) throw new Error(`not a /proc/PID/stat line: ${stat.slice(0, 80)}`);
  const fields = stat
    .slice(close + 2)
    .trim()
    .split(/\s+/); // fields[0] = field 3 (state)
  const utime = Number(fields[14 - 3]);
  const stime = Number(fields[15 - 3]);
  if (!Number.isInteger(utime) || !Number.isInteger(stime))
    throw new Error(`bad utime/stime in /proc/PID/stat: ${stat.slice(0, 120)}`);
  return utime + stime;
}

/** CPU seconds (user + system, all threads) the process has used so far; undefined if gone. */
export function cpuSeconds(pid: number): number | undefined {
  try {
    return parseStatCpuTicks(readFileSync(`/proc/${pid}/stat`, "utf8")) / clockTicksPerSecond();
  } catch {
    return undefined;
  }
}

/** Memory figures of /proc/PID/status, in bytes. */
export interface ProcMemory {
  /** Peak resident set size (VmHWM). */
  readonly hwm: number;
  /** Current resident set size (VmRSS) and its parts. */
  readonly rss: number;
  readonly rssAnon: number;
  readonly rssFile: number;
  /** Resident shared memory, e.g. mapped guest RAM (RssShmem). */
  readonly rssShmem: number;
}

/** Parses the `Vm*` / `Rss*` lines (kB) of /proc/PID/status. */
export function parseStatusMemory(status: string): ProcMemory {
  const kb = (key: string): number => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB$`, "m").exec(status);
    return m ? Number(m[1]) * 1024 : 0;
  };
  return {
    hwm: kb("VmHWM"),
    rss: kb("VmRSS"),
    rssAnon: kb("RssAnon"),
    rssFile: kb("RssFile"),
    rssShmem: kb("RssShmem"),
  };
}

/** Memory of a process now; undefined if it is gone. */
export function processMemory(pid: number): ProcMemory | undefined {
  try {
    return parseStatusMemory(readFileSync(`/proc/${pid}/status`, "utf8"));
  } catch {
    return undefined;
  }
}

/** `__SO_ACCEPTCON` in the Flags column of /proc/net/unix: a listening socket. */
const SO_ACCEPTCON = 0x10000;

/** Inodes of the listening Unix sockets bound to `path`, from the text of /proc/net/unix. */
export function listeningInodes(netUnix: string, path: string): number[] {
  const out: number[] = [];
  for (const line of netUnix.split("\n").slice(1)) {
    // Num RefCount Protocol Flags Type St Inode Path
    const cols = line.trim().split(/\s+/);
    if (cols.length < 8 || cols.slice(7).join(" ") !== path) continue;
    if ((Number.parseInt(cols[3] ?? "0", 16) & SO_ACCEPTCON) === 0) continue;
    out.push(Number(cols[6]));
  }
  return out;
}

/**
 * The pid of the process holding the listening Unix socket bound to `path`
 * (found through the socket's inode in /proc/PID/fd), or undefined.
 */
export function listeningSocketOwner(path: string): number | undefined {
  let inodes: number[];
  try {
    inodes = listeningInodes(readFileSync("/proc/net/unix", "utf8"), path);
  } catch {
    return undefined;
  }
  if (inodes.length === 0) return undefined;
  const wanted = new Set(inodes.map((i) => `socket:[${i}]`));
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${entry}/fd`);
    } catch {
      continue; // gone, or not ours to read
    }
    for (const fd of fds) {
      try {
        if (wanted.has(readlinkSync(`/proc/${entry}/fd/${fd}`))) return Number(entry);
      } catch {
        // fd closed meanwhile
      }
    }
  }
  return undefined;
}

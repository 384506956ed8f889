/**
 * CPU time of the calling thread (Linux: /proc/thread-self/stat, clock
 * ticks of 10 ms) for the blk benchmark's per-thread breakdown;
 * `process.cpuUsage()` gives the whole process (every thread).
 *
 * @module
 */
import { readFileSync } from "node:fs";

const TICK_US = 10_000;

/** User + system CPU of this thread in µs, or NaN where /proc is missing. */
export function threadCpuMicros(): number {
  try {
    const stat = readFileSync("/proc/thread-self/stat", "utf8");
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) * TICK_US;
  } catch {
    return Number.NaN;
  }
}

/** User + system CPU of the whole process in µs. */
export function processCpuMicros(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

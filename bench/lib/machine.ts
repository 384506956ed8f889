/**
 * What machine a benchmark ran on, for the report header: CPU model, cores,
 * memory, kernel, Node and QEMU versions.
 *
 * @module
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { availableParallelism, cpus, release, totalmem } from "node:os";

/** The machine description stored with every result. */
export interface MachineInfo {
  readonly cpuModel: string;
  /** Logical CPUs available to this process. */
  readonly cpus: number;
  readonly memoryBytes: number;
  readonly kernel: string;
  readonly node: string;
  /** First line of `qemu-system-x86_64 --version`, or "absent". */
  readonly qemu: string;
  /** First line of `qemu-storage-daemon --version`, or "absent". */
  readonly qsd: string;
}

function firstLine(cmd: string, args: readonly string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] })
      .split("\n")[0]!
      .trim();
  } catch {
    return "absent";
  }
}

function cpuModel(): string {
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"));
    if (m?.[1]) return m[1].trim();
  } catch {
    // not Linux: fall through
  }
  return cpus()[0]?.model ?? "unknown";
}

/** Describes this machine (runs two `--version` commands). */
export function machineInfo(): MachineInfo {
  return {
    cpuModel: cpuModel(),
    cpus: availableParallelism(),
    memoryBytes: totalmem(),
    kernel: release(),
    node: process.version,
    qemu: firstLine("qemu-system-x86_64", ["--version"]),
    qsd: firstLine("qemu-storage-daemon", ["--version"]),
  };
}

/**
 * Helpers for the tests of src/native: fd flags from /proc/self/fdinfo, fd
 * leak checks, temporary directories and bounded waits. Linux only; not part
 * of the library's API.
 *
 * @module
 */
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** `O_CLOEXEC` as /proc/self/fdinfo reports it in `flags` (octal 02000000). */
export const O_CLOEXEC = 0o2000000;
/** `O_NONBLOCK` as /proc/self/fdinfo reports it in `flags` (octal 04000). */
export const O_NONBLOCK = 0o4000;

/** The open-file flags of `fd` (the `flags:` line of /proc/self/fdinfo, octal). */
export function fdFlags(fd: number): number {
  const text = readFileSync(`/proc/self/fdinfo/${fd}`, "utf8");
  const m = /^flags:\s*([0-7]+)$/m.exec(text);
  if (m?.[1] === undefined) throw new Error(`no flags in /proc/self/fdinfo/${fd}`);
  return parseInt(m[1], 8);
}

/** What `fd` refers to (`socket:[…]`, `anon_inode:[eventfd]`, `/memfd:x (deleted)`, a path). */
export function fdTarget(fd: number): string {
  return readlinkSync(`/proc/self/fd/${fd}`);
}

/** The open fds of this process and what each refers to. */
export function fdSnapshot(): Map<number, string> {
  const snapshot = new Map<number, string>();
  for (const name of readdirSync("/proc/self/fd")) {
    const fd = Number(name);
    try {
      snapshot.set(fd, fdTarget(fd));
    } catch {
      // the fd readdir itself used, closed by now
    }
  }
  return snapshot;
}

/** Fds open now that were not open (to the same target) in `before`, as "fd -> target". */
export function fdsOpenedSince(before: ReadonlyMap<number, string>): string[] {
  const leaked: string[] = [];
  for (const [fd, target] of fdSnapshot()) {
    if (before.get(fd) !== target) leaked.push(`${fd} -> ${target}`);
  }
  return leaked;
}

/** A fresh temporary directory and a function that removes it. */
export function tempDir(prefix = "virtio-ts-native-"): { path: string; remove: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** Resolves like `promise`, or rejects after `ms` milliseconds naming `what`. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A cross-process lock file, so two test files running in parallel do not
 * install packages or build the same cache entry at the same time.
 *
 * The lock is a file created with `O_EXCL` holding the owner's pid. A lock
 * whose owner is no longer alive is stale and is taken over. Waiting is
 * bounded: after `timeoutMs` the caller gets an error naming the holder.
 *
 * @module
 */
import { openSync, closeSync, writeSync, readFileSync, unlinkSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

/** Whether a process with this pid exists (EPERM still means it exists). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Try once to create the lock file; true when we now hold it. */
function tryAcquire(path: string): boolean {
  try {
    const fd = openSync(path, "wx");
    writeSync(fd, String(process.pid));
    closeSync(fd);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
  }
  let holder: number;
  try {
    holder = Number.parseInt(readFileSync(path, "utf8"), 10);
  } catch {
    return false; // removed between open and read: retry
  }
  // A pid-less file is a holder caught between create and write: wait for it.
  if (Number.isInteger(holder) && holder !== process.pid && !alive(holder)) {
    try {
      unlinkSync(path);
    } catch {
      // someone else removed it first
    }
  }
  return false;
}

/** Read the holder's pid for an error message. */
function holderOf(path: string): string {
  try {
    return readFileSync(path, "utf8").trim() || "?";
  } catch {
    return "none";
  }
}

/**
 * Run `fn` while holding the lock file at `path`.
 *
 * @param path lock file (its directory is created)
 * @param timeoutMs how long to wait for another holder before failing
 */
export async function withLock<T>(
  path: string,
  timeoutMs: number,
  fn: () => Promise<T>,
): Promise<T> {
  mkdirSync(dirname(path), { recursive: true });
  const deadline = Date.now() + timeoutMs;
  while (!tryAcquire(path)) {
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for lock ${path} (holder pid ${holderOf(path)})`,
      );
    }
    await sleep(250);
  }
  try {
    return await fn();
  } finally {
    try {
      unlinkSync(path);
    } catch {
      // already gone
    }
  }
}

/**
 * Helpers of the inflight kill-and-restart tests (inflight.test.ts,
 * packed-inflight.test.ts): the test back-end (./inflight-backend.ts) as a
 * child process, killing it, and reading the image back. vhost-user
 * "Inflight I/O tracking" is what those tests exercise.
 *
 * @module
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync, readSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

const BACKEND = fileURLToPath(new URL("./inflight-backend.ts", import.meta.url));

/** The test back-end as a child process; resolves once it listens. */
export async function startBackend(sock: string, image: string, mode: "serve" | "hold") {
  const child: ChildProcess = spawn(
    process.execPath,
    ["--import", "tsx", BACKEND, sock, image, mode],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  const out = { stdout: "", stderr: "" };
  child.stdout!.setEncoding("utf8").on("data", (c: string) => (out.stdout += c));
  child.stderr!.setEncoding("utf8").on("data", (c: string) => (out.stderr += c));
  const end = Date.now() + 30_000;
  while (!out.stdout.includes("ready")) {
    if (child.exitCode !== null) assert.fail(`back-end exited: ${out.stderr}`);
    if (Date.now() > end) assert.fail(`back-end not ready: ${out.stderr}`);
    await sleep(20);
  }
  return { child, out };
}

export function killed(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  const done = new Promise<void>((resolve) => child.once("close", () => resolve()));
  child.kill("SIGKILL");
  return done;
}

export function readImage(path: string, offset: number, len: number): Uint8Array {
  const fd = openSync(path, "r");
  try {
    const b = new Uint8Array(len);
    assert.equal(readSync(fd, b, 0, len, offset), len);
    return b;
  } finally {
    closeSync(fd);
  }
}

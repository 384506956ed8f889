/**
 * `--aio io_uring` in the real process: each I/O thread opens one io_uring
 * (seen in /proc/PID/fd) and serves reads and writes through it; where a
 * seccomp policy refuses io_uring_setup (EPERM, as container runtimes do),
 * the process says so in one line and serves the same I/O through the
 * thread pool.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readdirSync, readlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, test } from "node:test";
import { VhostUserBlk } from "../../src/devices/blk/vhost-user-frontend.ts";
import { tempDir } from "../../src/native/test-support.ts";
import { CliProcess, lines } from "./support.ts";

const HELPER_SOURCE = fileURLToPath(new URL("./no-io-uring.c", import.meta.url));

/** The process's io_uring file descriptors. */
function uringFds(pid: number): number {
  let n = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`) === "anon_inode:[io_uring]") n++;
    } catch {
      // closed meanwhile
    }
  }
  return n;
}

/** Writes a pattern at 64 places (more than one ring drain), reads it back. */
async function roundTrip(sock: string): Promise<void> {
  const disk = await VhostUserBlk.connect(sock, { numQueues: 1 });
  try {
    const writes = Array.from({ length: 64 }, (_, i) =>
      disk.write(i * 8192, new Uint8Array(4096).fill(i + 1)),
    );
    await Promise.all(writes);
    await disk.flush();
    const bufs = Array.from({ length: 64 }, () => new Uint8Array(4096));
    await Promise.all(bufs.map((b, i) => disk.read(i * 8192, b)));
    bufs.forEach((b, i) =>
      assert.ok(
        b.every((x) => x === i + 1),
        `block ${i}`,
      ),
    );
  } finally {
    await disk.destroy();
  }
}

describe("--aio io_uring", { timeout: 120_000 }, () => {
  test("two I/O threads: one ring each; reads and writes complete through them", async (t) => {
    const d = tempDir("virtio-ts-uring-");
    t.after(d.remove);
    const image = join(d.path, "disk.img");
    writeFileSync(image, Buffer.alloc(1 << 20));
    const sock = join(d.path, "vu.sock");
    const p = new CliProcess([
      ...["vhost-user-blk", "--socket", sock, "--image", image, "--aio", "io_uring"],
      ...["--io-threads", "2", "--writeback"],
    ]);
    t.after(() => p.kill());
    await p.waitStdout(/listening on/);
    await roundTrip(sock);
    assert.equal(uringFds(p.proc.pid!), 1, "the thread that ran the queue opened its ring");
    p.proc.kill("SIGTERM");
    assert.deepEqual(await p.exit(), { code: 0, signal: null }, p.dump());
    assert.ok(!/io_uring is not available/.test(p.stderr), p.dump());
  });

  test("io_uring refused by seccomp: one line, then the thread pool serves", async (t) => {
    const d = tempDir("virtio-ts-uring-");
    t.after(d.remove);
    const helper = join(d.path, "no-io-uring");
    execFileSync("cc", ["-O2", "-o", helper, HELPER_SOURCE]);
    const image = join(d.path, "disk.img");
    writeFileSync(image, Buffer.alloc(1 << 20));
    const sock = join(d.path, "vu.sock");
    const p = new CliProcess(
      ["vhost-user-blk", "--socket", sock, "--image", image, "--aio", "io_uring", "--writeback"],
      ["ignore", "pipe", "pipe"],
      helper,
    );
    t.after(() => p.kill());
    await p.waitStdout(/listening on/);
    await roundTrip(sock);
    assert.equal(uringFds(p.proc.pid!), 0);
    p.proc.kill("SIGTERM");
    assert.deepEqual(await p.exit(), { code: 0, signal: null }, p.dump());
    const refused = lines(p.stderr).filter((l) => l.includes("io_uring is not available"));
    assert.equal(refused.length, 1, p.dump());
    assert.match(refused[0]!, /EPERM|not permitted/);
    assert.match(refused[0]!, /using the thread pool$/);
  });
});

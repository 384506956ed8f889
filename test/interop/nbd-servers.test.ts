// NbdBacking against NBD servers written elsewhere: qemu-nbd serving a qcow2
// image, and nbdkit (memory plugin; error and delay filters; killed and
// restarted under I/O). The servers are installed on first use (Debian:
// qemu-utils, nbdkit) and run as child processes of this test.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { NbdBacking } from "../../src/devices/blk/nbd-backing.ts";
import { ErrorCode, isVirtioError, type ErrorCodeValue } from "../../src/errors.ts";
import type { Logger } from "../../src/log.ts";
import { ensurePackages, run } from "./guest/install.ts";

const dir = mkdtempSync(join(tmpdir(), "nbd-servers-"));
const children = new Set<ChildProcess>();

before(async () => {
  await ensurePackages(["qemu-utils", "nbdkit"]);
});
const disks: NbdBacking[] = [];
after(async () => {
  // A failed test leaves its disks open, reconnecting: close them so the file ends.
  await Promise.all(disks.map((d) => d.close()));
  for (const c of children) c.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

interface Server {
  readonly child: ChildProcess;
  readonly stderr: () => string;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** Resolves once something accepts connections at the Unix path or TCP port. */
async function reachable(
  where: string | number,
  child: ChildProcess,
  err: () => string,
): Promise<void> {
  const t0 = Date.now();
  for (;;) {
    const ok = await new Promise<boolean>((r) => {
      const s = typeof where === "string" ? connect(where) : connect(where, "127.0.0.1");
      s.once("connect", () => (s.destroy(), r(true)));
      s.once("error", () => r(false));
    });
    if (ok) return;
    if (child.exitCode !== null) throw new Error(`server exited (${child.exitCode}): ${err()}`);
    if (Date.now() - t0 > 10_000) throw new Error(`server not reachable after 10 s: ${err()}`);
    await new Promise((r) => setTimeout(r, 30));
  }
}

async function startServer(cmd: string, args: string[], where: string | number): Promise<Server> {
  if (typeof where === "string") rmSync(where, { force: true }); // a killed server leaves its socket
  const child = spawn(cmd, args, { stdio: ["ignore", "ignore", "pipe"] });
  children.add(child);
  let err = "";
  child.stderr.on("data", (d: Buffer) => (err += d.toString()));
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  await reachable(where, child, () => err);
  return {
    child,
    stderr: () => err,
    stop: async (signal = "SIGTERM") => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
      children.delete(child);
    },
  };
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

function recorder(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return { lines, error: (m) => lines.push(m), warn: (m) => lines.push(m) };
}

const pattern = (n: number, seed: number) =>
  new Uint8Array(n).map((_, i) => (i * 31 + seed * 17 + (i >> 9)) & 0xff);

/** NbdBacking.open, closed by the file's after() too. */
async function open(...args: Parameters<typeof NbdBacking.open>): Promise<NbdBacking> {
  const d = await NbdBacking.open(...args);
  disks.push(d);
  return d;
}

async function rejectsWith(
  p: Promise<unknown>,
  code: ErrorCodeValue,
  match?: RegExp,
): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isVirtioError(e, code), `expected ${code}, got ${String(e)}`);
    if (match) assert.match(e.message, match);
    return true;
  });
}

const OPTS = {
  connectTimeoutMs: 5000,
  requestTimeoutMs: 5000,
  reconnectDelayMs: 50,
  reconnectMaxDelayMs: 200,
};

describe("qemu-nbd serving a qcow2 image", () => {
  test("write, read, flush, trim, write-zeroes; the image holds the data", async () => {
    const img = join(dir, "disk.qcow2");
    const sock = join(dir, "qemu-nbd.sock");
    await run("qemu-img", ["create", "-q", "-f", "qcow2", img, "64M"]);
    const q = await startServer(
      "qemu-nbd",
      ["--persistent", "--shared=4", "-f", "qcow2", "--discard=unmap", "-k", sock, img],
      sock,
    );
    const disk = await open(`nbd+unix:///?socket=${sock}`, { ...OPTS, connections: 2 });
    assert.equal(disk.size, 64 << 20);
    assert.equal(disk.connections, 2, "qemu-nbd --shared=4 sets NBD_FLAG_CAN_MULTI_CONN");
    const a = pattern(3 << 20, 1); // 3 MiB: one request
    const b = pattern(40 << 20, 2); // above 2^25: split into two pieces
    await disk.writev(1 << 20, [a.subarray(0, 4096), a.subarray(4096)]);
    await disk.writev(20 << 20, [b]);
    await disk.writev(0, [pattern(65536, 3)]);
    await disk.writeZeroes(4096, 8192, false);
    await disk.discard(2 << 20, 1 << 20);
    await disk.writeZeroes(2 << 20, 1 << 20, true);
    await disk.flush();
    const back = new Uint8Array(a.length);
    await disk.readv(1 << 20, [back]);
    assert.deepEqual(back.subarray(0, 1 << 20), a.subarray(0, 1 << 20));
    assert.ok(
      back.subarray(1 << 20, 2 << 20).every((x) => x === 0),
      "trimmed then zeroed range reads zero",
    );
    // A second client sees what the first one flushed.
    const other = await open(`nbd+unix:///?socket=${sock}`, OPTS);
    const big = new Uint8Array(b.length);
    await other.readv(20 << 20, [big]);
    assert.deepEqual(big, b);
    await other.close();
    await disk.close();
    await q.stop();
    const raw = join(dir, "disk.raw");
    await run("qemu-img", ["check", "-q", img]);
    await run("qemu-img", ["convert", "-f", "qcow2", "-O", "raw", img, raw]);
    const content = readFileSync(raw);
    const head = pattern(65536, 3);
    head.fill(0, 4096, 4096 + 8192);
    assert.deepEqual(content.subarray(0, 65536), Buffer.from(head));
    assert.deepEqual(content.subarray(3 << 20, 4 << 20), Buffer.from(a.subarray(2 << 20)));
    assert.ok(content.subarray(2 << 20, 3 << 20).every((x) => x === 0));
    assert.deepEqual(content.subarray(20 << 20, 60 << 20), Buffer.from(b));
  });
});

describe("nbdkit", () => {
  test("memory plugin: several connections (NBD_FLAG_CAN_MULTI_CONN), data visible across them", async () => {
    const sock = join(dir, "memory.sock");
    const k = await startServer(
      "nbdkit",
      ["-f", "--exit-with-parent", "-U", sock, "memory", "64M"],
      sock,
    );
    const disk = await open(`nbd+unix:///?socket=${sock}`, { ...OPTS, connections: 4 });
    assert.equal(disk.connections, 4);
    const chunks = Array.from({ length: 64 }, (_, i) => pattern(65536, i));
    await Promise.all(chunks.map((c, i) => disk.writev(i * 65536, [c])));
    await disk.flush();
    const reader = await open(`nbd+unix:///?socket=${sock}`, OPTS);
    const back = new Uint8Array(64 * 65536);
    await reader.readv(0, [back]);
    chunks.forEach((c, i) =>
      assert.deepEqual(back.subarray(i * 65536, (i + 1) * 65536), c, `chunk ${i}`),
    );
    await reader.close();
    await disk.close();
    await k.stop();
  });

  test("error filter: reads fail with NBD_EIO while the trigger file exists, later ones succeed", async () => {
    const sock = join(dir, "error.sock");
    const trigger = join(dir, "error-trigger");
    const args = [
      "-f",
      "--exit-with-parent",
      "-U",
      sock,
      "--filter=error",
      "memory",
      "8M",
      "error=EIO",
      "error-pread-rate=1",
      `error-pread-file=${trigger}`,
    ];
    const k = await startServer("nbdkit", args, sock);
    const disk = await open(`nbd+unix:///?socket=${sock}`, OPTS);
    await disk.writev(0, [pattern(8192, 5)]);
    writeFileSync(trigger, "");
    await rejectsWith(
      disk.readv(0, [new Uint8Array(8192)]),
      ErrorCode.NBD_REQUEST,
      /NBD_CMD_READ \[0, \+8192\) failed with NBD_EIO/,
    );
    rmSync(trigger);
    const back = new Uint8Array(8192);
    await disk.readv(0, [back]);
    assert.deepEqual(back, pattern(8192, 5));
    await disk.close();
    await k.stop();
  });

  test("delay filter: a slow read times out (NBD_TIMEOUT), the client reconnects, later requests succeed (TCP)", async () => {
    const port = await freePort();
    const args = [
      "-f",
      "--exit-with-parent",
      "-i",
      "127.0.0.1",
      "-p",
      String(port),
      "--filter=delay",
      "memory",
      "8M",
      "rdelay=3",
    ];
    const k = await startServer("nbdkit", args, port);
    const log = recorder();
    const disk = await open(`nbd://127.0.0.1:${port}/`, {
      ...OPTS,
      requestTimeoutMs: 400,
      logger: log,
    });
    const t0 = Date.now();
    await rejectsWith(
      disk.readv(0, [new Uint8Array(4096)]),
      ErrorCode.NBD_TIMEOUT,
      /got no reply within 400 ms/,
    );
    const took = Date.now() - t0;
    assert.ok(took >= 400 && took < 1500, `timed out after ${took} ms`);
    await disk.writev(0, [pattern(4096, 9)]); // writes are not delayed: succeeds on the new connection
    assert.ok(
      log.lines.some((l) => /conn 0.*NBD_TIMEOUT/.test(l)),
      log.lines.join("\n"),
    );
    await disk.close();
    await k.stop();
  });

  test("server killed under I/O: requests in flight fail, the backing reconnects to the restarted server", async () => {
    const sock = join(dir, "file.sock");
    const file = join(dir, "file.raw");
    writeFileSync(file, Buffer.alloc(8 << 20));
    const slow = [
      "-f",
      "--exit-with-parent",
      "-U",
      sock,
      "--filter=delay",
      "file",
      file,
      "rdelay=2",
    ];
    let k = await startServer("nbdkit", slow, sock);
    const log = recorder();
    const disk = await open(`nbd+unix:///?socket=${sock}`, { ...OPTS, logger: log });
    await disk.writev(0, [pattern(65536, 7)]);
    await disk.flush();
    const inFlight = Array.from({ length: 8 }, (_, i) =>
      disk.readv(i * 4096, [new Uint8Array(4096)]),
    );
    const settled = Promise.allSettled(inFlight); // handled before they reject
    await new Promise((r) => setTimeout(r, 200));
    const t0 = Date.now();
    await k.stop("SIGKILL");
    const results = await settled;
    assert.ok(Date.now() - t0 < 1000, "in-flight requests fail at once");
    for (const r of results) {
      assert.equal(r.status, "rejected");
      assert.ok(isVirtioError(r.reason, ErrorCode.NBD_DISCONNECTED));
    }
    assert.ok(existsSync(file));
    k = await startServer("nbdkit", ["-f", "--exit-with-parent", "-U", sock, "file", file], sock);
    const back = new Uint8Array(65536);
    await disk.readv(0, [back]); // waits for the reconnect, bounded by the request timeout
    assert.deepEqual(back, pattern(65536, 7));
    assert.ok(
      log.lines.some((l) => /reconnected/.test(l)),
      log.lines.join("\n"),
    );
    await disk.close();
    await k.stop();
  });
});

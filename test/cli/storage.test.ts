/**
 * The disks `virtio-ts vhost-user-blk` serves besides raw files, through the
 * real process: a qcow2 image refused in one line that names the way out
 * (`--format raw`, or qemu-nbd and `--nbd`), then served as raw bytes with
 * `--format raw`; an NBD export of nbdkit's memory plugin (`--nbd`); an
 * unreachable NBD server and an unusable store module, each one line and
 * exit status 1. VIRTIO 1.2 §5.2.6.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { VhostUserBlk } from "../../src/devices/blk/vhost-user-frontend.ts";
import { ensurePackages } from "../interop/guest/install.ts";
import { CliProcess } from "./support.ts";

function qcow2Header(size: number): Uint8Array {
  const b = new Uint8Array(size);
  b.set([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3]); // "QFI\xfb", version 3
  return b;
}

/** Runs the CLI to its end: exit code and stderr. */
async function runCli(args: string[]): Promise<{ code: number | null; stderr: string }> {
  const p = new CliProcess(args);
  const { code } = await p.exit();
  return { code, stderr: p.stderr };
}

/** Starts the CLI, connects the project's front-end, writes and reads 64 KiB back. */
async function serveAndRoundTrip(args: string[], socket: string): Promise<void> {
  const p = new CliProcess(["vhost-user-blk", "--socket-path", socket, ...args]);
  try {
    await p.waitStdout(/listening on /);
    const disk = await VhostUserBlk.connect(socket);
    const data = Uint8Array.from({ length: 65536 }, (_, i) => (i * 5) & 0xff);
    await disk.write(1 << 20, data);
    const back = new Uint8Array(data.length);
    await disk.read(1 << 20, back);
    assert.deepEqual(back, data);
    await disk.close();
  } finally {
    p.proc.kill("SIGTERM");
    assert.deepEqual(await p.exit(), { code: 0, signal: null }, p.dump());
  }
}

test(
  "qcow2 refused in one line, served with --format raw; --nbd to nbdkit; bad NBD and store module",
  { timeout: 120_000 },
  async () => {
    await ensurePackages(["nbdkit"]);
    const dir = mkdtempSync(join(tmpdir(), "vts-storage-"));
    try {
      const image = join(dir, "disk.qcow2");
      writeFileSync(image, qcow2Header(8 << 20));
      const socket = join(dir, "vu.sock");
      const refused = await runCli(["vhost-user-blk", "--socket-path", socket, "--image", image]);
      assert.equal(refused.code, 1);
      assert.match(
        refused.stderr,
        /^virtio-ts: disk image .*disk\.qcow2: is a qcow2 image, not raw: serve it through qemu-nbd .* or pass --format raw to serve its bytes as they are\n$/,
      );
      await serveAndRoundTrip(["--image", image, "--format", "raw"], socket);

      const nbdSock = join(dir, "nbd.sock");
      const nbdkit = spawn(
        "nbdkit",
        ["--foreground", "--exit-with-parent", "-U", nbdSock, "memory", "16M"],
        {
          stdio: "ignore",
        },
      );
      try {
        for (let i = 0; i < 100; i++) {
          try {
            await stat(nbdSock);
            break;
          } catch {
            await new Promise((r) => setTimeout(r, 50));
          }
        }
        await serveAndRoundTrip(
          ["--nbd", `nbd+unix:///?socket=${nbdSock}`, "--num-queues", "2"],
          socket,
        );
      } finally {
        nbdkit.kill();
      }

      const gone = await runCli([
        "vhost-user-blk",
        ...["--socket-path", socket, "--nbd", `nbd+unix:///?socket=${join(dir, "none.sock")}`],
      ]);
      assert.equal(gone.code, 1, gone.stderr);
      assert.match(gone.stderr, /^virtio-ts: nbd nbd\+unix:\/\/\/\?socket=.*none\.sock: .*\n$/);

      const store = join(dir, "store.mjs");
      writeFileSync(store, "export const nothing = 1;\n");
      const bad = await runCli(["vhost-user-blk", "--socket-path", socket, "--backing", store]);
      assert.equal(bad.code, 1, bad.stderr);
      assert.match(
        bad.stderr,
        /^virtio-ts: backing module file:.*store\.mjs: exports no openBacking function\n$/,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);

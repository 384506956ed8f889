/**
 * The real `virtio-ts` process (bin/virtio-ts.mjs through tsx): help, the
 * `listening on PATH` line, one front-end after another, clean stops on
 * SIGTERM and SIGINT that remove the socket, a socket in use, a stale socket
 * file, an inherited listening fd, and a bad flag from the real command line.
 */
import assert from "node:assert/strict";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { close, listenUnix } from "../../src/native/index.ts";
import { tempDir } from "../../src/native/test-support.ts";
import { VIRTIO_BLK_F_MQ, VIRTIO_BLK_F_RO } from "../../src/spec/blk.ts";
import {
  VHOST_USER_F_PROTOCOL_FEATURES,
  VIRTIO_F_VERSION_1,
  hasFeature,
} from "../../src/spec/virtio.ts";
import { CliProcess, lines, probeFeatures } from "./support.ts";

function setup(t: { after: (fn: () => void) => void }): {
  image: string;
  sock: string;
  dir: string;
} {
  const d = tempDir("virtio-ts-cli-");
  t.after(d.remove);
  const image = join(d.path, "disk.img");
  writeFileSync(image, Buffer.alloc(1 << 20));
  return { image, sock: join(d.path, "vu.sock"), dir: d.path };
}

describe("virtio-ts process", { timeout: 120_000 }, () => {
  test("--help explains every flag and shows a QEMU command line", async () => {
    const p = new CliProcess(["vhost-user-blk", "--help"]);
    assert.deepEqual(await p.exit(), { code: 0, signal: null });
    const help = p.stdout;
    for (const flag of [
      "--socket-path PATH",
      "--fd N",
      "--image FILE",
      "--num-queues N",
      "--queue-size N",
      "--read-only",
      "--serial ID",
      "--logical-block-size N",
      "--writeback",
      "--direct",
      "--aio MODE",
      "--max-in-flight N",
      "--verbose",
      "--log-level LEVEL",
      "--log-timestamp",
      "--log-format FORMAT",
      "--pidfile PATH",
      "--print-capabilities",
      "--print-description",
      "--help",
    ])
      assert.match(help, new RegExp(`^ +(-\\w, )?${flag} +\\S`, "m"), `${flag} is explained`);
    assert.match(help, /qemu-system-x86_64 .*\\\n.*memory-backend-memfd,id=mem,size=\S+,share=on/);
    assert.match(help, /-chardev socket,id=vu0,path=\S+,reconnect=1/);
    assert.match(help, /-device vhost-user-blk-pci,chardev=vu0,num-queues=2/);
    assert.match(help, /Exit status: 0 clean stop; 1 runtime error .*; 2 bad usage/);
    assert.equal(p.stderr, "");
  });

  test("a bad flag: one line on stderr, exit status 2", async () => {
    const p = new CliProcess(["vhost-user-blk", "--socket", "/tmp/x.sock", "--num-queues", "many"]);
    assert.deepEqual(await p.exit(), { code: 2, signal: null });
    assert.deepEqual(lines(p.stderr), [
      'virtio-ts vhost-user-blk: --num-queues must be an integer, got "many" (see virtio-ts vhost-user-blk --help)',
    ]);
    assert.equal(p.stdout, "");
  });

  test("listening line; front-ends one after another; SIGTERM stops cleanly and removes the socket", async (t) => {
    const { image, sock } = setup(t);
    const p = new CliProcess([
      "vhost-user-blk",
      "--socket",
      sock,
      "--image",
      image,
      "--num-queues",
      "2",
      "--read-only",
    ]);
    t.after(() => p.kill());
    await p.waitStdout(/listening on /);
    assert.equal(p.stdout, `listening on ${sock}\n`);
    for (let i = 0; i < 2; i++) {
      const features = await probeFeatures(sock);
      assert.ok(hasFeature(features, VHOST_USER_F_PROTOCOL_FEATURES));
      assert.ok(hasFeature(features, VIRTIO_F_VERSION_1));
      assert.ok(hasFeature(features, VIRTIO_BLK_F_MQ));
      assert.ok(hasFeature(features, VIRTIO_BLK_F_RO), "--read-only offers VIRTIO_BLK_F_RO");
    }
    // The second front-end's rings drain on the dataplane worker: stop only once it is gone.
    await p.waitStderr(/conn 2: vhost-user: front-end disconnected/);
    p.proc.kill("SIGTERM");
    assert.deepEqual(await p.exit(), { code: 0, signal: null }, p.dump());
    assert.equal(existsSync(sock), false, "socket file removed");
    const err = lines(p.stderr);
    assert.equal(
      err[0],
      `virtio-ts: serving ${image} (1 MiB) as virtio-blk: 2 queues of 128, read-only, 1 I/O thread`,
    );
    assert.ok(err.includes("virtio-ts: conn 1: front-end connected"), p.dump());
    assert.ok(err.includes("virtio-ts: conn 2: front-end connected"), p.dump());
    assert.ok(err.includes("virtio-ts: conn 2: vhost-user: front-end disconnected"), p.dump());
    assert.deepEqual(err.slice(-2), [
      "virtio-ts: SIGTERM: stopping (draining requests in flight)",
      "virtio-ts: stopped",
    ]);
  });

  test("SIGINT stops cleanly too", async (t) => {
    const { image, sock } = setup(t);
    const p = new CliProcess(["vhost-user-blk", "--socket", sock, "--image", image]);
    t.after(() => p.kill());
    await p.waitStdout(/listening on /);
    p.proc.kill("SIGINT");
    assert.deepEqual(await p.exit(), { code: 0, signal: null }, p.dump());
    assert.equal(existsSync(sock), false);
  });

  test("socket in use: the second server exits 1 with one line; the first keeps serving", async (t) => {
    const { image, sock } = setup(t);
    const first = new CliProcess(["vhost-user-blk", "--socket", sock, "--image", image]);
    t.after(() => first.kill());
    await first.waitStdout(/listening on /);
    const second = new CliProcess(["vhost-user-blk", "--socket", sock, "--image", image]);
    assert.deepEqual(await second.exit(), { code: 1, signal: null });
    assert.deepEqual(lines(second.stderr), [
      `virtio-ts: socket ${sock} is in use: a server already answers there`,
    ]);
    assert.equal(second.stdout, "");
    assert.ok(hasFeature(await probeFeatures(sock), VIRTIO_F_VERSION_1), "first still serves");
    first.proc.kill("SIGTERM");
    assert.equal((await first.exit()).code, 0, first.dump());
  });

  test("a stale socket file is replaced", async (t) => {
    const { image, sock } = setup(t);
    close(listenUnix(sock)); // the socket file stays; nobody answers on it
    assert.ok(existsSync(sock));
    const p = new CliProcess(["vhost-user-blk", "--socket", sock, "--image", image]);
    t.after(() => p.kill());
    await p.waitStdout(/listening on /);
    assert.ok(hasFeature(await probeFeatures(sock), VIRTIO_F_VERSION_1));
    p.proc.kill("SIGTERM");
    assert.equal((await p.exit()).code, 0, p.dump());
    assert.equal(existsSync(sock), false);
  });

  test("--fd: serves on an inherited listening socket", async (t) => {
    const { image, sock } = setup(t);
    const listener = listenUnix(sock);
    t.after(() => close(listener));
    // The child gets the listener as its fd 3.
    const p = new CliProcess(
      [
        "vhost-user-blk",
        ...["--fd", "3", "--image", image, "--serial", "vts-fd-disk"],
        ...["--logical-block-size", "4096", "--writeback", "--direct"],
      ],
      ["ignore", "pipe", "pipe", listener],
    );
    t.after(() => p.kill());
    await p.waitStdout(/listening on /);
    assert.equal(p.stdout, "listening on fd 3\n");
    assert.equal(
      lines(p.stderr)[0],
      `virtio-ts: serving ${image} (1 MiB) as virtio-blk: 1 queue of 128, writeback cache, 1 I/O thread, 4096-byte blocks, O_DIRECT, serial vts-fd-disk`,
    );
    assert.ok(hasFeature(await probeFeatures(sock), VIRTIO_F_VERSION_1));
    p.proc.kill("SIGTERM");
    assert.equal((await p.exit()).code, 0, p.dump());
  });
});

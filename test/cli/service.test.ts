/**
 * `virtio-ts vhost-user-blk` under a service manager, as the real process:
 * the vhost-user "Backend program conventions" (--print-capabilities, the
 * description file's program, --fd on a connected socket), readiness and
 * stop notifications on $NOTIFY_SOCKET, --pidfile, SIGHUP, and JSON logs.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { accessSync, constants, readFileSync, writeFileSync } from "node:fs";
import { isAbsolute, join } from "node:path";
import { describe, test } from "node:test";
import { close, socketPair } from "../../src/native/index.ts";
import { tempDir } from "../../src/native/test-support.ts";
import { VIRTIO_F_VERSION_1, hasFeature } from "../../src/spec/virtio.ts";
import { BIN, CliProcess, lines, probeFeaturesOn } from "./support.ts";

/** Runs the CLI to completion (only for commands that end by themselves). */
function run(
  bin: string,
  args: readonly string[],
): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: "utf8", timeout: 20_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** A temporary directory with a 1 MiB image, removed after the test. */
function setup(t: { after: (fn: () => void) => void }): { dir: string; image: string } {
  const d = tempDir("virtio-ts-svc-");
  t.after(d.remove);
  const image = join(d.path, "disk.img");
  writeFileSync(image, Buffer.alloc(1 << 20));
  return { dir: d.path, image };
}

const CAPABILITIES = { type: "block", features: ["read-only", "blk-file"] };

describe("virtio-ts under a service manager", { timeout: 120_000 }, () => {
  test("--print-capabilities prints the JSON managers read and exits 0, ignoring every other argument", () => {
    for (const extra of [[], ["--socket-path", "/nonexistent/x.sock", "--nope", "positional"]]) {
      const r = run(BIN, ["vhost-user-blk", ...extra, "--print-capabilities"]);
      assert.equal(r.code, 0, r.err);
      assert.equal(r.err, "");
      assert.deepEqual(JSON.parse(r.out), CAPABILITIES);
    }
  });

  test("--print-description names a program that takes the convention's flags with no command", () => {
    const r = run(BIN, ["vhost-user-blk", "--print-description"]);
    assert.equal(r.code, 0, r.err);
    const d = JSON.parse(r.out) as Record<string, unknown>;
    assert.equal(d["type"], "block");
    assert.match(String(d["description"]), /vhost-user-blk/);
    assert.ok(Array.isArray(d["tags"]) && d["tags"].every((t) => typeof t === "string"));
    assert.deepEqual(Object.keys(d).sort(), ["binary", "description", "tags", "type"]);
    const binary = String(d["binary"]);
    assert.ok(isAbsolute(binary), binary);
    accessSync(binary, constants.X_OK);
    assert.match(readFileSync(binary, "utf8"), /^#!\/usr\/bin\/env -S node/);
    // The described program is the command itself: same capabilities, same help.
    const caps = run(binary, ["--print-capabilities"]);
    assert.equal(caps.code, 0, caps.err);
    assert.deepEqual(JSON.parse(caps.out), CAPABILITIES);
    const help = run(binary, ["--help"]);
    assert.match(help.out, /--socket-path PATH/);
    const bad = run(binary, ["--fd", "1"]);
    assert.equal(bad.code, 2);
    assert.deepEqual(lines(bad.err), [
      "virtio-ts vhost-user-blk: --fd must be in 3..65535, got 1 (see virtio-ts vhost-user-blk --help)",
    ]);
  });

  test("--fd on a connected socket (socketpair): serves that front-end; its hang-up stops the process, exit 0", async (t) => {
    const { image } = setup(t);
    const [vmm, backend] = socketPair();
    const p = new CliProcess(
      ["vhost-user-blk", "--fd", "3", "--image", image],
      ["ignore", "pipe", "pipe", backend],
    );
    t.after(() => p.kill());
    close(backend); // only the child holds that end now
    await p.waitStdout(/connected on fd 3/);
    assert.equal(p.stdout, "connected on fd 3\n");
    assert.ok(hasFeature(await probeFeaturesOn(vmm), VIRTIO_F_VERSION_1));
    assert.ok(hasFeature(await probeFeaturesOn(vmm), VIRTIO_F_VERSION_1), "still served");
    close(vmm);
    assert.deepEqual(await p.exit(), { code: 0, signal: null }, p.dump());
    const err = lines(p.stderr);
    assert.deepEqual(err.slice(-2), [
      "virtio-ts: the front-end hung up (connected --fd): stopping",
      "virtio-ts: stopped",
    ]);
    assert.ok(err.length < 10, `a handful of lines, no loop: ${p.dump()}`);
  });
});

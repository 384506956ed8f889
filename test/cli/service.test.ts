/**
 * `virtio-ts vhost-user-blk` under a service manager, as the real process:
 * the vhost-user "Backend program conventions" (--print-capabilities, the
 * description file's program, --fd on a connected socket), readiness and
 * stop notifications on $NOTIFY_SOCKET, --pidfile, SIGHUP, and JSON logs.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { accessSync, constants, existsSync, readFileSync, writeFileSync } from "node:fs";
import { isAbsolute, join } from "node:path";
import { describe, test } from "node:test";
import { bindUnixDatagram, close, recvmsg, socketPair } from "../../src/native/index.ts";
import { tempDir } from "../../src/native/test-support.ts";
import { setTimeout as sleep } from "node:timers/promises";
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

/** The next datagram on `fd` as text (bounded wait). */
async function datagram(fd: number, ms = 10_000): Promise<string> {
  const end = Date.now() + ms;
  for (;;) {
    const r = recvmsg(fd, 4096, 0);
    if (r !== null) return r.bytes.toString();
    if (Date.now() > end) assert.fail(`no datagram within ${ms} ms`);
    await sleep(10);
  }
}

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

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

  test("$NOTIFY_SOCKET gets READY=1 once serving and STOPPING=1; --pidfile; SIGHUP stops cleanly; JSON logs", async (t) => {
    const { dir, image } = setup(t);
    const sock = join(dir, "vu.sock");
    const pidfile = join(dir, "blk.pid");
    const notify = join(dir, "notify");
    const receiver = bindUnixDatagram(notify);
    t.after(() => close(receiver));
    const p = new CliProcess(
      ["vhost-user-blk", "--socket-path", sock, "--image", image, "--pidfile", pidfile],
      ["ignore", "pipe", "pipe"],
      undefined,
      { NOTIFY_SOCKET: notify },
    );
    t.after(() => p.kill());
    // No --log-format: text. A second process shows JSON below.
    const ready = await datagram(receiver);
    assert.equal(ready, `READY=1\nSTATUS=serving 1 export\nMAINPID=${p.proc.pid}\n`);
    assert.equal(p.stdout, `listening on ${sock}\n`, "stdout said so before READY=1");
    assert.equal(readFileSync(pidfile, "utf8"), `${p.proc.pid}\n`);
    p.proc.kill("SIGHUP");
    assert.equal(
      await datagram(receiver),
      "STOPPING=1\nSTATUS=SIGHUP: stopping (draining requests in flight)\n",
    );
    assert.deepEqual(await p.exit(), { code: 0, signal: null }, p.dump());
    assert.equal(existsSync(pidfile), false, "pid file removed");
    assert.equal(existsSync(sock), false, "socket removed");
    assert.deepEqual(lines(p.stderr).slice(-2), [
      "virtio-ts: SIGHUP: stopping (draining requests in flight)",
      "virtio-ts: stopped",
    ]);
    assert.equal(recvmsg(receiver, 4096, 0), null, "two datagrams, no more");
  });

  test("--log-format json: every stderr line is one object with time, level and msg; stdout unchanged", async (t) => {
    const { dir, image } = setup(t);
    const sock = join(dir, "vu.sock");
    const p = new CliProcess([
      ...["vhost-user-blk", "--socket-path", sock, "--image", image],
      ...["--log-format", "json", "--log-level", "debug"],
    ]);
    t.after(() => p.kill());
    await p.waitStdout(/listening on /);
    assert.equal(p.stdout, `listening on ${sock}\n`);
    p.proc.kill("SIGTERM");
    assert.deepEqual(await p.exit(), { code: 0, signal: null }, p.dump());
    const records = lines(p.stderr).map((l) => JSON.parse(l) as Record<string, unknown>);
    for (const r of records) {
      assert.match(String(r["time"]), ISO);
      assert.ok(["error", "warn", "info", "debug", "trace"].includes(String(r["level"])));
      assert.equal(typeof r["msg"], "string");
    }
    assert.deepEqual(records.map((r) => [r["level"], r["msg"]]).slice(-2), [
      ["info", "SIGTERM: stopping (draining requests in flight)"],
      ["info", "stopped"],
    ]);
    assert.match(String(records[0]!["msg"]), /^serving \S+ \(1 MiB\) as virtio-blk: /);
  });

  test("--pidfile naming a running process: one line (with --log-timestamp, timestamped), exit 1, nothing served", async (t) => {
    const { dir, image } = setup(t);
    const sock = join(dir, "vu.sock");
    const pidfile = join(dir, "blk.pid");
    writeFileSync(pidfile, `${process.pid}\n`);
    const p = new CliProcess([
      ...["vhost-user-blk", "--socket-path", sock, "--image", image],
      ...["--pidfile", pidfile, "--log-timestamp"],
    ]);
    assert.deepEqual(await p.exit(), { code: 1, signal: null }, p.dump());
    const err = lines(p.stderr);
    assert.equal(err.length, 1, p.dump());
    const [time, ...rest] = err[0]!.split(" ");
    assert.match(time!, ISO);
    assert.equal(
      rest.join(" "),
      `virtio-ts: pidfile ${pidfile}: process ${process.pid} is running`,
    );
    assert.equal(p.stdout, "");
    assert.equal(existsSync(sock), false);
    assert.equal(readFileSync(pidfile, "utf8"), `${process.pid}\n`, "left as it was");
  });
});

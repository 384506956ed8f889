import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { setImmediate as tick, setTimeout as sleep } from "node:timers/promises";
import {
  close,
  connectUnix,
  eventfd,
  isNativeError,
  listenUnix,
  recvmsg,
  sendmsg,
  socketPair,
  watchCount,
} from "../native/index.ts";
import { fdSnapshot, fdsOpenedSince, tempDir, within } from "../native/test-support.ts";
import { VhostUserRequest as R } from "../spec/vhost-user.ts";
import { decodeHeader, decodeU64, encodeMessage } from "./codec.ts";
import type { VhostUserConnection } from "./connection.ts";
import { VhostUserServer } from "./server.ts";
import { RecordingBackend, nativeTestDataplane } from "./test-support.ts";

/** The next message from `fd`, or "eof" (bounded wait). */
async function receive(fd: number): Promise<Uint8Array | "eof"> {
  for (let i = 0; i < 5000; i++) {
    const r = recvmsg(fd, 4096, 0);
    if (r !== null) return r.eof ? "eof" : new Uint8Array(r.bytes);
    await tick();
  }
  throw new Error("nothing received");
}

/** This process's soft and hard RLIMIT_NOFILE (/proc/self/limits). */
function nofile(): [soft: string, hard: string] {
  const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(readFileSync("/proc/self/limits", "utf8"));
  assert.ok(m !== null, "Max open files in /proc/self/limits");
  return [m[1]!, m[2]!];
}

/** Sets this process's soft RLIMIT_NOFILE (prlimit(1); a process may lower its own). */
function setSoftNofile(soft: string, hard: string): void {
  const r = spawnSync("prlimit", [`--pid=${process.pid}`, `--nofile=${soft}:${hard}`]);
  assert.equal(r.status, 0, `prlimit: ${String(r.stderr)}`);
}

async function getFeatures(fd: number): Promise<bigint> {
  assert.ok(sendmsg(fd, encodeMessage(R.GET_FEATURES, 1, new Uint8Array(0))));
  const reply = await receive(fd);
  assert.notEqual(reply, "eof");
  const bytes = reply as Uint8Array;
  assert.deepEqual(decodeHeader(bytes), { request: R.GET_FEATURES, flags: 5, size: 8 });
  return decodeU64(bytes.subarray(12));
}

describe("VhostUserServer", { timeout: 20_000 }, () => {
  test("one front-end at a time, reconnect, close removes the socket; nothing leaks", async (t) => {
    const dir = tempDir("virtio-ts-vu-");
    t.after(dir.remove);
    const path = join(dir.path, "vu.sock");
    const fdsBefore = fdSnapshot();
    const watchesBefore = watchCount();
    const logs: string[] = [];
    const conns: VhostUserConnection[] = [];
    const backend = new RecordingBackend({ numQueues: 1 });
    const server = new VhostUserServer({
      path,
      backend,
      dataplane: nativeTestDataplane(backend),
      log: (l) => logs.push(l),
      onConnection: (c) => conns.push(c),
    });
    t.after(() => server.close());

    const a = connectUnix(path);
    assert.equal(await getFeatures(a), 0x1_4000_0000n);
    const b = connectUnix(path);
    assert.equal(await receive(b), "eof", "a second front-end is refused");
    close(b);
    assert.match(logs.join("\n"), /refusing a second front-end/);

    close(a); // QEMU goes away (or restarts)
    await within(conns[0]!.closed, 5000, "first connection closed");
    const c = connectUnix(path);
    assert.equal(await getFeatures(c), 0x1_4000_0000n, "the next front-end is served");
    assert.equal(conns.length, 2);

    await server.close();
    assert.equal(await receive(c), "eof");
    close(c);
    assert.equal(existsSync(path), false, "the socket file is removed");
    assert.deepEqual(fdsOpenedSince(fdsBefore), []);
    assert.equal(watchCount(), watchesBefore);
  });

  test("a stale socket file is replaced; a live one or a regular file is not", async (t) => {
    const dir = tempDir("virtio-ts-vu-");
    t.after(dir.remove);
    const path = join(dir.path, "vu.sock");
    close(listenUnix(path)); // leaves a socket file nobody answers on
    const backend = new RecordingBackend({ numQueues: 1 });
    const dataplane = nativeTestDataplane(backend);
    const server = new VhostUserServer({ path, backend, dataplane, log: () => {} });
    t.after(() => server.close());
    assert.throws(
      () => new VhostUserServer({ path, backend, dataplane, log: () => {} }),
      (e: unknown) => isNativeError(e, "EADDRINUSE"),
    );
    const file = join(dir.path, "not-a-socket");
    writeFileSync(file, "keep me");
    assert.throws(() => new VhostUserServer({ path: file, backend, dataplane, log: () => {} }));
    assert.equal(existsSync(file), true);
    await server.close();
  });

  test("a connected fd (socketpair) is served as the one connection; done when it ends", async () => {
    const fdsBefore = fdSnapshot();
    const watchesBefore = watchCount();
    const [vmm, backendEnd] = socketPair();
    const logs: string[] = [];
    const conns: VhostUserConnection[] = [];
    const backend = new RecordingBackend({ numQueues: 1 });
    const server = new VhostUserServer({
      connectedFd: backendEnd,
      backend,
      dataplane: nativeTestDataplane(backend),
      log: (l) => logs.push(l),
      onConnection: (c) => conns.push(c),
    });
    assert.equal(server.path, undefined);
    assert.equal(conns.length, 1, "the connection starts at once");
    assert.equal(await getFeatures(vmm), 0x1_4000_0000n);
    close(vmm);
    assert.equal(await within(server.done, 5000, "server done"), undefined);
    assert.equal(server.connection, undefined);
    await server.close();
    assert.deepEqual(fdsOpenedSince(fdsBefore), [], "the connected fd is closed");
    assert.equal(watchCount(), watchesBefore);
    assert.deepEqual(logs, ["vhost-user: front-end disconnected"]);
  });

  test("a connected socket given as listenFd: one line, done with the error, no accept loop", async () => {
    const fdsBefore = fdSnapshot();
    const [peer, notListening] = socketPair();
    const logs: string[] = [];
    const backend = new RecordingBackend({ numQueues: 1 });
    const server = new VhostUserServer({
      listenFd: notListening,
      backend,
      dataplane: nativeTestDataplane(backend),
      log: (l) => logs.push(l),
    });
    assert.ok(sendmsg(peer, Buffer.from("readable"))); // the listener's watch fires
    const error = await within(server.done, 5000, "server done");
    assert.match(error?.message ?? "", /^accept failed, no longer listening: accept4 EINVAL: /);
    await sleep(100);
    assert.deepEqual(logs, [`vhost-user: ${error!.message}`], "exactly one line");
    await server.close();
    close(peer);
    assert.deepEqual(fdsOpenedSince(fdsBefore), []);
  });

  test("exactly one of path, listenFd and connectedFd", () => {
    const backend = new RecordingBackend({ numQueues: 1 });
    const dataplane = nativeTestDataplane(backend);
    for (const where of [{}, { listenFd: 5, connectedFd: 6 }, { path: "/x", connectedFd: 6 }])
      assert.throws(() => new VhostUserServer({ backend, dataplane, ...where }), TypeError);
  });

  test("accept out of fds (EMFILE): a few lines with a growing pause, then the front-end is served", async (t) => {
    const dir = tempDir("virtio-ts-vu-");
    t.after(dir.remove);
    const path = join(dir.path, "vu.sock");
    const logs: string[] = [];
    const backend = new RecordingBackend({ numQueues: 1 });
    const server = new VhostUserServer({
      path,
      backend,
      dataplane: nativeTestDataplane(backend),
      log: (l) => logs.push(l),
      acceptBackoffMs: [10, 40],
    });
    t.after(() => server.close());
    const [soft, hard] = nofile();
    const fillers: number[] = [];
    let client: number;
    try {
      setSoftNofile(String(Math.max(...fdSnapshot().keys()) + 64), hard);
      for (;;) {
        try {
          fillers.push(eventfd());
        } catch (e) {
          assert.ok(isNativeError(e, "EMFILE"), String(e));
          break;
        }
      }
      close(fillers.pop()!);
      client = connectUnix(path); // takes the last free fd: the server cannot accept it
      await sleep(300);
    } finally {
      for (const fd of fillers) close(fd);
      setSoftNofile(soft, hard);
    }
    const pauses = logs.filter((l) =>
      /^vhost-user: accept: accept4 EMFILE: .*; retrying in \d+ ms$/.test(l),
    );
    assert.ok(
      pauses.length >= 2 && pauses.length <= 12,
      `a few lines, not a loop: ${logs.join("\n")}`,
    );
    assert.deepEqual(
      pauses.slice(0, 3).map((l) => Number(/in (\d+) ms/.exec(l)![1])),
      [10, 20, 40],
      "the pause doubles up to its maximum",
    );
    assert.equal(await getFeatures(client), 0x1_4000_0000n, "served once fds are free again");
    close(client);
    assert.equal(logs.length, pauses.length, logs.join("\n"));
  });
});

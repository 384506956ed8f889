import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { bindUnixDatagram, close, recvmsg } from "../native/index.ts";
import { tempDir } from "../native/test-support.ts";
import { CommandError } from "./commands/command.ts";
import { Pidfile, ServiceNotifier } from "./service.ts";

/** The pid of a process that has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ["-e", ""]);
  assert.equal(r.status, 0);
  return r.pid;
}

for (const kind of ["path", "abstract"] as const) {
  test(`ServiceNotifier sends KEY=VALUE lines as one datagram to a ${kind} address`, (t) => {
    const d = tempDir();
    t.after(d.remove);
    const address = kind === "path" ? join(d.path, "notify") : `@virtio-ts-notify-${process.pid}`;
    const receiver = bindUnixDatagram(address);
    t.after(() => close(receiver));
    const warnings: string[] = [];
    const n = new ServiceNotifier(address, (l) => warnings.push(l));
    assert.equal(n.enabled, true);
    n.notify({ READY: 1, STATUS: "serving 2 exports\nnow", MAINPID: 42 });
    n.notify({ STOPPING: 1 });
    assert.equal(
      recvmsg(receiver, 256, 0)?.bytes.toString(),
      "READY=1\nSTATUS=serving 2 exports now\nMAINPID=42\n",
    );
    assert.equal(recvmsg(receiver, 256, 0)?.bytes.toString(), "STOPPING=1\n");
    assert.equal(recvmsg(receiver, 256, 0), null);
    assert.deepEqual(warnings, []);
  });
}

test("ServiceNotifier: nothing without $NOTIFY_SOCKET; a failing socket is one warning, never an exception", () => {
  let sent = 0;
  for (const address of [undefined, ""]) {
    const n = new ServiceNotifier(
      address,
      () => assert.fail("no warning"),
      () => sent++,
    );
    n.notify({ READY: 1 });
    assert.equal(n.enabled, false);
  }
  assert.equal(sent, 0);
  const warnings: string[] = [];
  const n = new ServiceNotifier("/nonexistent/notify", (l) => warnings.push(l));
  n.notify({ READY: 1 });
  n.notify({ STOPPING: 1 });
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!, /^NOTIFY_SOCKET \/nonexistent\/notify: sendto ENOENT: /);
});

test("Pidfile: written atomically once asked, removed again; a stale file is replaced", (t) => {
  const d = tempDir();
  t.after(d.remove);
  const path = join(d.path, "blk.pid");
  const p = new Pidfile(path, 4242);
  assert.equal(existsSync(path), false, "nothing written before write()");
  p.write();
  assert.equal(readFileSync(path, "utf8"), "4242\n");
  assert.deepEqual(readdirSync(d.path), ["blk.pid"], "no temporary file left");
  p.remove();
  assert.equal(existsSync(path), false);

  writeFileSync(path, `${deadPid()}\n`);
  const q = new Pidfile(path, 4243);
  q.write();
  assert.equal(readFileSync(path, "utf8"), "4243\n", "the stale pid is replaced");
  writeFileSync(path, "5555\n"); // someone else's now
  q.remove();
  assert.equal(readFileSync(path, "utf8"), "5555\n", "a file naming another process is kept");
});

test("Pidfile refuses a running process's file, a file with no pid, a missing directory: one line each", (t) => {
  const d = tempDir();
  t.after(d.remove);
  const path = join(d.path, "blk.pid");
  const refused = (pid: number, expected: RegExp, at = path): void =>
    assert.throws(
      () => new Pidfile(at, pid),
      (e: unknown) =>
        e instanceof CommandError && expected.test(e.message) && !e.message.includes("\n"),
    );
  writeFileSync(path, `${process.pid}\n`);
  refused(1_000_001, new RegExp(`^pidfile ${path}: process ${process.pid} is running$`));
  assert.doesNotThrow(() => new Pidfile(path, process.pid), "its own pid is not another process");
  writeFileSync(path, "root:x:0:0\n");
  refused(7, /: exists and holds no process id \(not replaced\)$/);
  assert.equal(readFileSync(path, "utf8"), "root:x:0:0\n");
  refused(7, /: its directory does not exist$/, join(d.path, "no", "blk.pid"));
  mkdirSync(join(d.path, "dir.pid"));
  refused(7, /^pidfile \S+dir\.pid: EISDIR: /, join(d.path, "dir.pid"));
});

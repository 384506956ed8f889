/**
 * Unit tests of the real-guest harness's parts that need no QEMU: the cpio
 * "newc" writer, the per-run archive, the kernel-module ELF reader, the
 * serial-log parser and backend readiness/stop.
 *
 * @module
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { isUnixListening, spawnBackend } from "./guest/backends.ts";
import { CpioWriter, readCpio, S_IFCHR, S_IFDIR, S_IFLNK, S_IFREG } from "./guest/cpio.ts";
import { runArchive } from "./guest/initramfs.ts";
import { readModinfo } from "./guest/modules.ts";
import { parseSerialLog } from "./guest/runner.ts";

test("cpio: header layout of one file matches the newc format byte for byte", () => {
  const a = new CpioWriter().file("x", "hi", 0o644).finish();
  const name = "x\0";
  const header =
    "070701" +
    [1, S_IFREG | 0o644, 0, 0, 1, 0, 2, 0, 0, 0, 0, name.length, 0]
      .map((n) => n.toString(16).padStart(8, "0"))
      .join("");
  // 110 + 2 name bytes -> padded to 112; 2 data bytes -> padded to 4.
  assert.equal(a.toString("latin1", 0, 110), header);
  assert.equal(a.toString("latin1", 110, 112), name);
  assert.equal(a.toString("latin1", 112, 114), "hi");
  assert.deepEqual([...a.subarray(114, 116)], [0, 0]);
  assert.equal(a.toString("latin1", 116, 122), "070701");
  assert.equal(a.length % 4, 0);
});

test("cpio: round trip with parents first, symlinks, devices and the trailer", () => {
  const data = Buffer.from([1, 2, 3, 4, 5]);
  const a = new CpioWriter()
    .file("/usr/lib/x/lib.so", data, 0o755)
    .symlink("bin/sh", "/bin/busybox")
    .charDevice("dev/console", 5, 1)
    .dir("usr/lib") // already present: no second entry
    .finish();
  const e = readCpio(a);
  assert.deepEqual(
    e.map((x) => x.name),
    ["usr", "usr/lib", "usr/lib/x", "usr/lib/x/lib.so", "bin", "bin/sh", "dev", "dev/console"],
  );
  const byName = new Map(e.map((x) => [x.name, x]));
  assert.equal(byName.get("usr")?.mode, S_IFDIR | 0o755);
  assert.deepEqual(byName.get("usr/lib/x/lib.so")?.data, data);
  assert.equal(byName.get("bin/sh")?.mode, S_IFLNK | 0o777);
  assert.equal(byName.get("bin/sh")?.data.toString(), "/bin/busybox");
  const con = byName.get("dev/console");
  assert.equal(con?.mode, S_IFCHR | 0o600);
  assert.deepEqual([con?.rdevmajor, con?.rdevminor], [5, 1]);
  assert.equal(new Set(e.map((x) => x.ino)).size, e.length, "inode numbers are unique");
});

test("cpio: misuse is rejected", () => {
  const w = new CpioWriter().file("a", "1");
  assert.throws(() => w.file("a", "2"), RangeError);
  assert.throws(() => w.dir("a"), RangeError);
  assert.throws(() => w.file("../etc/passwd", ""), RangeError);
  assert.throws(() => w.file("/", ""), RangeError);
  w.finish();
  assert.throws(() => w.file("b", ""), TypeError);
  assert.throws(() =>
    readCpio(Buffer.from("not an archive, long enough to hold a header".repeat(3))),
  );
});

test("run archive: config, steps with their boot, and files", () => {
  const gz = runArchive({
    boots: 2,
    disks: 2,
    steps: [
      { name: "write", sh: "echo one" },
      { name: "check", sh: "echo two", boot: 2 },
    ],
    files: { pattern: Buffer.from([9, 9]) },
  });
  const files = new Map(readCpio(gunzipSync(gz)).map((e) => [e.name, e.data.toString("latin1")]));
  assert.equal(files.get("vts/run.conf"), "VTS_BOOTS=2\nVTS_DISKS=2\n");
  assert.equal(files.get("vts/steps.list"), "1 write 000.sh\n2 check 001.sh\n");
  assert.equal(files.get("vts/steps/001.sh"), "set -e -o pipefail\necho two\n");
  assert.equal(files.get("vts/files/pattern"), "\x09\x09");
});

test("run archive: invalid step names, boots and duplicates are rejected", () => {
  const bad = (steps: { name: string; sh: string; boot?: number }[], boots = 1): void => {
    assert.throws(() => runArchive({ steps, boots, disks: 0 }), RangeError);
  };
  bad([{ name: "has space", sh: "" }]);
  bad([{ name: "x", sh: "", boot: 2 }]);
  bad([{ name: "x", sh: "", boot: 0 }], 2);
  bad([
    { name: "x", sh: "" },
    { name: "x", sh: "" },
  ]);
  assert.throws(() => runArchive({ steps: [], boots: 0, disks: 0 }), RangeError);
});

/** A minimal ELF64 LE file with a .modinfo section (and its string table). */
function fakeModule(modinfo: string): Buffer {
  const shstr = Buffer.from("\0.modinfo\0.shstrtab\0", "latin1");
  const info = Buffer.from(modinfo, "latin1");
  const shoff = 64 + shstr.length + info.length;
  const elf = Buffer.alloc(shoff + 3 * 64);
  elf.writeUInt32BE(0x7f454c46, 0);
  elf[4] = 2; // ELFCLASS64
  elf[5] = 1; // little-endian
  elf.writeBigUInt64LE(BigInt(shoff), 0x28);
  elf.writeUInt16LE(64, 0x3a);
  elf.writeUInt16LE(3, 0x3c);
  elf.writeUInt16LE(2, 0x3e);
  shstr.copy(elf, 64);
  info.copy(elf, 64 + shstr.length);
  const sh = (i: number, name: number, off: number, size: number): void => {
    const at = shoff + i * 64;
    elf.writeUInt32LE(name, at);
    elf.writeBigUInt64LE(BigInt(off), at + 24);
    elf.writeBigUInt64LE(BigInt(size), at + 32);
  };
  sh(1, 1, 64 + shstr.length, info.length);
  sh(2, 10, 64, shstr.length);
  return elf;
}

test("modules: .modinfo keys are read from the ELF section", () => {
  const info = readModinfo(
    fakeModule("license=GPL\0depends=virtio,virtio_ring\0softdep=pre: crc32c\0"),
  );
  assert.deepEqual(info.get("depends"), ["virtio,virtio_ring"]);
  assert.deepEqual(info.get("softdep"), ["pre: crc32c"]);
  assert.throws(() => readModinfo(Buffer.alloc(100)), RangeError);
});

test("serial log: steps per boot, output, rc and kernel lines in between", () => {
  const log = [
    "[    1.0] early kernel line",
    "VTS-INIT uptime=1.50",
    "VTS-BOOT 1 of 2 disk=/dev/vda extra=none uptime=1.90",
    "VTS-BEGIN write uptime=2.00",
    "hello\r",
    "VTS-END write rc=0 uptime=2.50",
    "VTS-DONE boot=1 failed=0 uptime=2.60",
    "VTS-INIT uptime=1.40",
    "VTS-BOOT 2 of 2 disk=/dev/vda extra=none uptime=1.80",
    "VTS-BEGIN check uptime=2.10",
    "oops",
    "VTS-END check rc=3 uptime=2.20",
    "VTS-SKIP later",
    "VTS-DONE boot=2 failed=1 uptime=2.30",
  ].join("\r\n");
  const { steps, boots } = parseSerialLog(log);
  assert.deepEqual(steps, [
    { name: "write", boot: 1, rc: 0, output: "hello", began: 2, ended: 2.5 },
    { name: "check", boot: 2, rc: 3, output: "oops", began: 2.1, ended: 2.2 },
  ]);
  assert.deepEqual(boots, [
    { boot: 1, initAt: 1.5, doneAt: 2.6, failed: false },
    { boot: 2, initAt: 1.4, doneAt: 2.3, failed: true },
  ]);
});

test("serial log: a step cut off by a crash has rc null", () => {
  const { steps } = parseSerialLog("VTS-BOOT 1 of 1\nVTS-BEGIN fio uptime=3.00\nhalf\n");
  assert.deepEqual(steps, [
    { name: "fio", boot: 1, rc: null, output: "half", began: 3, ended: null },
  ]);
});

test("backends: readiness from a stdout line, clean stop by SIGTERM", async () => {
  const script = "console.log('listening on /tmp/x.sock'); setInterval(() => {}, 1000);";
  const b = await spawnBackend("fake", process.execPath, ["-e", script], "/tmp/x.sock", {
    stdoutLine: /listening on \/tmp\/x\.sock/,
  });
  assert.equal(b.status, undefined, "still running once ready");
  const s = await b.stop();
  assert.deepEqual(s, { code: null, signal: "SIGTERM" });
  assert.match(b.diagnostics(), /listening on/);
});

test("backends: a backend that exits before it is ready fails with its output", async () => {
  const script = "console.error('no such image'); process.exit(3);";
  await assert.rejects(
    spawnBackend("fake", process.execPath, ["-e", script], "/tmp/y.sock", {
      stdoutLine: /listening/,
    }),
    (e: Error) => /exited before it was ready/.test(e.message) && /no such image/.test(e.message),
  );
});

test("backends: a listening Unix socket is seen in /proc/net/unix, and not after close", async () => {
  const dir = mkdtempSync(join(tmpdir(), "vts-harness-"));
  const path = join(dir, "s.sock");
  try {
    assert.equal(isUnixListening(path), false);
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(path, resolve));
    assert.equal(isUnixListening(path), true);
    await new Promise<void>((resolve) => server.close(() => resolve()));
    assert.equal(isUnixListening(path), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

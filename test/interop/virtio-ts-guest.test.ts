/**
 * Real Linux guests against this project's CLI, `virtio-ts vhost-user-blk`:
 *
 * - the same scenarios qemu-storage-daemon passes in qsd-guest.test.ts (ext4
 *   on 1 and 2 queues with e2fsck and checksums, fio crc32c verify at
 *   iodepth 32, reboot, read-only export, host image check, backend restart
 *   with QEMU reconnect), over split virtqueues and again over packed ones
 *   (`packed=on`);
 * - the CLI's device flags as the guest sees them (--serial,
 *   --logical-block-size 4096, --writeback with the guest's FLUSH, --direct)
 *   and the --verbose trace lines;
 * - a block device as the image (a loop device): ext4, fio crc32c verify,
 *   fstrim, and the guest's DISCARD reaching the device (the loop device's
 *   backing file gets its blocks deallocated);
 * - the main job (`npm start`, scripts/guest-demo.ts) end to end.
 *
 * @module
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { execFile, spawnSync } from "node:child_process";
import {
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { promisify } from "node:util";
import { startVirtioTsCli, virtioTsCommand, withPackedRings } from "./guest/backends.ts";
import { REPO_ROOT } from "./guest/install.ts";
import { Child } from "./guest/process.ts";
import { runGuest } from "./guest/runner.ts";
import { guestScenarios, timings } from "./guest/scenarios.ts";

guestScenarios("virtio-ts vhost-user-blk", startVirtioTsCli);
guestScenarios("virtio-ts vhost-user-blk, packed virtqueues", withPackedRings(startVirtioTsCli));

const MiB = 1024 * 1024;

/** Polls until `ready()` (bounded); fails with the backend's output. */
async function until(ready: () => boolean, child: Child, what: string): Promise<void> {
  const end = Date.now() + 20_000;
  while (!ready()) {
    if (child.status || Date.now() > end) assert.fail(`${what}\n${child.diagnostics()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * ext4 without mkfs's own discard, 8 files to keep (checksummed), 24 MiB of
 * files and a 16 MiB fio file (4 KiB random writes, crc32c verify) that are
 * deleted again, then fstrim; fsck and the kept files' checksums after.
 */
const LOOP_STEPS = [
  {
    name: "device",
    sh: "q=/sys/block/${VTS_DISK#/dev/}\necho size=$(cat $q/size) discard=$(cat $q/queue/discard_max_bytes) lbs=$(cat $q/queue/logical_block_size)",
  },
  { name: "mkfs", sh: "mkfs.ext4 -q -F -E nodiscard $VTS_DISK" },
  {
    name: "write",
    sh: [
      "mount -t ext4 $VTS_DISK /mnt",
      "mkdir /mnt/keep",
      "i=1; while [ $i -le 8 ]; do dd if=/dev/urandom of=/mnt/keep/f$i bs=64k count=$i 2>/dev/null; i=$((i + 1)); done",
      "(cd /mnt/keep && sha256sum f*) > /tmp/sums",
      "i=1; while [ $i -le 6 ]; do dd if=/dev/urandom of=/mnt/big$i bs=1M count=4 2>/dev/null; i=$((i + 1)); done",
      "fio --name=verify --filename=/mnt/fio.dat --size=16M --ioengine=libaio --direct=1 --thread " +
        "--rw=randwrite --bs=4k --iodepth=16 --verify=crc32c --verify_fatal=1 --do_verify=1",
      "sync",
    ].join("\n"),
  },
  { name: "trim", sh: "rm /mnt/fio.dat /mnt/big*\nsync\nfstrim -v /mnt\numount /mnt" },
  { name: "fsck", sh: "e2fsck -f -n $VTS_DISK" },
  {
    name: "verify",
    sh: "mount -t ext4 -o ro $VTS_DISK /mnt\ncd /mnt/keep\nsha256sum -c -s /tmp/sums\necho verified $(wc -l < /tmp/sums) files\ncd /\numount /mnt",
  },
];

describe("virtio-ts CLI in a real guest", () => {
  test(
    "--serial, --logical-block-size 4096, --writeback (FLUSH), --direct, --verbose trace",
    { timeout: 300_000 },
    async (t) => {
      const dir = mkdtempSync(join(tmpdir(), "vts-cli-guest-"));
      const image = join(dir, "disk.img");
      const socket = join(dir, "vhost-user.sock");
      writeFileSync(image, "");
      truncateSync(image, 64 * MiB);
      const chunk = randomBytes(64 * 1024);
      const { cmd, args } = virtioTsCommand();
      const serial = "vts-cli-flags";
      const backend = new Child("virtio-ts", cmd, [
        ...args,
        "vhost-user-blk",
        ...["--socket", socket, "--image", image, "--serial", serial],
        ...["--logical-block-size", "4096", "--writeback", "--direct", "--verbose"],
      ]);
      t.after(() => backend.stop());
      await until(() => /listening on /.test(backend.stdout.text()), backend, "not listening");
      const r = await runGuest({
        disk: { kind: "vhost-user", socket, numQueues: 1 },
        files: { chunk },
        timeoutMs: 120_000,
        diagnostics: () => backend.diagnostics(),
        abortIf: () => (backend.status ? "virtio-ts exited" : undefined),
        steps: [
          {
            name: "device",
            sh: "d=${VTS_DISK#/dev/}; q=/sys/block/$d\necho serial=$(cat $q/serial) lbs=$(cat $q/queue/logical_block_size) cache=$(cat $q/queue/write_cache | tr ' ' -)",
          },
          {
            // conv=fsync: the guest flushes its (writeback) cache: a FLUSH request.
            name: "write",
            sh: "dd if=/vts/files/chunk of=$VTS_DISK bs=4096 seek=256 oflag=direct conv=notrunc,fsync\ndd if=$VTS_DISK bs=4096 skip=256 count=16 iflag=direct 2>/dev/null | cmp - /vts/files/chunk\necho write-ok",
          },
        ],
      });
      t.diagnostic(timings(r));
      assert.match(
        r.step("device").output,
        new RegExp(`serial=${serial} lbs=4096 cache=write-back`),
      );
      assert.match(r.step("write").output, /write-ok/);
      const stopped = await backend.stop();
      assert.deepEqual(stopped, { code: 0, signal: null }, backend.diagnostics());
      assert.ok(
        readFileSync(image)
          .subarray(MiB, MiB + chunk.length)
          .equals(chunk),
      );
      const err = backend.stderr.text();
      assert.match(err, /^conn 1: virtqueue_pop vq 0 head \d+ in_num \d+ out_num \d+$/m);
      assert.match(err, /^conn 1: virtio_blk_submit vq 0 req \d+ type OUT sector 2048 len 4096 /m);
      assert.match(err, /^conn 1: virtio_blk_submit vq 0 req \d+ type FLUSH /m);
      assert.match(err, /^conn 1: virtio_blk_req_complete vq 0 req \d+ status 0 len \d+$/m);
      assert.match(err, /^virtio-ts: conn 1: front-end connected$/m);
      assert.equal(existsSync(socket), false);
      rmSync(dir, { recursive: true, force: true });
    },
  );

  test(
    "a loop device as the image: ext4, fio verify, fstrim reaches the device",
    { timeout: 400_000 },
    async (t) => {
      const dir = mkdtempSync(join(tmpdir(), "vts-loop-guest-"));
      const file = join(dir, "loop.img");
      writeFileSync(file, "");
      truncateSync(file, 128 * MiB);
      const lo = spawnSync("losetup", ["--find", "--show", file], { encoding: "utf8" });
      assert.equal(
        lo.status,
        0,
        `losetup failed (this test needs root and loop devices): ${lo.stderr || lo.error?.message}`,
      );
      const dev = lo.stdout.trim();
      try {
        const backend = await startVirtioTsCli({
          socketPath: join(dir, "vhost-user.sock"),
          imagePath: dev,
          numQueues: 1,
        });
        let r;
        try {
          r = await runGuest({
            disk: { kind: "vhost-user", socket: backend.socketPath, numQueues: 1 },
            fio: true,
            timeoutMs: 300_000,
            diagnostics: () => backend.diagnostics(),
            abortIf: () => (backend.status ? "virtio-ts exited" : undefined),
            steps: LOOP_STEPS,
          });
        } finally {
          const stopped = await backend.stop();
          assert.deepEqual(stopped, { code: 0, signal: null }, backend.diagnostics());
        }
        t.diagnostic(timings(r));
        assert.match(r.step("device").output, new RegExp(`size=${(128 * MiB) / 512} `));
        assert.ok(
          Number(/discard=(\d+)/.exec(r.step("device").output)?.[1]) > 0,
          `the guest sees a discarding disk:\n${r.step("device").output}`,
        );
        const fio = r.step("write").output;
        assert.match(fio, /err= 0/, fio);
        assert.match(fio, /issued rwts: total=4096,4096/, fio);
        const trimmed = Number(/(\d+) bytes trimmed/.exec(r.step("trim").output)?.[1]);
        assert.ok(trimmed >= 40 * MiB, `fstrim trimmed ${trimmed} bytes`);
        assert.match(r.step("verify").output, /verified 8 files/);
        // The guest wrote 40 MiB it then deleted, and at most ~10 MiB it kept
        // (files, journal, metadata): only DISCARD reaching the loop device,
        // which punches holes in its file, brings the file below that.
        const allocated = statSync(file).blocks * 512;
        t.diagnostic(`loop file allocated after fstrim: ${(allocated / MiB).toFixed(1)} MiB`);
        assert.ok(
          allocated < 24 * MiB,
          `DISCARD reached the device: ${allocated} bytes still allocated`,
        );
      } finally {
        spawnSync("losetup", ["-d", dev]);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  );

  test("the main job (npm start) runs end to end", { timeout: 600_000 }, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "vts-demo-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ["--import", "tsx", join(REPO_ROOT, "scripts", "guest-demo.ts")],
      { cwd: REPO_ROOT, env: { ...process.env, VIRTIO_TS_DEMO_DIR: dir }, timeout: 540_000 },
    );
    assert.match(stdout, /write cache: write through/);
    assert.match(stdout, /sha256 of all \d+ verified after a remount; e2fsck clean/);
    assert.match(stdout, /crc32c verify of 8192 blocks passed/);
    assert.match(stdout, /\/hello\.txt read from the image: "Hello from the guest/);
    assert.match(stdout, /backend stopped on SIGTERM \(exit 0\), socket removed/);
    assert.equal(existsSync(join(dir, "vhost-user-blk.sock")), false);
    const line = stdout.split("\n").find((l) => l.startsWith("  total"));
    t.diagnostic(`main job: ${line?.trim() ?? "?"}`);
  });
});

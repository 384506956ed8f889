/**
 * The guest runner's own behaviour with a real guest: a second setup uses
 * the cache (no apt, no download), QEMU's built-in virtio-blk disk (the
 * benchmark baseline) reads and writes the image, a failing step fails the
 * run with its output and skips the rest, and a hung guest is killed at the
 * deadline.
 *
 * @module
 */
import { before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureInitramfs } from "./guest/initramfs.ts";
import {
  ensureGuestPrereqs,
  guestCacheDir,
  REPO_ROOT,
  run,
  type GuestPrereqs,
} from "./guest/install.ts";
import { GuestRunError, runGuest } from "./guest/runner.ts";
import { timings } from "./guest/scenarios.ts";

const MiB = 1024 * 1024;

describe("guest runner", () => {
  before(
    async () => {
      const { kernel } = await ensureGuestPrereqs();
      await ensureInitramfs(kernel);
    },
    { timeout: 30 * 60_000 },
  );

  test(
    "setup again in a new process installs nothing and downloads nothing",
    { timeout: 120_000 },
    async () => {
      const code =
        "import('./test/interop/guest/install.ts')" +
        ".then((m) => m.ensureGuestPrereqs())" +
        ".then((r) => process.stdout.write(JSON.stringify(r)))";
      const out = await run(process.execPath, ["--import", "tsx", "-e", code], {
        cwd: REPO_ROOT,
        timeoutMs: 100_000,
      });
      const r = JSON.parse(out) as GuestPrereqs;
      assert.deepEqual(r.installed, []);
      assert.equal(r.kernelDownloaded, false);
      assert.ok(r.kernel.bootImage.startsWith(guestCacheDir()), r.kernel.bootImage);
    },
  );

  test(
    "QEMU's virtio-blk (io_uring, 2 queues): guest reads host data, host sees guest writes",
    { timeout: 180_000 },
    async (t) => {
      const dir = mkdtempSync(join(tmpdir(), "vts-runner-"));
      try {
        const image = join(dir, "disk.img");
        const hostData = randomBytes(MiB);
        const guestData = randomBytes(64 * 1024);
        writeFileSync(image, hostData);
        truncateSync(image, 32 * MiB);
        const r = await runGuest({
          disk: { kind: "virtio-blk", image, numQueues: 2, aio: "io_uring", cache: "writeback" },
          smp: 2,
          files: { host: hostData, guest: guestData },
          timeoutMs: 120_000,
          steps: [
            { name: "queues", sh: "ls /sys/block/${VTS_DISK#/dev/}/mq | wc -l" },
            {
              name: "read",
              sh: "dd if=$VTS_DISK bs=64k count=16 iflag=direct 2>/dev/null | cmp - /vts/files/host",
            },
            {
              name: "write",
              sh: "dd if=/vts/files/guest of=$VTS_DISK bs=4096 seek=4096 oflag=direct conv=notrunc,fsync",
            },
          ],
        });
        t.diagnostic(timings(r));
        assert.equal(r.exitCode, 0);
        assert.equal(r.step("queues").output.trim(), "2");
        const after = readFileSync(image);
        assert.ok(after.subarray(0, MiB).equals(hostData), "host data intact");
        assert.ok(
          after.subarray(16 * MiB, 16 * MiB + guestData.length).equals(guestData),
          "guest write landed",
        );
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );

  test(
    "a failing step fails the run with its output; later steps are skipped",
    { timeout: 180_000 },
    async () => {
      const err = await runGuest({
        keepOnFailure: false,
        timeoutMs: 120_000,
        steps: [
          { name: "ok", sh: "echo fine" },
          { name: "bad", sh: "echo about-to-fail\nfalse\necho not-reached" },
          { name: "after", sh: "echo must-not-run" },
        ],
      }).then(
        () => assert.fail("the run should fail"),
        (e: unknown) => e,
      );
      assert.ok(err instanceof GuestRunError, String(err));
      assert.match(err.message, /step bad \(boot 1\) failed with rc=1/);
      assert.match(err.message, /about-to-fail/);
      assert.doesNotMatch(err.message, /not-reached/);
      assert.match(err.serialLog, /VTS-SKIP after/);
      assert.doesNotMatch(err.serialLog, /must-not-run\r?\n/);
    },
  );

  test(
    "a guest that never powers off is killed at the deadline",
    { timeout: 120_000 },
    async () => {
      const err = await runGuest({
        keepOnFailure: false,
        timeoutMs: 20_000,
        steps: [{ name: "hang", sh: "echo hanging\nwhile :; do sleep 1; done" }],
      }).then(
        () => assert.fail("the run should time out"),
        (e: unknown) => e,
      );
      assert.ok(err instanceof GuestRunError, String(err));
      assert.match(err.message, /timed out/);
      assert.match(err.serialLog, /VTS-BEGIN hang/, "the deadline hit while the step ran");
      assert.doesNotMatch(err.serialLog, /VTS-END hang/);
    },
  );
});

/**
 * FileBacking on real block devices: loop devices over sparse files in a
 * temporary directory (`losetup`, root). DISCARD reaching the device shows
 * as the backing file's allocated blocks shrinking (the loop driver punches
 * holes in it).
 */
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ErrorCode, isVirtioError } from "../../errors.ts";
import { silentLogger } from "../../log.ts";
import { FileBacking, type FileBackingOptions } from "./file-backing.ts";

const MiB = 1 << 20;
const tmp = mkdtempSync(join(tmpdir(), "virtio-ts-blockdev-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  if (r.status !== 0)
    throw new Error(
      `${cmd} ${args.join(" ")} failed (${r.error?.message ?? `exit ${r.status}`}): ${r.stderr.trim()}` +
        (cmd === "losetup" ? " (the block-device tests need root and loop devices)" : ""),
    );
  return r.stdout.trim();
}

let n = 0;
/** A sparse file of `bytes` attached to a free loop device; `fn` gets both; always detached. */
async function withLoop(
  bytes: number,
  sectorSize: 512 | 4096,
  fn: (dev: string, file: string) => Promise<void>,
): Promise<void> {
  const file = join(tmp, `loop-${n++}.img`);
  writeFileSync(file, "");
  run("truncate", ["-s", String(bytes), file]);
  const dev = run("losetup", ["--find", "--show", "--sector-size", String(sectorSize), file]);
  try {
    await fn(dev, file);
  } finally {
    spawnSync("losetup", ["-d", dev]);
  }
}

/** Bytes the file system holds for `file` (holes are not counted). */
const allocated = (file: string): number => statSync(file).blocks * 512;

function pattern(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (i * 131 + seed * 17 + (i >>> 12)) & 0xff;
  return b;
}

const imageErr = (re: RegExp) => (e: unknown) =>
  isVirtioError(e, ErrorCode.BLK_IMAGE) && re.test(e.message) && !e.message.includes("\n");

const open = (dev: string, o: FileBackingOptions = {}): Promise<FileBacking> =>
  FileBacking.open(dev, { logger: silentLogger, ...o });

describe("FileBacking on a loop device", () => {
  for (const direct of [false, true]) {
    test(`read, write, flush, DISCARD, WRITE_ZEROES (direct ${direct ? "on" : "off"})`, async () => {
      await withLoop(16 * MiB, 512, async (dev, file) => {
        const f = await open(dev, { direct });
        try {
          assert.equal(f.blockDevice, true);
          assert.equal(f.size, 16 * MiB);
          const data = pattern(4 * MiB, direct ? 2 : 1);
          // Views at odd offsets: under O_DIRECT some go through the bounce buffer.
          const sab = new Uint8Array(new SharedArrayBuffer(4 * MiB + 64));
          sab.set(data, 7);
          await f.writev(MiB, [
            sab.subarray(7, 7 + 3 * MiB),
            sab.subarray(7 + 3 * MiB, 7 + 4 * MiB),
          ]);
          await f.flush();
          const back = new Uint8Array(4 * MiB);
          await f.readv(MiB, [back]);
          assert.deepEqual(back, data);
          assert.deepEqual(new Uint8Array(readFileSync(file)).subarray(MiB, 5 * MiB), data);
          const before = allocated(file);
          assert.ok(before >= 4 * MiB, `the written range is allocated (${before})`);

          // DISCARD → BLKDISCARD → the loop driver punches a hole in the file.
          await f.discard(MiB, 2 * MiB);
          await f.flush();
          const afterDiscard = allocated(file);
          assert.ok(
            afterDiscard <= before - 2 * MiB,
            `DISCARD reached the file: allocated ${before} → ${afterDiscard}`,
          );

          // WRITE_ZEROES → BLKZEROOUT: reads return zeroes, through the device and in the file.
          await f.writeZeroes(3 * MiB + 4096, 64 * 1024, false);
          await f.writeZeroes(4 * MiB, 512 * 1024, true);
          await f.flush();
          const z = new Uint8Array(4 * MiB);
          await f.readv(MiB, [z]);
          const file2 = new Uint8Array(readFileSync(file)).subarray(MiB, 5 * MiB);
          for (const view of [z, file2]) {
            assert.ok(view.subarray(2 * MiB + 4096, 2 * MiB + 4096 + 65536).every((x) => x === 0));
            assert.ok(view.subarray(3 * MiB, 3 * MiB + 512 * 1024).every((x) => x === 0));
            assert.deepEqual(
              view.subarray(2 * MiB, 2 * MiB + 4096),
              data.subarray(2 * MiB, 2 * MiB + 4096),
            );
            assert.deepEqual(
              view.subarray(3 * MiB + 512 * 1024),
              data.subarray(3 * MiB + 512 * 1024),
            );
          }
          await assert.rejects(f.resize(32 * MiB), /is a block device: its size cannot be changed/);
        } finally {
          await f.close();
        }
      });
    });
  }

  test("4096-byte sectors: served with 4096-byte blocks, refused with smaller ones", async () => {
    await withLoop(8 * MiB, 4096, async (dev) => {
      await assert.rejects(
        open(dev),
        imageErr(
          /^disk image \/dev\/loop\d+: has 4096-byte logical blocks, larger than the 512-byte blocks it would be served with: serve it with a logical block size of 4096 or more \(--logical-block-size 4096\)$/,
        ),
      );
      for (const direct of [false, true]) {
        const f = await open(dev, { logicalBlockSize: 4096, direct });
        try {
          const data = pattern(64 * 1024, 5);
          const buf = new Uint8Array(new ArrayBuffer(64 * 1024 + 100), 100, 64 * 1024);
          buf.set(data);
          await f.writev(8192, [buf]);
          await f.flush();
          const back = new Uint8Array(64 * 1024);
          await f.readv(8192, [back]);
          assert.deepEqual(back, data);
          await f.discard(8192, 32 * 1024);
          await f.writeZeroes(8192 + 32 * 1024, 4096, false);
          await f.readv(8192 + 32 * 1024, [back.subarray(0, 8192)]);
          assert.ok(back.subarray(0, 4096).every((x) => x === 0));
          assert.deepEqual(back.subarray(4096, 8192), data.subarray(36 * 1024, 40 * 1024));
        } finally {
          await f.close();
        }
      }
    });
  });

  test("fallocate: null leaves out the ioctls: DISCARD does nothing, WRITE_ZEROES writes zeroes", async () => {
    await withLoop(8 * MiB, 512, async (dev, file) => {
      const f = await open(dev, { fallocate: null });
      try {
        await f.writev(0, [pattern(2 * MiB, 9)]);
        await f.flush();
        const before = allocated(file);
        await f.discard(0, MiB);
        await f.flush();
        assert.equal(allocated(file), before, "nothing deallocated");
        await f.writeZeroes(MiB, 256 * 1024, true);
        await f.flush();
        const z = new Uint8Array(256 * 1024);
        await f.readv(MiB, [z]);
        assert.ok(z.every((x) => x === 0));
      } finally {
        await f.close();
      }
    });
  });

  test("a device in use is refused for writing with one line; read-only opens still work", async () => {
    await withLoop(16 * MiB, 512, async (dev) => {
      const busy =
        /^disk image \/dev\/loop\d+: is a block device in use \(mounted, or held by another program\); unmount or release it first$/;
      const first = await open(dev);
      try {
        await assert.rejects(open(dev), imageErr(busy));
        const ro = await open(dev, { readOnly: true });
        await ro.close();
      } finally {
        await first.close();
      }
      run("mkfs.ext4", ["-q", dev]);
      const mnt = join(tmp, `mnt-${n++}`);
      mkdirSync(mnt);
      run("mount", [dev, mnt]);
      try {
        await assert.rejects(open(dev), imageErr(busy));
        await assert.rejects(open(dev, { direct: true }), imageErr(busy));
        const ro = await open(dev, { readOnly: true });
        assert.equal(ro.size, 16 * MiB);
        await ro.close();
      } finally {
        run("umount", [mnt]);
      }
      // Unmounted, it opens for writing again.
      const again = await open(dev);
      await again.close();
    });
  });

  test("a device holding a qcow2 image is refused unless format is raw", async () => {
    await withLoop(8 * MiB, 512, async (dev, file) => {
      const hdr = new Uint8Array(512);
      hdr.set([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3]);
      const fd = openSync(file, "r+");
      writeSync(fd, hdr, 0, 512, 0);
      closeSync(fd);
      run("blockdev", ["--flushbufs", dev]);
      await assert.rejects(
        open(dev),
        imageErr(/: is a qcow2 image, not raw: serve it through qemu-nbd/),
      );
      const raw = await open(dev, { format: "raw" });
      await raw.close();
    });
  });
});

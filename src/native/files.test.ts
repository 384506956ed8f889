import { test } from "node:test";
import assert from "node:assert/strict";
import {
  closeSync,
  constants,
  fstatSync,
  fsyncSync,
  openSync,
  readdirSync,
  readSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import {
  addSeals,
  blockDeviceInfo,
  blockDiscard,
  blockZeroOut,
  directIoAlignment,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  fallocate,
  ftruncate,
  getSeals,
  memfdCreate,
  MFD_ALLOW_SEALING,
  punchHole,
  zeroRange,
} from "./files.ts";
import { isNativeError } from "./native-error.ts";
import { close } from "./sockets.ts";
import {
  fdFlags,
  fdsOpenedSince,
  fdSnapshot,
  fdTarget,
  O_CLOEXEC,
  tempDir,
} from "./test-support.ts";

const KiB = 1024;
const code = (errnoCode: string) => (e: unknown) => isNativeError(e, errnoCode);

function readAll(fd: number, position: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  assert.equal(readSync(fd, buf, 0, length, position), length);
  return buf;
}

/** A temporary file (on the machine's temp file system) with `size` bytes of `fill`. */
function withFile(size: number, fill: number, body: (fd: number, path: string) => void): void {
  const dir = tempDir();
  const path = join(dir.path, "disk.img");
  const fd = openSync(path, "w+");
  try {
    writeSync(fd, Buffer.alloc(size, fill), 0, size, 0);
    fsyncSync(fd);
    body(fd, path);
  } finally {
    closeSync(fd);
    dir.remove();
  }
}

test("memfdCreate makes a CLOEXEC anonymous file that ftruncate sizes", () => {
  const before = fdSnapshot();
  const fd = memfdCreate("guest-ram");
  assert.equal(fdTarget(fd), "/memfd:guest-ram (deleted)");
  assert.equal(fdFlags(fd) & O_CLOEXEC, O_CLOEXEC);
  assert.equal(fstatSync(fd).size, 0);
  ftruncate(fd, 3 * 2 ** 30); // sparse: no memory is used
  assert.equal(fstatSync(fd).size, 3 * 2 ** 30);
  ftruncate(fd, 10);
  assert.equal(fstatSync(fd).size, 10);
  assert.throws(() => ftruncate(fd, -1), RangeError);
  assert.throws(
    () => memfdCreate("x", 1),
    RangeError,
    "MFD_CLOEXEC is implied, other bits refused",
  );
  assert.throws(() => memfdCreate(""), RangeError);
  assert.throws(() => ftruncate(999_999, 0), code("EBADF"));
  close(fd);
  assert.deepEqual(fdsOpenedSince(before), []);
});

test("seals: a sealable memfd refuses what its seals forbid; others take no seals", () => {
  const fd = memfdCreate("inflight", MFD_ALLOW_SEALING);
  ftruncate(fd, 4 * KiB);
  assert.equal(getSeals(fd), 0);
  addSeals(fd, F_SEAL_SHRINK | F_SEAL_GROW);
  assert.equal(getSeals(fd), F_SEAL_SHRINK | F_SEAL_GROW);
  assert.throws(() => ftruncate(fd, 0), code("EPERM"));
  assert.throws(() => ftruncate(fd, 8 * KiB), code("EPERM"));
  addSeals(fd, F_SEAL_SEAL);
  assert.throws(
    () => addSeals(fd, F_SEAL_WRITE),
    (e: unknown) => isNativeError(e, "EPERM") && e.syscall === "fcntl(F_ADD_SEALS)",
  );
  close(fd);

  const plain = memfdCreate("plain");
  assert.equal(getSeals(plain), F_SEAL_SEAL, "born sealed against seals");
  assert.throws(() => addSeals(plain, F_SEAL_SHRINK), code("EPERM"));
  close(plain);
});

test("punchHole: the range reads as zeroes, the size stays, the blocks are freed", () => {
  withFile(64 * KiB, 0xaa, (fd) => {
    const blocks = fstatSync(fd).blocks;
    punchHole(fd, 8 * KiB, 16 * KiB);
    assert.equal(fstatSync(fd).size, 64 * KiB);
    assert.ok(fstatSync(fd).blocks < blocks, "blocks deallocated");
    assert.ok(readAll(fd, 8 * KiB, 16 * KiB).every((b) => b === 0));
    assert.ok(readAll(fd, 0, 8 * KiB).every((b) => b === 0xaa));
    assert.ok(readAll(fd, 24 * KiB, 40 * KiB).every((b) => b === 0xaa));
  });
});

test("zeroRange: zeroes in place; without keepSize a range past the end grows the file", () => {
  withFile(64 * KiB, 0x55, (fd) => {
    zeroRange(fd, 4 * KiB, 4 * KiB);
    assert.equal(fstatSync(fd).size, 64 * KiB);
    assert.ok(readAll(fd, 4 * KiB, 4 * KiB).every((b) => b === 0));
    assert.ok(readAll(fd, 0, 4 * KiB).every((b) => b === 0x55));
    assert.ok(readAll(fd, 8 * KiB, 4 * KiB).every((b) => b === 0x55));
    zeroRange(fd, 60 * KiB, 8 * KiB, true);
    assert.equal(fstatSync(fd).size, 64 * KiB);
    zeroRange(fd, 60 * KiB, 8 * KiB, false);
    assert.equal(fstatSync(fd).size, 68 * KiB);
    assert.ok(readAll(fd, 60 * KiB, 8 * KiB).every((b) => b === 0));
  });
});

test("an unsupported fallocate mode is EOPNOTSUPP (memfd: no zero range), so callers can fall back", () => {
  const fd = memfdCreate("shmem");
  ftruncate(fd, 16 * KiB);
  writeSync(fd, Buffer.alloc(16 * KiB, 1), 0, 16 * KiB, 0);
  assert.throws(
    () => zeroRange(fd, 0, 4 * KiB),
    (e: unknown) => isNativeError(e, "EOPNOTSUPP") && e.syscall === "fallocate",
  );
  punchHole(fd, 0, 4 * KiB); // shmem does punch holes
  assert.ok(readAll(fd, 0, 4 * KiB).every((b) => b === 0));
  assert.ok(readAll(fd, 4 * KiB, 4 * KiB).every((b) => b === 1));
  close(fd);
});

test("fallocate: plain allocation grows the file; bad modes and lengths are refused", () => {
  withFile(4 * KiB, 1, (fd) => {
    fallocate(fd, 0, 0, 32 * KiB);
    assert.equal(fstatSync(fd).size, 32 * KiB);
    assert.throws(() => fallocate(fd, 0x20, 0, 4 * KiB), RangeError);
    assert.throws(() => fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 0), RangeError);
    assert.throws(() => fallocate(fd, FALLOC_FL_KEEP_SIZE, -1, 1), RangeError);
    // PUNCH_HOLE without KEEP_SIZE is invalid for the kernel.
    assert.throws(() => fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, 4 * KiB), code("EOPNOTSUPP"));
  });
});

test("blockDeviceInfo: ENOTTY on a regular file; sizes of a block device when one can be opened", () => {
  withFile(4 * KiB, 0, (fd) => {
    assert.throws(
      () => blockDeviceInfo(fd),
      (e: unknown) => isNativeError(e, "ENOTTY") && e.syscall === "ioctl(BLKGETSIZE64)",
    );
  });
  // Unattached loop devices exist on many Linux machines; checked when present.
  for (const name of readdirSync("/dev").filter((n) => /^loop\d+$/.test(n))) {
    let fd: number;
    try {
      fd = openSync(join("/dev", name), constants.O_RDONLY);
    } catch {
      continue;
    }
    try {
      const info = blockDeviceInfo(fd);
      assert.ok(Number.isSafeInteger(info.size) && info.size >= 0);
      assert.ok([512, 1024, 2048, 4096].includes(info.logicalBlockSize));
      assert.ok(info.physicalBlockSize >= info.logicalBlockSize);
    } finally {
      closeSync(fd);
    }
    break;
  }
});

test("blockDiscard / blockZeroOut: rejects ENOTTY on a regular file; RangeError for bad ranges", async () => {
  const dir = tempDir();
  const fd = openSync(join(dir.path, "disk.img"), "w+");
  try {
    writeSync(fd, Buffer.alloc(4 * KiB), 0, 4 * KiB, 0);
    await assert.rejects(
      blockDiscard(fd, 0, 4 * KiB),
      (e: unknown) => isNativeError(e, "ENOTTY") && e.syscall === "ioctl(BLKDISCARD)",
    );
    await assert.rejects(
      blockZeroOut(fd, 0, 4 * KiB),
      (e: unknown) => isNativeError(e, "ENOTTY") && e.syscall === "ioctl(BLKZEROOUT)",
    );
    assert.throws(() => blockDiscard(fd, 0, 0), RangeError);
    assert.throws(() => blockZeroOut(fd, -512, 512), RangeError);
    await assert.rejects(blockDiscard(999_999, 0, 512), code("EBADF"));
  } finally {
    closeSync(fd);
    dir.remove();
  }
});

test("directIoAlignment reports powers of two, or null when the file system does not say", () => {
  withFile(4 * KiB, 0, (fd) => {
    const dio = directIoAlignment(fd);
    if (dio !== null) {
      for (const v of [dio.memoryAlignment, dio.offsetAlignment]) {
        assert.ok(v > 0 && (v & (v - 1)) === 0, `${v} is a power of two`);
      }
    }
  });
  assert.throws(() => directIoAlignment(999_999), code("EBADF"));
});

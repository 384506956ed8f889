import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import fs from "node:fs";
import { open } from "node:fs/promises";
import { syncBuiltinESMExports } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ErrorCode, isVirtioError } from "../../errors.ts";
import { FileBacking, IOV_MAX, type NowaitIo } from "./file-backing.ts";
import {
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
  type FallocateFn,
} from "./fallocate.ts";
import { silentLogger } from "../../log.ts";

const tmp = mkdtempSync(join(tmpdir(), "virtio-ts-file-"));
const opened: FileBacking[] = [];
after(async () => {
  for (const b of opened) await b.close();
  rmSync(tmp, { recursive: true, force: true });
});

let n = 0;
function image(content: Uint8Array | number): string {
  const p = join(tmp, `img-${n++}.raw`);
  writeFileSync(p, typeof content === "number" ? new Uint8Array(content) : content);
  return p;
}

function bytes(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (i * 31 + seed * 7 + (i >>> 9)) & 0xff;
  return b;
}

async function openImg(path: string, o: Parameters<typeof FileBacking.open>[1] = {}) {
  const b = await FileBacking.open(path, { logger: silentLogger, fallocate: null, ...o });
  opened.push(b);
  return b;
}

const imageErr = (re: RegExp) => (e: unknown) =>
  isVirtioError(e, ErrorCode.BLK_IMAGE) && re.test(e.message) && !e.message.includes("\n");

describe("open: clear up-front errors", () => {
  test("missing image", async () => {
    await assert.rejects(FileBacking.open(join(tmp, "nope.img")), imageErr(/does not exist/));
  });

  test("size not a multiple of the logical block size", async () => {
    await assert.rejects(FileBacking.open(image(1000)), imageErr(/size 1000 is not a multiple/));
    await assert.rejects(
      FileBacking.open(image(4096 + 512), { logicalBlockSize: 4096 }),
      imageErr(/not a multiple of the 4096-byte/),
    );
  });

  test("a directory is not an image", async () => {
    const d = join(tmp, "dir");
    mkdirSync(d);
    await assert.rejects(FileBacking.open(d), imageErr(/not a regular file/));
  });

  test("a read-only file opened for writing; read-only open works", async () => {
    const p = image(4096);
    // Root ignores permission bits, so as root the file is made immutable instead.
    const root = process.getuid?.() === 0;
    if (root) assert.equal(spawnSync("chattr", ["+i", p]).status, 0, "chattr +i");
    else chmodSync(p, 0o444);
    try {
      await assert.rejects(
        FileBacking.open(p),
        imageErr(/is not writable \(E(ACCES|PERM|ROFS)\); open it read-only/),
      );
      const ro = await openImg(p, { readOnly: true });
      assert.equal(ro.readOnly, true);
      assert.equal(ro.size, 4096);
    } finally {
      if (root) spawnSync("chattr", ["-i", p]);
    }
  });

  test("bad options are RangeErrors", async () => {
    await assert.rejects(FileBacking.open(image(512), { logicalBlockSize: 1000 }), RangeError);
    await assert.rejects(FileBacking.open(image(512), { maxIoBytes: 100 }), RangeError);
    await assert.rejects(
      FileBacking.open(image(512), { format: "qcow2" as "raw" }),
      /format must be "raw" or "auto"/,
    );
  });
});

describe("image formats", () => {
  /** A 1 MiB image whose first bytes are a qcow2 version 3 header. */
  function qcow2Image(): string {
    const img = new Uint8Array(1 << 20);
    img.set([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0]);
    img.set([0, 0, 0, 0, 0, 0, 0, 16], 20); // cluster_bits, size
    return image(img);
  }

  test("a qcow2 image is refused with one line saying how to serve it", async () => {
    const p = qcow2Image();
    for (const o of [{}, { direct: true }, { readOnly: true }, { format: "auto" as const }]) {
      await assert.rejects(
        FileBacking.open(p, o),
        (e: unknown) =>
          imageErr(
            /^disk image \S+: is a qcow2 image, not raw: serve it through qemu-nbd \(docs\/blk\.md, "Image formats"\) or pass --format raw to serve its bytes as they are$/,
          )(e) && (e as { details: Record<string, unknown> }).details.format === "qcow2",
        JSON.stringify(o),
      );
    }
  });

  test('format: "raw" serves the same bytes as they are', async () => {
    const p = qcow2Image();
    for (const direct of [false, true]) {
      const f = await openImg(p, { format: "raw", direct });
      const head = new Uint8Array(512);
      await f.readv(0, [head]);
      assert.deepEqual(head.subarray(0, 4), new Uint8Array([0x51, 0x46, 0x49, 0xfb]));
      await f.close();
    }
  });

  test("a VHD footer at the end is found; raw images open", async () => {
    const img = new Uint8Array(64 * 1024);
    img.set(Buffer.from("conectix"), img.length - 512);
    await assert.rejects(FileBacking.open(image(img)), imageErr(/is a VHD \(vpc\) image, not raw/));
    const raw = await openImg(image(bytes(64 * 1024, 3)));
    assert.equal(raw.size, 64 * 1024);
    const empty = await openImg(image(0));
    assert.equal(empty.size, 0);
  });
});

describe("vectored I/O", () => {
  test("many small views, more than IOV_MAX, and transfers split by maxIoBytes", async () => {
    const size = 2 * IOV_MAX * 512 + 4096;
    const p = image(size);
    const f = await openImg(p, { maxIoBytes: 64 * 1024 });
    const data = bytes(size, 1);
    const views: Uint8Array[] = [];
    // Uneven views: 100, 412, 512, ... (more than IOV_MAX of them).
    for (let o = 0; o < size;) {
      const len = Math.min(size - o, o % 1024 === 0 ? 100 : 412 + (o % 100));
      views.push(data.slice(o, o + len));
      o += len;
    }
    assert.ok(views.length > IOV_MAX);
    await f.writev(0, views);
    assert.deepEqual(new Uint8Array(readFileSync(p)), data);
    const back = views.map((v) => new Uint8Array(v.length));
    await f.readv(0, back);
    assert.deepEqual(back, views);
  });

  test("short reads and writes continue where they stopped", async () => {
    // FileBacking uses the callback preadv/pwritev; make every call transfer at most 700 bytes,
    // cut anywhere (also inside a view), through Node's own hook for patching built-in modules.
    type Cb = (err: NodeJS.ErrnoException | null, n: number) => void;
    type Vec = (fd: number, b: Uint8Array[], pos: number, cb: Cb) => void;
    const fsm = fs as unknown as { readv: Vec; writev: Vec };
    const { readv, writev } = fsm;
    const cut = (bufs: Uint8Array[]): Uint8Array[] => {
      const out: Uint8Array[] = [];
      let left = 700;
      for (const b of bufs) {
        if (left === 0) break;
        out.push(b.subarray(0, Math.min(b.length, left)));
        left -= out[out.length - 1]!.length;
      }
      return out;
    };
    let calls = 0;
    fsm.readv = (fd, b, pos, cb) => {
      calls++;
      readv(fd, cut(b), pos, cb);
    };
    fsm.writev = (fd, b, pos, cb) => {
      calls++;
      writev(fd, cut(b), pos, cb);
    };
    syncBuiltinESMExports();
    try {
      const p = image(16384);
      const f = await openImg(p, { nowait: null }); // every transfer through the thread pool
      const data = bytes(8192, 12);
      await f.writev(1024, [
        data.subarray(0, 3000),
        data.subarray(3000, 3001),
        data.subarray(3001),
      ]);
      assert.deepEqual(new Uint8Array(readFileSync(p)).subarray(1024, 1024 + 8192), data);
      const back = [new Uint8Array(5000), new Uint8Array(0), new Uint8Array(3192)];
      await f.readv(1024, back);
      assert.deepEqual(back[0], data.subarray(0, 5000));
      assert.deepEqual(back[2], data.subarray(5000));
      assert.ok(calls >= 24, `${calls} calls`);
    } finally {
      fsm.readv = readv;
      fsm.writev = writev;
      syncBuiltinESMExports();
    }
  });

  test("non-blocking I/O goes first; partial, declined and refused attempts fall back to the thread pool", async () => {
    const p = image(16384);
    const data = bytes(16384, 5);
    writeFileSync(p, data);
    const log: string[] = [];
    let readAnswer: "half" | "null" | "refuse" = "half";
    const nowait: NowaitIo = {
      read(fd, iov, pos) {
        log.push(`r${readAnswer}`);
        if (readAnswer === "null") return null;
        if (readAnswer === "refuse")
          throw Object.assign(new Error("x"), { errnoCode: "EOPNOTSUPP" });
        // A partly cached read: half of a fresh 4 KiB view inline, then "would block".
        if (iov[0]!.length !== 4096) return null;
        const v = iov[0]!.subarray(0, 2048);
        return readSync(fd, v, 0, v.length, pos);
      },
      write() {
        log.push("w");
        throw Object.assign(new Error("x"), { errnoCode: "EOPNOTSUPP" });
      },
    };
    const f = await openImg(p, { nowait });
    const back = new Uint8Array(4096);
    await f.readv(4096, [back]);
    assert.deepEqual(back, data.subarray(4096, 8192), "half inline, the rest through the pool");
    readAnswer = "null";
    await f.readv(0, [back]);
    assert.deepEqual(back, data.subarray(0, 4096));
    readAnswer = "refuse";
    await f.readv(8192, [back]);
    await f.readv(8192, [back]);
    assert.deepEqual(back, data.subarray(8192, 12288));
    await f.writev(0, [bytes(512, 9)]);
    await f.writev(512, [bytes(512, 9)]);
    assert.deepEqual(new Uint8Array(readFileSync(p)).subarray(0, 512), bytes(512, 9));
    // Refused (EOPNOTSUPP) directions are not tried again.
    assert.deepEqual(log, ["rhalf", "rhalf", "rnull", "rrefuse", "w"]);
    await f.close();
  });

  test("views aliasing a SharedArrayBuffer (guest memory) work both ways", async () => {
    const p = image(8192);
    const f = await openImg(p);
    const sab = new SharedArrayBuffer(16384);
    const a = new Uint8Array(sab, 3, 1000);
    const b = new Uint8Array(sab, 5000, 24);
    a.set(bytes(1000, 2));
    b.set(bytes(24, 3));
    await f.writev(512, [a, b]);
    const out = [new Uint8Array(sab, 9000, 512), new Uint8Array(sab, 10001, 512)];
    await f.readv(512, out);
    assert.deepEqual(out[0], a.subarray(0, 512));
    assert.deepEqual(out[1]!.subarray(0, 488), a.subarray(512));
    assert.deepEqual(out[1]!.subarray(488), b);
  });

  test("a read that meets end-of-file (image shrunk behind our back) returns zeroes for the rest", async () => {
    const p = image(bytes(8192, 4));
    const f = await openImg(p);
    truncateSync(p, 5000);
    const out = new Uint8Array(4096).fill(0xaa);
    await f.readv(4096, [out]);
    assert.deepEqual(out.subarray(0, 904), bytes(8192, 4).subarray(4096, 5000));
    assert.ok(out.subarray(904).every((x) => x === 0));
  });

  test("ranges outside the image are refused", async () => {
    const f = await openImg(image(4096));
    await assert.rejects(f.readv(4096, [new Uint8Array(512)]), RangeError);
    await assert.rejects(f.writev(-512, [new Uint8Array(512)]), RangeError);
    await assert.rejects(f.writeZeroes(3584, 1024, false), RangeError);
  });

  test("read-only: writes reject, the file is never written, flush is a no-op", async () => {
    const content = bytes(4096, 5);
    const p = image(content);
    const f = await openImg(p, { readOnly: true });
    await assert.rejects(f.writev(0, [new Uint8Array(512)]), /read-only/);
    await assert.rejects(f.writeZeroes(0, 512, false), /read-only/);
    await assert.rejects(f.discard(0, 512), /read-only/);
    await assert.rejects(f.resize(8192), /read-only/);
    await f.flush();
    assert.deepEqual(new Uint8Array(readFileSync(p)), content);
  });

  test("resize grows the file with zeroes and shrinks it", async () => {
    const p = image(bytes(4096, 6));
    const f = await openImg(p);
    await f.resize(8192);
    assert.equal(f.size, 8192);
    const out = new Uint8Array(4096);
    await f.readv(4096, [out]);
    assert.ok(out.every((x) => x === 0));
    await f.resize(2048);
    assert.equal(readFileSync(p).length, 2048);
  });
});

describe("WRITE_ZEROES and DISCARD", () => {
  test("without fallocate: zeroes are written; DISCARD leaves data (allowed)", async () => {
    const content = bytes(1 << 21, 7);
    const p = image(content);
    const f = await openImg(p);
    await f.writeZeroes(512, (1 << 20) + 512, true);
    await f.discard(1 << 20, 4096);
    const disk = new Uint8Array(readFileSync(p));
    assert.deepEqual(disk.subarray(0, 512), content.subarray(0, 512));
    assert.ok(disk.subarray(512, (1 << 20) + 1024).every((x) => x === 0));
    assert.deepEqual(disk.subarray((1 << 20) + 1024), content.subarray((1 << 20) + 1024));
  });

  test("fallocate modes: PUNCH_HOLE|KEEP_SIZE for DISCARD and unmap, ZERO_RANGE otherwise", async () => {
    const calls: [number, number, number][] = [];
    const fallocate: FallocateFn = (_fd, mode, off, len) => {
      calls.push([mode, off, len]);
      return true;
    };
    const content = bytes(8192, 8);
    const p = image(content);
    const f = await openImg(p, { fallocate });
    await f.discard(0, 1024);
    await f.writeZeroes(1024, 512, true);
    await f.writeZeroes(2048, 512, false);
    assert.deepEqual(calls, [
      [FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 1024],
      [FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 1024, 512],
      [FALLOC_FL_ZERO_RANGE, 2048, 512],
    ]);
    assert.deepEqual(
      new Uint8Array(readFileSync(p)),
      content,
      "the fake did nothing, nothing else wrote",
    );
  });

  test("native fallocate: holes for DISCARD and UNMAP (fewer blocks), ZERO_RANGE otherwise; reads return zeroes", async () => {
    const MiB = 1 << 20;
    const content = bytes(4 * MiB, 13);
    const p = image(content);
    const f = await FileBacking.open(p, { logger: silentLogger }); // loads the addon on first use
    opened.push(f);
    const blocks0 = statSync(p).blocks;
    await f.discard(0, MiB);
    await f.writeZeroes(MiB, MiB, true);
    await f.writeZeroes(2 * MiB, MiB, false);
    await f.flush();
    const st = statSync(p);
    assert.equal(st.size, 4 * MiB, "size kept");
    assert.ok(
      st.blocks <= blocks0 - (2 * MiB) / 512,
      `holes punched: ${blocks0} → ${st.blocks} blocks`,
    );
    const out = new Uint8Array(4 * MiB);
    await f.readv(0, [out]);
    assert.ok(out.subarray(0, 3 * MiB).every((x) => x === 0));
    assert.deepEqual(out.subarray(3 * MiB), content.subarray(3 * MiB));
  });

  test("fallocate unsupported (EOPNOTSUPP): falls back to writing zeroes, and stops asking", async () => {
    let asked = 0;
    const fallocate: FallocateFn = () => {
      asked++;
      return false;
    };
    const content = bytes(8192, 9);
    const p = image(content);
    const f = await openImg(p, { fallocate });
    await f.writeZeroes(0, 1024, false);
    await f.writeZeroes(4096, 1024, true);
    const disk = new Uint8Array(readFileSync(p));
    assert.ok(disk.subarray(0, 1024).every((x) => x === 0));
    assert.ok(disk.subarray(4096, 5120).every((x) => x === 0));
    assert.deepEqual(disk.subarray(1024, 4096), content.subarray(1024, 4096));
    assert.equal(asked, 2, "ZERO_RANGE once, PUNCH_HOLE once; then each is known unsupported");
    await f.writeZeroes(2048, 512, true);
    assert.equal(asked, 2);
    assert.ok(new Uint8Array(readFileSync(p)).subarray(2048, 2560).every((x) => x === 0));
  });
});

describe("flush", () => {
  /** Replaces FileHandle.prototype.datasync for the test's duration. */
  async function withDatasync(
    impl: (orig: () => Promise<void>) => Promise<void>,
    fn: () => Promise<void>,
  ): Promise<void> {
    const probe = await open(image(512), "r");
    const proto = Object.getPrototypeOf(probe) as { datasync: () => Promise<void> };
    await probe.close();
    const orig = proto.datasync;
    proto.datasync = function (this: unknown) {
      return impl(() => orig.call(this));
    };
    try {
      await fn();
    } finally {
      proto.datasync = orig;
    }
  }

  test("concurrent flushes share fdatasyncs; each waits for one that started after it", async () => {
    const f = await openImg(image(4096));
    const started: number[] = [];
    const release: (() => void)[] = [];
    await withDatasync(
      (orig) => {
        started.push(started.length);
        return new Promise<void>((res) => release.push(res)).then(orig);
      },
      async () => {
        let a = false;
        let b = false;
        let c = false;
        const pa = f.flush().then(() => (a = true));
        // B and C arrive while A's sync runs: they need a sync that starts later; they share it.
        const pb = f.flush().then(() => (b = true));
        const pc = f.flush().then(() => (c = true));
        await new Promise((r) => setImmediate(r));
        assert.equal(started.length, 1);
        release.shift()!();
        await pa;
        assert.equal(
          b || c,
          false,
          "B and C not acknowledged by the sync that started before them",
        );
        for (let i = 0; i < 100 && started.length < 2; i++)
          await new Promise((r) => setImmediate(r));
        assert.equal(started.length, 2);
        release.shift()!();
        await Promise.all([pb, pc]);
        assert.equal(a && b && c, true);
        assert.equal(started.length, 2, "one sync for B and C");
      },
    );
  });

  test("after a failed fdatasync every later flush fails", async () => {
    const f = await openImg(image(4096));
    await withDatasync(
      () => Promise.reject(Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" })),
      async () => {
        await assert.rejects(f.flush(), /EIO/);
      },
    );
    await assert.rejects(f.flush(), /EIO/, "sticky: the lost writes are never acknowledged");
  });
});

describe("O_DIRECT", () => {
  test("guest buffers at any alignment: direct when the kernel accepts them, else through the bounce buffer", async () => {
    const size = 1 << 20;
    const content = bytes(size, 10);
    const p = image(content);
    const f = await openImg(p, { direct: true });
    assert.equal(f.direct, true);
    const sab = new SharedArrayBuffer(1 << 20);
    for (const [off, at, len] of [
      [0, 0, 4096],
      [3, 4096, 8192],
      [4096 + 17, 512, 512],
      [100000, 65536, 300 * 1024],
    ] as const) {
      const view = new Uint8Array(sab, off, len);
      await f.readv(at, [view]);
      assert.deepEqual(view, content.subarray(at, at + len), `read ${len} at ${at} into +${off}`);
    }
    const data = bytes(12288, 11);
    const src = new Uint8Array(sab, 777, 12288);
    src.set(data);
    await f.writev(8192, [src.subarray(0, 5000), src.subarray(5000)]);
    await f.writeZeroes(65536, 4096, false);
    await f.flush();
    assert.ok(f.bouncedRequests > 0, "misaligned guest buffers went through the bounce buffer");
    const disk = new Uint8Array(readFileSync(p));
    assert.deepEqual(disk.subarray(8192, 8192 + 12288), data);
    assert.ok(disk.subarray(65536, 65536 + 4096).every((x) => x === 0));
    assert.deepEqual(disk.subarray(0, 8192), content.subarray(0, 8192));
  });

  test("an image too small to probe is refused up front", async () => {
    await assert.rejects(
      FileBacking.open(image(4096), { direct: true }),
      imageErr(/O_DIRECT needs an image/),
    );
  });
});

import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { silentLogger, type Logger } from "../../log.ts";
import { FileBacking } from "./file-backing.ts";
import {
  loadUringIo,
  THREAD_POOL_IO,
  UringIo,
  uringOrThreadPool,
  type UringNative,
} from "./file-uring.ts";

const tmp = mkdtempSync(join(tmpdir(), "virtio-ts-uring-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** A fake kernel: requests complete when `complete()` is called; counts submissions. */
function fakeNative(capacity: number) {
  const prepared: { slot: number; n: number }[] = [];
  const done: [number, number][] = [];
  let free = Array.from({ length: capacity }, (_, i) => i);
  let onReadable: ((e: Error | null) => void) | undefined;
  const f = {
    submits: 0,
    failSubmit: false,
    /** Requests one submission takes at most (the kernel may take fewer: EAGAIN). */
    takeAtMost: Infinity,
    untaken: 0,
    closed: false,
    native: {
      uringOpen: () => ({ ring: 1, eventFd: 99, capacity }),
      uringPrepare: (_r: number, _fd: number, iov: readonly Uint8Array[]) => {
        const slot = free.shift();
        if (slot === undefined) return -1;
        prepared.push({ slot, n: iov.reduce((a, v) => a + v.length, 0) });
        f.untaken++;
        return slot;
      },
      uringSubmit: () => {
        if (f.failSubmit) throw new Error("io_uring_enter EFAULT");
        f.submits++;
        const took = Math.min(f.untaken, f.takeAtMost);
        f.untaken -= took;
        return took;
      },
      uringReap: (_r: number, out: Int32Array) => {
        let n = 0;
        while (done.length > 0 && n < out.length / 2) {
          const [s, res] = done.shift()!;
          out[2 * n] = s;
          out[2 * n + 1] = res;
          free.push(s);
          n++;
        }
        return n;
      },
      uringClose: () => {
        f.closed = true;
      },
      watch: (_fd: number, _ev: number, cb: (e: Error | null) => void) => {
        onReadable = cb;
        return { stop: () => true, ref: () => {}, unref: () => {} };
      },
    } satisfies UringNative,
    /** Completes every prepared request (a negative result for the ones in `errors`). */
    complete(errors: ReadonlyMap<number, number> = new Map()) {
      for (const p of prepared.splice(0)) done.push([p.slot, errors.get(p.slot) ?? p.n]);
      onReadable?.(null);
    },
    reset() {
      free = Array.from({ length: capacity }, (_, i) => i);
    },
  };
  return f;
}

test("UringIo: requests prepared in one turn go to the kernel in one submission; completions settle them", async () => {
  const k = fakeNative(8);
  const io = new UringIo(k.native, 4, 1);
  const a = io.run(3, [new Uint8Array(10)], 0, false);
  const b = io.run(3, [new Uint8Array(20), new Uint8Array(2)], 4096, true);
  assert.equal(k.submits, 0, "nothing is entered during the turn");
  await Promise.resolve();
  assert.equal(k.submits, 1, "one submission for the turn");
  assert.equal(io.inFlight, 2);
  k.complete(new Map([[1, -5]]));
  assert.equal(await a, 10);
  await assert.rejects(b, (e: NodeJS.ErrnoException) => e.code === "EIO" && e.syscall === "writev");
  assert.equal(io.inFlight, 0);
  io.close();
  assert.ok(k.closed);
});

test("UringIo: a full ring sends the request to the thread pool; a failed submission fails that turn's requests and retires the ring", async () => {
  const dir = mkdtempSync(join(tmp, "full-"));
  const p = join(dir, "f");
  writeFileSync(p, "abcdef");
  const fd = (await import("node:fs")).openSync(p, "r");
  try {
    const k = fakeNative(1);
    const io = new UringIo(k.native, 1, 1);
    const first = io.run(fd, [new Uint8Array(3)], 0, false);
    const viaPool = new Uint8Array(3);
    assert.equal(await io.run(fd, [viaPool], 3, false), 3, "the pool served the overflow");
    assert.equal(new TextDecoder().decode(viaPool), "def");
    k.complete();
    assert.equal(await first, 3);
    k.failSubmit = true;
    const failed = io.run(fd, [new Uint8Array(3)], 0, false);
    await assert.rejects(failed, /EFAULT/);
    const after = new Uint8Array(3);
    assert.equal(
      await io.run(fd, [after], 0, false),
      3,
      "a retired ring hands everything to the pool",
    );
    assert.equal(new TextDecoder().decode(after), "abc");
    assert.equal(io.inFlight, 0);
  } finally {
    (await import("node:fs")).closeSync(fd);
  }
});

test("uringOrThreadPool: a refused io_uring (ENOSYS, EPERM under seccomp) is one warning, then the thread pool", () => {
  const lines: string[] = [];
  const log: Logger = { error: (m) => lines.push(m), warn: (m) => lines.push(m) };
  const io = uringOrThreadPool(() => {
    throw new Error("io_uring_setup EPERM: operation not permitted");
  }, log);
  assert.equal(io, THREAD_POOL_IO);
  assert.deepEqual(lines, [
    "io_uring is not available (io_uring_setup EPERM: operation not permitted); using the thread pool",
  ]);
});

test("FileBacking with aio io_uring: reads, writes (several views, past the page cache's fast path) and errors", async () => {
  const io = await loadUringIo(silentLogger);
  assert.equal(io.name, "io_uring", "this kernel offers io_uring");
  const p = join(tmp, "img");
  writeFileSync(p, new Uint8Array(1 << 20));
  const f = await FileBacking.open(p, { aio: "io_uring", nowait: null, logger: silentLogger });
  try {
    assert.equal(f.aio, "io_uring");
    const writes = Array.from({ length: 32 }, (_, i) =>
      f.writev(i * 8192, [new Uint8Array(512).fill(i + 1), new Uint8Array(3584).fill(i + 1)]),
    );
    await Promise.all(writes);
    const back = readFileSync(p);
    for (let i = 0; i < 32; i++) assert.equal(back[i * 8192 + 4095], i + 1);
    const into = Array.from({ length: 32 }, () => new Uint8Array(4096));
    await Promise.all(into.map((v, i) => f.readv(i * 8192, [v])));
    into.forEach((v, i) => assert.ok(v.every((b) => b === i + 1)));
    await assert.rejects(f.readv(1 << 20, [new Uint8Array(512)]), RangeError);
  } finally {
    await f.close();
  }
});

test("UringIo: a submission the kernel takes only in part is retried until every request is in", async () => {
  const k = fakeNative(8);
  k.takeAtMost = 1;
  const io = new UringIo(k.native, 8, 1);
  const all = [0, 1, 2].map((i) => io.run(3, [new Uint8Array(i + 1)], 0, false));
  for (let i = 0; i < 100 && k.untaken > 0; i++) await new Promise((r) => setTimeout(r, 2));
  assert.equal(k.untaken, 0, "the rest were submitted without a new request");
  assert.ok(k.submits >= 3);
  k.complete();
  assert.deepEqual(await Promise.all(all), [1, 2, 3]);
});

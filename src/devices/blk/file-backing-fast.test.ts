/**
 * FileBacking's fast path: a request that fits one system call and moves
 * entirely without blocking completes inside readv/writev (no async frames,
 * no thread pool), with exactly one non-blocking attempt; everything else
 * takes the usual path with unchanged results and errors.
 *
 * @module
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import fs, { mkdtempSync, readFileSync, readSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { syncBuiltinESMExports } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FileBacking, IOV_MAX, type NowaitIo } from "./file-backing.ts";
import { silentLogger } from "../../log.ts";

const tmp = mkdtempSync(join(tmpdir(), "virtio-ts-fast-"));
const opened: FileBacking[] = [];
after(async () => {
  for (const b of opened) await b.close().catch(() => undefined);
  rmSync(tmp, { recursive: true, force: true });
});

let n = 0;
function bytes(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (i * 13 + seed * 5 + (i >>> 8)) & 0xff;
  return b;
}

function image(content: Uint8Array): string {
  const p = join(tmp, `img-${n++}.raw`);
  writeFileSync(p, content);
  return p;
}

/** Non-blocking I/O that always succeeds (plain positioned I/O), counting its calls. */
function countingNowait(): NowaitIo & { calls: number } {
  const io = {
    calls: 0,
    read(fd: number, iov: readonly Uint8Array[], pos: number): number {
      io.calls++;
      let done = 0;
      for (const v of iov) done += readSync(fd, v, 0, v.length, pos + done);
      return done;
    },
    write(fd: number, iov: readonly Uint8Array[], pos: number): number {
      io.calls++;
      let done = 0;
      for (const v of iov) done += writeSync(fd, v, 0, v.length, pos + done);
      return done;
    },
  };
  return io;
}

async function openImg(path: string, o: Parameters<typeof FileBacking.open>[1] = {}) {
  const b = await FileBacking.open(path, { logger: silentLogger, fallocate: null, ...o });
  opened.push(b);
  return b;
}

/** Runs `fn` with fs.readv / fs.writev (the thread-pool path) counted. */
async function countingPool<T>(fn: () => Promise<T>): Promise<{ result: T; poolCalls: number }> {
  const fsm = fs as unknown as Record<"readv" | "writev", typeof fs.readv>;
  const { readv, writev } = fsm;
  let poolCalls = 0;
  fsm.readv = ((...a: Parameters<typeof fs.readv>) => {
    poolCalls++;
    return (readv as (...x: unknown[]) => void)(...a);
  }) as typeof fs.readv;
  fsm.writev = ((...a: Parameters<typeof fs.readv>) => {
    poolCalls++;
    return (writev as (...x: unknown[]) => void)(...a);
  }) as typeof fs.readv;
  syncBuiltinESMExports();
  try {
    return { result: await fn(), poolCalls };
  } finally {
    fsm.readv = readv;
    fsm.writev = writev;
    syncBuiltinESMExports();
  }
}

test("a request moved entirely without blocking is done when readv/writev return, with one attempt and no thread pool", async () => {
  const data = bytes(16384, 1);
  const p = image(data);
  const nowait = countingNowait();
  const f = await openImg(p, { nowait });
  const { poolCalls } = await countingPool(async () => {
    const back = [new Uint8Array(1000), new Uint8Array(0), new Uint8Array(3096)];
    const pending = f.readv(4096, back);
    // The bytes are there before the promise is awaited: nothing was deferred.
    assert.deepEqual(back[0], data.subarray(4096, 5096));
    assert.deepEqual(back[2], data.subarray(5096, 8192));
    // Already settled: its reaction runs within one microtask turn (the async path takes several).
    let settled = false;
    void pending.then(() => (settled = true));
    await Promise.resolve();
    assert.ok(settled, "settled without deferred work");
    const out = bytes(4096, 9);
    const written = f.writev(8192, [out.subarray(0, 100), out.subarray(100)]);
    assert.deepEqual(new Uint8Array(readFileSync(p)).subarray(8192, 12288), out);
    await written;
  });
  assert.equal(poolCalls, 0);
  assert.equal(nowait.calls, 2, "one non-blocking attempt per request");
});

test("requests the fast path does not take keep their usual results and errors", async () => {
  const data = bytes(8192, 2);
  const p = image(data);
  const nowait = countingNowait();
  const f = await openImg(p, { nowait, maxIoBytes: 4096 });
  // Larger than one system call: the usual loop (two attempts, both inline).
  const big = new Uint8Array(8192);
  await f.readv(0, [big]);
  assert.deepEqual(big, data);
  assert.equal(nowait.calls, 2);
  // More views than one call takes.
  const many = Array.from({ length: IOV_MAX + 1 }, () => new Uint8Array(1));
  await f.readv(0, many);
  assert.deepEqual(
    many.map((v) => v[0]),
    [...data.subarray(0, IOV_MAX + 1)],
  );
  // Invalid requests are refused as before, without an attempt.
  const before = nowait.calls;
  await assert.rejects(f.readv(8192, [new Uint8Array(512)]), RangeError);
  await assert.rejects(f.writev(-512, [new Uint8Array(512)]), RangeError);
  await assert.rejects(f.readv(1.5, [new Uint8Array(512)]), RangeError);
  assert.equal(nowait.calls, before);
  const ro = await openImg(p, { nowait, readOnly: true });
  await assert.rejects(ro.writev(0, [new Uint8Array(512)]), /read-only/);
  await f.close();
  await assert.rejects(f.readv(0, [new Uint8Array(512)]), /closed/);
  assert.equal(nowait.calls, before);
});

test("a first attempt that moves part of the request is continued, not redone", async () => {
  const data = bytes(8192, 3);
  const p = image(data);
  const positions: number[] = [];
  const nowait: NowaitIo = {
    read(fd, iov, pos) {
      positions.push(pos);
      // Half of the first view inline, then "would block".
      if (positions.length > 1) return null;
      return readSync(fd, iov[0]!, 0, iov[0]!.length / 2, pos);
    },
    write: () => null,
  };
  const f = await openImg(p, { nowait });
  const back = new Uint8Array(4096);
  const { poolCalls } = await countingPool(() => f.readv(2048, [back]));
  assert.deepEqual(back, data.subarray(2048, 6144));
  assert.deepEqual(positions, [2048, 4096], "the second attempt starts where the first stopped");
  assert.equal(poolCalls, 1, "the rest through the thread pool");
});

import { test } from "node:test";
import assert from "node:assert/strict";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import {
  PollEvent,
  uringClose,
  uringOpen,
  uringPrepare,
  uringReap,
  uringSubmit,
  watch,
} from "./index.ts";

/** Reaps until `want` completions arrived (bounded: 5 s), as (slot → result). */
async function reapAll(ring: number, want: number): Promise<Map<number, number>> {
  const got = new Map<number, number>();
  const out = new Int32Array(64);
  for (let i = 0; i < 500 && got.size < want; i++) {
    const n = uringReap(ring, out);
    for (let k = 0; k < n; k++) got.set(out[2 * k]!, out[2 * k + 1]!);
    if (got.size < want) await sleep(10);
  }
  return got;
}

test("io_uring: writev and readv batched into one submission, completions named by slot", async () => {
  const dir = mkdtempSync(join(tmpdir(), "vts-uring-"));
  const path = join(dir, "img");
  writeFileSync(path, new Uint8Array(16384));
  const fd = openSync(path, "r+");
  const r = uringOpen(8);
  try {
    assert.ok(r.capacity >= 8 && r.eventFd >= 0);
    const a = uringPrepare(r.ring, fd, [Uint8Array.of(1, 2), Uint8Array.of(3)], 4096, true);
    const b = uringPrepare(r.ring, fd, [new Uint8Array(4096).fill(9)], 8192, true);
    assert.notEqual(a, b);
    assert.equal(uringSubmit(r.ring), 2, "one io_uring_enter takes both");
    assert.equal(uringSubmit(r.ring), 0, "nothing left to submit");
    const done = await reapAll(r.ring, 2);
    assert.deepEqual([done.get(a), done.get(b)], [3, 4096]);
    const back = readFileSync(path);
    assert.deepEqual([...back.subarray(4096, 4099)], [1, 2, 3]);
    assert.equal(back[8192 + 4095], 9);
    // Read it back through the ring; the eventfd says when.
    const into = [new Uint8Array(2), new Uint8Array(1)];
    const readable = new Promise<void>((resolve) => {
      const w = watch(r.eventFd, PollEvent.READABLE, () => {
        w.stop();
        resolve();
      });
    });
    const c = uringPrepare(r.ring, fd, into, 4096, false);
    uringSubmit(r.ring);
    await readable;
    const got = await reapAll(r.ring, 1);
    assert.equal(got.get(c), 3);
    assert.deepEqual(
      into.map((v) => [...v]),
      [[1, 2], [3]],
    );
  } finally {
    uringClose(r.ring);
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  }
});

test("io_uring: an error comes back as a negative errno; a full ring answers -1; bad arguments throw", async () => {
  const r = uringOpen(2);
  try {
    const s = uringPrepare(r.ring, 0x7ffffff0, [new Uint8Array(1)], 0, false);
    uringSubmit(r.ring);
    const got = await reapAll(r.ring, 1);
    assert.equal(got.get(s), -9, "EBADF");
    // Fill every slot (the completion queue's size), then one more.
    const slots: number[] = [];
    for (let tries = 0; slots.length < r.capacity && tries < 100; tries++) {
      const x = uringPrepare(r.ring, 0x7ffffff0, [new Uint8Array(1)], 0, false);
      if (x < 0)
        uringSubmit(r.ring); // the submission queue is full
      else slots.push(x);
    }
    assert.equal(slots.length, r.capacity);
    assert.equal(uringPrepare(r.ring, 0x7ffffff0, [new Uint8Array(1)], 0, false), -1);
    uringSubmit(r.ring);
    assert.equal((await reapAll(r.ring, slots.length)).size, slots.length);
    assert.throws(() => uringPrepare(r.ring, 0, [], 0, false), RangeError);
    assert.throws(
      () => uringPrepare(r.ring, 0, ["x" as unknown as Uint8Array], 0, false),
      TypeError,
    );
    assert.throws(() => uringReap(r.ring, new Uint32Array(2) as unknown as Int32Array), TypeError);
  } finally {
    uringClose(r.ring);
  }
  assert.throws(() => uringSubmit(r.ring), RangeError, "a closed ring is gone");
});

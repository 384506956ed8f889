import { test } from "node:test";
import assert from "node:assert/strict";
import { SharedMemoryBacking } from "./shared-memory-backing.ts";

test("SharedMemoryBacking: shared bytes, no copy; range and read-only checks reject", async () => {
  const buf = new SharedArrayBuffer(4096);
  const a = new SharedMemoryBacking(buf);
  const b = new SharedMemoryBacking(buf, { readOnly: true });
  await a.writev(512, [Uint8Array.of(1, 2), Uint8Array.of(3)]);
  const got = new Uint8Array(3);
  await b.readv(512, [got]);
  assert.deepEqual([...got], [1, 2, 3], "the other instance sees the write");
  await assert.rejects(b.writev(0, [new Uint8Array(1)]), /read-only/);
  await assert.rejects(a.readv(4000, [new Uint8Array(512)]), RangeError);
  await a.writeZeroes(512, 512, false);
  assert.equal(new Uint8Array(buf)[512], 0);
  assert.throws(() => new SharedMemoryBacking(new SharedArrayBuffer(1000)), RangeError);
});

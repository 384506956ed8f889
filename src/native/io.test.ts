import { test } from "node:test";
import assert from "node:assert/strict";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isNativeError, preadvNowait, pwritevNowait } from "./index.ts";

function tempFile(bytes: Uint8Array): { path: string; done: () => void } {
  const dir = mkdtempSync(join(tmpdir(), "vts-io-"));
  const path = join(dir, "img");
  writeFileSync(path, bytes);
  return { path, done: () => rmSync(dir, { recursive: true, force: true }) };
}

test("preadvNowait reads cached data into several views, also views of a SharedArrayBuffer", () => {
  const data = Uint8Array.from({ length: 8192 }, (_, i) => (i * 7) & 0xff);
  const f = tempFile(data);
  const fd = openSync(f.path, "r");
  try {
    readFileSync(f.path); // make sure it is in the page cache
    const sab = new SharedArrayBuffer(8192);
    const views = [
      new Uint8Array(sab, 0, 1000),
      new Uint8Array(3000),
      new Uint8Array(sab, 5000, 96),
    ];
    const n = preadvNowait(fd, views, 100);
    assert.ok(n === null || n === 4096, `read ${n}`);
    if (n !== null) {
      assert.deepEqual(views[0], data.subarray(100, 1100));
      assert.deepEqual(views[1], data.subarray(1100, 4100));
      assert.deepEqual(views[2], data.subarray(4100, 4196));
    }
    // At end of file a read transfers what is there.
    assert.equal(preadvNowait(fd, [new Uint8Array(100)], 8192 - 10) ?? 10, 10);
  } finally {
    closeSync(fd);
    f.done();
  }
});

test("pwritevNowait writes every view in order, or declines (null / EOPNOTSUPP) without writing", () => {
  const f = tempFile(new Uint8Array(4096));
  const fd = openSync(f.path, "r+");
  try {
    let n: number | null;
    try {
      n = pwritevNowait(fd, [Uint8Array.of(1, 2, 3), Uint8Array.of(4, 5)], 10);
    } catch (e) {
      assert.ok(isNativeError(e, "EOPNOTSUPP"), String(e));
      n = null;
    }
    const back = new Uint8Array(readFileSync(f.path));
    if (n === null) assert.deepEqual(back.subarray(10, 15), new Uint8Array(5));
    else {
      assert.equal(n, 5);
      assert.deepEqual(back.subarray(10, 15), Uint8Array.of(1, 2, 3, 4, 5));
    }
  } finally {
    closeSync(fd);
    f.done();
  }
});

test("bad arguments are TypeError/RangeError, I/O errors are NativeErrors", () => {
  assert.throws(() => preadvNowait(0, [], 0), RangeError);
  assert.throws(() => preadvNowait(0, ["x" as unknown as Uint8Array], 0), TypeError);
  assert.throws(() => preadvNowait(0, [new Uint8Array(1)], -1), RangeError);
  assert.throws(
    () => preadvNowait(0x7ffffff0, [new Uint8Array(1)], 0),
    (e) => isNativeError(e, "EBADF"),
  );
});

/**
 * Backing stores written as ES modules (src/devices/blk/module-backing.ts):
 * the example copy-on-write store (examples/cow-store.ts) opened the way a
 * dataplane runtime opens it, answering reads, concurrent partial writes in
 * one block, flush and reopen, with the base image untouched; and every way a
 * store module can be unusable, each refused with one line naming the module.
 * VIRTIO 1.2 §5.2.6.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { ErrorCode, isVirtioError } from "../../src/errors.ts";
import { silentLogger } from "../../src/log.ts";
import { openModuleBacking } from "../../src/devices/blk/module-backing.ts";
import { openPortableBacking } from "../../src/devices/blk/backing-spec.ts";

const COW = new URL("../../examples/cow-store.ts", import.meta.url).href;
const ctx = { logicalBlockSize: 512, logger: silentLogger };

function pattern(len: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: len }, (_, i) => (i * 7 + seed) & 0xff);
}

test("the copy-on-write store: base bytes until written, concurrent partial writes into one block, durable after flush", async () => {
  const dir = mkdtempSync(join(tmpdir(), "cow-"));
  try {
    const base = join(dir, "base.img");
    const baseBytes = pattern(1 << 20, 3);
    writeFileSync(base, baseBytes);
    const options = { base, overlay: join(dir, "vm.cow") };
    const store = await openPortableBacking({ kind: "module", url: COW, options }, ctx);
    assert.equal(store.size, 1 << 20);
    const all = new Uint8Array(1 << 20);
    await store.readv(0, [all]);
    assert.deepEqual(all, baseBytes);

    // Every 512-byte sector of 64 blocks written at once, in a shuffled order, plus one write
    // across two blocks: partial writes into one block must not undo each other's copy-up.
    const expect = baseBytes.slice();
    const sectors = Array.from({ length: 64 * 8 }, (_, i) => 65536 + i * 512);
    for (let i = sectors.length - 1; i > 0; i--) {
      const j = (i * 7919) % (i + 1);
      [sectors[i], sectors[j]] = [sectors[j]!, sectors[i]!];
    }
    const c = pattern(8192, 50);
    expect.set(c, 20480 + 1024);
    await Promise.all([
      store.writev(20480 + 1024, [c]),
      ...sectors.map((at) => {
        const data = pattern(512, at >> 9);
        expect.set(data, at);
        return store.writev(at, [data]);
      }),
    ]);
    await store.readv(0, [all.subarray(0, 65536), all.subarray(65536)]);
    assert.deepEqual(all, expect);
    await store.writeZeroes(4096, 4096, false);
    expect.fill(0, 4096, 8192);
    await store.flush();
    await store.close();

    const again = await openModuleBacking({ kind: "module", url: COW, options }, ctx);
    await again.readv(0, [all]);
    assert.deepEqual(all, expect, "the overlay and its map survive a reopen");
    await again.close();
    assert.deepEqual(
      new Uint8Array(readFileSync(base)),
      baseBytes,
      "the base image is never written",
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("an unusable store module is refused with one line naming it", async () => {
  const dir = mkdtempSync(join(tmpdir(), "store-"));
  try {
    const cases: [string, string, RegExp][] = [
      ["none.mjs", "export const x = 1;", /exports no openBacking function/],
      [
        "throws.mjs",
        "export function openBacking() { throw new Error('no base'); }",
        /openBacking failed: no base/,
      ],
      ["null.mjs", "export function openBacking() { return null; }", /did not return an object/],
      [
        "nomethods.mjs",
        "export function openBacking() { return { size: 512, readOnly: false, readv() {}, close: async () => {} }; }",
        /has no writev, flush, discard, writeZeroes method/,
      ],
      [
        "size.mjs",
        "const f = async () => {}; export function openBacking() { return { size: 1000, readOnly: false, readv: f, writev: f, flush: f, discard: f, writeZeroes: f, close: f }; }",
        /size 1000 is not a multiple of the logical block size 512/,
      ],
      ["syntax.mjs", "export function openBacking( {", /cannot be imported/],
    ];
    for (const [name, code, message] of cases) {
      writeFileSync(join(dir, name), code);
      const url = pathToFileURL(join(dir, name)).href;
      await assert.rejects(openModuleBacking({ kind: "module", url }, ctx), (e) => {
        assert.ok(isVirtioError(e, ErrorCode.BLK_IMAGE), String(e));
        assert.match(e.message, new RegExp(`^backing module ${url}: `));
        assert.match(e.message, message);
        assert.doesNotMatch(e.message, /\n/);
        return true;
      });
    }
    const missing = pathToFileURL(join(dir, "missing.mjs")).href;
    await assert.rejects(
      openModuleBacking({ kind: "module", url: missing }, ctx),
      /cannot be imported/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

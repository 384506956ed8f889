// The SIGBUS guard (native/sigbus.cc, ./sigbus.ts): a guarded mapping whose
// file shrinks reads zeros, swallows writes and counts the faults; system
// calls into it fail with EFAULT; a SIGBUS anywhere else still kills.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readSync, writeSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { ftruncate, memfdCreate } from "./files.ts";
import { mapRegion, mappingCount, mmap, munmap, pageSize, unmapRegion } from "./memory.ts";
import { isNativeError } from "./native-error.ts";
import { guardedMappingCount, guardFaultTotal, mappingFaults } from "./sigbus.ts";
import { close } from "./sockets.ts";

const PAGE = pageSize();

function memfd(size: number): number {
  const fd = memfdCreate("guarded");
  ftruncate(fd, size);
  return fd;
}

test("a guarded mapping survives its file shrinking: zeros read, writes dropped, faults counted", () => {
  const before = { mappings: mappingCount(), guarded: guardedMappingCount() };
  const fd = memfd(4 * PAGE);
  const buffer = mmap(fd, 4 * PAGE, 0, true, true);
  const view = new Uint8Array(buffer);
  view.fill(0xab);
  assert.equal(guardedMappingCount(), before.guarded + 1);
  assert.equal(mappingFaults(buffer), 0);
  const total = guardFaultTotal();

  ftruncate(fd, 0); // what a hostile frontend does to an unsealed memfd
  assert.equal(view[0], 0, "a page past the end of file reads as zeros");
  assert.equal(view[PAGE + 5], 0);
  view[2 * PAGE] = 7; // lands in a private zero page
  assert.equal(view[2 * PAGE], 7);
  assert.equal(mappingFaults(buffer), 3, "one fault per page touched");
  assert.equal(guardFaultTotal(), total + 3);

  ftruncate(fd, 4 * PAGE);
  const file = Buffer.alloc(PAGE);
  assert.equal(readSync(fd, file, 0, PAGE, 2 * PAGE), PAGE);
  assert.equal(file[0], 0, "the write never reached the file");

  assert.equal(munmap(buffer), true);
  assert.equal(guardedMappingCount(), before.guarded, "munmap unregisters");
  assert.equal(mappingCount(), before.mappings);
  close(fd);
});

test("system calls into a shrunk guarded mapping fail with EFAULT instead of signalling", () => {
  const fd = memfd(2 * PAGE);
  const windows = mapRegion(fd, 2 * PAGE, 0, { guard: true });
  const view = new Uint8Array(windows[0]!.buffer);
  const source = memfd(PAGE);
  ftruncate(fd, 0);
  // The kernel copies into / out of the missing pages: no signal, an error.
  assert.throws(
    () => readSync(source, view, 0, PAGE, 0),
    (e: NodeJS.ErrnoException) => e.code === "EFAULT",
  );
  assert.throws(
    () => writeSync(source, view, PAGE, PAGE, 0),
    (e: NodeJS.ErrnoException) => e.code === "EFAULT",
  );
  assert.equal(mappingFaults(windows[0]!.buffer), 0, "the kernel path raises no SIGBUS");
  unmapRegion(windows);
  close(source);
  close(fd);
});

test("mappingFaults: 0 for an unguarded mapping, TypeError for other buffers", () => {
  const fd = memfd(PAGE);
  const buffer = mmap(fd, PAGE, 0);
  assert.equal(mappingFaults(buffer), 0);
  assert.throws(() => mappingFaults(new ArrayBuffer(8)), TypeError);
  munmap(buffer);
  assert.equal(mappingFaults(buffer), 0, "detached");
  close(fd);
  assert.throws(
    () => mmap(-1, PAGE, 0, true, true),
    (e: unknown) => e instanceof RangeError || isNativeError(e),
  );
});

const CHILD = `
import { ftruncate, memfdCreate } from "./files.ts";
import { mmap } from "./memory.ts";
const fd = memfdCreate("unguarded");
ftruncate(fd, 2 * 4096);
const guarded = new Uint8Array(mmap(fd, 8192, 0, true, true));
const plain = new Uint8Array(mmap(fd, 8192, 0, true, false));
ftruncate(fd, 0);
console.log("guarded", guarded[0]);
console.log("plain", plain[0]);
console.log("survived");
`;

test("a SIGBUS outside every guarded mapping keeps its default action (the process dies)", () => {
  const dir = fileURLToPath(new URL(".", import.meta.url));
  const r = spawnSync(
    process.execPath,
    ["--import", "tsx", "--input-type=module", "--eval", CHILD],
    { cwd: dir, encoding: "utf8", timeout: 60_000 },
  );
  assert.match(r.stdout, /^guarded 0$/m, r.stderr);
  assert.doesNotMatch(r.stdout, /plain|survived/);
  assert.equal(r.signal, "SIGBUS", `status ${r.status} ${r.stderr}`);
});

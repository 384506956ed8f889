import { test } from "node:test";
import assert from "node:assert/strict";
import { closeSync, constants, openSync, readSync, writeSync } from "node:fs";
import { setImmediate as nextTurn } from "node:timers/promises";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import fc from "fast-check";
import { ftruncate, memfdCreate } from "./files.ts";
import {
  mapAlignment,
  mappingCount,
  mapRegion,
  MAX_WINDOW,
  mmap,
  munmap,
  pageSize,
  planWindows,
  unmapRegion,
  type MappedWindow,
} from "./memory.ts";
import { isNativeError } from "./native-error.ts";
import { close } from "./sockets.ts";
import { fdsOpenedSince, fdSnapshot } from "./test-support.ts";

const GiB = 2 ** 30;
const PAGE = pageSize();

function memfd(size: number, name = "mem"): number {
  const fd = memfdCreate(name);
  ftruncate(fd, size);
  return fd;
}

function readAt(fd: number, position: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  assert.equal(readSync(fd, buf, 0, length, position), length);
  return buf;
}

/** Runs `body` and asserts it leaves no fd and no mapping behind. */
function noLeak(body: () => void): void {
  const fds = fdSnapshot();
  const mappings = mappingCount();
  body();
  assert.deepEqual(fdsOpenedSince(fds), []);
  assert.equal(mappingCount(), mappings);
}

/** The byte at region offset `x`, read through the window holding it. */
function regionByte(windows: readonly MappedWindow[], x: number): number | undefined {
  const w = windows.find((w) => x >= w.offset && x < w.offset + w.size);
  if (w === undefined) return undefined;
  return new Uint8Array(w.buffer, w.bufferOffset + (x - w.offset), 1)[0];
}

test("a shared mapping of a memfd and the file see each other's writes, with no copy", () => {
  noLeak(() => {
    const fd = memfd(2 * PAGE);
    assert.equal(mapAlignment(fd), PAGE);
    const buffer = mmap(fd, 2 * PAGE, 0);
    assert.equal(buffer.byteLength, 2 * PAGE);
    const view = new Uint8Array(buffer);
    view.set([1, 2, 3], PAGE + 10);
    assert.deepEqual([...readAt(fd, PAGE + 10, 3)], [1, 2, 3]);
    writeSync(fd, Buffer.from([9, 8, 7]), 0, 3, 5);
    assert.deepEqual([...view.subarray(5, 8)], [9, 8, 7]);
    // Two mappings of the same pages alias each other.
    const second = new Uint8Array(mmap(fd, PAGE, PAGE));
    assert.equal(second[10], 1);
    second[20] = 42;
    assert.equal(view[PAGE + 20], 42);
    assert.equal(munmap(second.buffer), true);
    assert.equal(munmap(buffer), true);
    close(fd);
  });
});

test("munmap detaches the buffer: views become empty, later access reads nothing", () => {
  noLeak(() => {
    const fd = memfd(PAGE);
    const buffer = mmap(fd, PAGE, 0);
    const view = new Uint8Array(buffer);
    const data = new DataView(buffer);
    view[0] = 1;
    assert.equal(munmap(buffer), true);
    assert.equal(buffer.byteLength, 0);
    assert.equal(view.length, 0);
    assert.equal(view[0], undefined);
    assert.throws(() => data.getUint8(0), TypeError);
    assert.equal(munmap(buffer), false, "already detached");
    assert.equal(readAt(fd, 0, 1)[0], 1, "the file keeps what was written");
    close(fd);
  });
});

test("munmap rejects buffers that mmap did not return", () => {
  noLeak(() => {
    assert.throws(() => munmap(new ArrayBuffer(PAGE)), TypeError);
    assert.throws(() => munmap(new Uint8Array(8) as unknown as ArrayBuffer), TypeError);
    const fd = memfd(PAGE);
    const buffer = mmap(fd, PAGE, 0);
    // A clone holds a copy at another address.
    const clone = structuredClone(buffer);
    assert.throws(() => munmap(clone), TypeError);
    munmap(buffer);
    close(fd);
  });
});

test("a mapping cannot be transferred to another owner: the transfer copies it", () => {
  noLeak(() => {
    const fd = memfd(PAGE);
    const buffer = mmap(fd, PAGE, 0);
    new Uint8Array(buffer)[0] = 5;
    const moved = structuredClone(buffer, { transfer: [buffer] });
    assert.equal(buffer.byteLength, PAGE, "the original stays attached");
    new Uint8Array(moved)[0] = 6;
    assert.equal(readAt(fd, 0, 1)[0], 5, "the copy is not the mapping");
    munmap(buffer);
    close(fd);
  });
});

test("a private mapping reads the file but keeps its writes, and works on a read-only fd", () => {
  noLeak(() => {
    const fd = memfd(PAGE);
    writeSync(fd, Buffer.from("shared"), 0, 6, 0);
    const readOnly = openSync(`/proc/self/fd/${fd}`, constants.O_RDONLY);
    assert.throws(
      () => mmap(readOnly, PAGE, 0, true),
      (e: unknown) => isNativeError(e, "EACCES"),
    );
    const buffer = mmap(readOnly, PAGE, 0, false);
    const view = new Uint8Array(buffer);
    assert.equal(Buffer.from(view.subarray(0, 6)).toString(), "shared");
    view[0] = 0x53; // "S": lands in a private copy
    assert.equal(readAt(fd, 0, 6).toString(), "shared");
    munmap(buffer);
    closeSync(readOnly);
    close(fd);
  });
});

test("mmap refuses unaligned offsets, bad lengths and ranges past the end of the file", () => {
  noLeak(() => {
    const fd = memfd(4 * PAGE);
    assert.throws(() => mmap(fd, PAGE, 100), RangeError);
    assert.throws(() => mmap(fd, 0, 0), RangeError);
    assert.throws(() => mmap(fd, MAX_WINDOW + 1, 0), RangeError);
    assert.throws(() => mmap(fd, -1, 0), RangeError);
    assert.throws(
      () => mmap(fd, 4 * PAGE, PAGE),
      (e: unknown) => isNativeError(e, "ENXIO") && e.syscall === "mmap",
    );
    // Within the last page of the file is fine.
    ftruncate(fd, 4 * PAGE - 100);
    munmap(mmap(fd, 4 * PAGE, 0));
    assert.throws(
      () => mmap(999_999, PAGE, 0),
      (e: unknown) => isNativeError(e, "EBADF"),
    );
    close(fd);
  });
});

test("a mapping that is only dropped is unmapped by its finalizer", async () => {
  setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc") as () => void;
  const before = mappingCount();
  const fd = memfd(PAGE);
  (() => {
    new Uint8Array(mmap(fd, PAGE, 0))[0] = 1;
  })();
  assert.equal(mappingCount(), before + 1);
  for (let i = 0; i < 100 && mappingCount() !== before; i++) {
    gc();
    await nextTurn(); // the finalizer runs from the event loop
  }
  assert.equal(mappingCount(), before);
  close(fd);
});

test("planWindows covers the region with aligned windows of at most maxWindow bytes", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 21 }),
      fc.integer({ min: 1, max: 64 }),
      fc.integer({ min: 0, max: 2 ** 40 }),
      fc.double({ min: 0, max: 50, noNaN: true }),
      (alignShift, windowUnits, fileOffset, windowsWanted) => {
        const alignment = 2 ** alignShift;
        // maxWindow need not be a multiple of the alignment.
        const maxWindow = Math.min(windowUnits * alignment + (windowUnits % alignment), MAX_WINDOW);
        const step = Math.floor(maxWindow / alignment) * alignment;
        const size = Math.max(1, Math.floor(windowsWanted * step)); // at most ~51 windows
        const windows = planWindows(size, fileOffset, alignment, maxWindow);
        assert.equal(
          windows.length,
          Math.ceil((fileOffset + size - (fileOffset - (fileOffset % alignment))) / step),
        );
        let next = 0;
        windows.forEach((w, i) => {
          assert.equal(w.offset, next, "contiguous");
          assert.ok(w.size > 0);
          assert.equal(w.fileOffset % alignment, 0, "aligned");
          assert.ok(w.length <= step);
          assert.equal(w.length, w.bufferOffset + w.size);
          assert.equal(w.fileOffset + w.bufferOffset, fileOffset + w.offset, "same bytes");
          if (i > 0) assert.equal(w.bufferOffset, 0);
          next += w.size;
        });
        assert.equal(next, size, "covers the region");
      },
    ),
  );
});

test("planWindows examples and argument checks", () => {
  assert.deepEqual(planWindows(10, 4096 + 5, 4096), [
    { offset: 0, size: 10, fileOffset: 4096, length: 15, bufferOffset: 5 },
  ]);
  assert.deepEqual(planWindows(5 * GiB, 0, 4096), [
    { offset: 0, size: 4 * GiB, fileOffset: 0, length: 4 * GiB, bufferOffset: 0 },
    { offset: 4 * GiB, size: GiB, fileOffset: 4 * GiB, length: GiB, bufferOffset: 0 },
  ]);
  // Never more than 4 GiB, whatever maxWindow says.
  assert.equal(planWindows(8 * GiB, 0, 4096, 8 * GiB).length, 2);
  assert.throws(() => planWindows(0, 0, 4096), RangeError);
  assert.throws(() => planWindows(1, -1, 4096), RangeError);
  assert.throws(() => planWindows(1, 0.5, 4096), RangeError);
  assert.throws(() => planWindows(1, 0, 4096, 4095), RangeError);
  assert.throws(() => planWindows(2 ** 53, 1, 4096), RangeError);
});

test("mapRegion maps a 5 GiB sparse memfd at an unaligned offset as a 4 GiB and a 1 GiB window", () => {
  noLeak(() => {
    const fd = memfd(5 * GiB);
    const fileOffset = 3 * PAGE + 100;
    const size = 5 * GiB - fileOffset - PAGE;
    const windows = mapRegion(fd, size, fileOffset);
    assert.equal(windows.length, 2);
    const [w0, w1] = windows as [MappedWindow, MappedWindow];
    assert.equal(w0.buffer.byteLength, MAX_WINDOW);
    assert.deepEqual([w0.offset, w0.bufferOffset, w0.size], [0, 100, MAX_WINDOW - 100]);
    assert.deepEqual([w1.offset, w1.bufferOffset, w1.size], [MAX_WINDOW - 100, 0, size - w0.size]);
    assert.equal(w1.buffer.byteLength, size - w0.size);
    // Region bytes around the window boundary and at both ends (touches 4 pages).
    const probes = [0, w0.size - 1, w0.size, size - 1];
    probes.forEach((x, i) => {
      writeSync(fd, Buffer.from([i + 1]), 0, 1, fileOffset + x);
      assert.equal(regionByte(windows, x), i + 1, `region byte ${x} via its window`);
    });
    new Uint8Array(w1.buffer, 0, 1)[0] = 0xee;
    assert.equal(readAt(fd, fileOffset + w0.size, 1)[0], 0xee);
    unmapRegion(windows);
    assert.equal(w0.buffer.byteLength, 0);
    assert.equal(w1.buffer.byteLength, 0);
    close(fd);
  });
});

test("mapRegion with small windows: every region byte reads back through its window", () => {
  noLeak(() => {
    const fileSize = 16 * PAGE;
    const fd = memfd(fileSize);
    const pattern = Buffer.alloc(fileSize);
    for (let i = 0; i < fileSize; i++) pattern[i] = (i * 7 + 3) & 0xff;
    writeSync(fd, pattern, 0, fileSize, 0);
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: fileSize - 1 }),
        fc.integer({ min: 1, max: fileSize }),
        fc.integer({ min: 1, max: 5 }),
        (fileOffset, wantSize, windowPages) => {
          const size = Math.min(wantSize, fileSize - fileOffset);
          const windows = mapRegion(fd, size, fileOffset, { maxWindow: windowPages * PAGE });
          try {
            for (let x = 0; x < size; x++) {
              assert.equal(regionByte(windows, x), pattern[fileOffset + x]);
            }
          } finally {
            unmapRegion(windows);
          }
        },
      ),
      { numRuns: 40 },
    );
    close(fd);
  });
});

test("mapRegion unmaps the windows it made when a later one fails", () => {
  noLeak(() => {
    const fd = memfd(3 * PAGE);
    assert.throws(
      () => mapRegion(fd, 4 * PAGE, 0, { maxWindow: PAGE }),
      (e: unknown) => isNativeError(e, "ENXIO"),
    );
    close(fd);
  });
});

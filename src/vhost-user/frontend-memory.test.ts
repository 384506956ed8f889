/**
 * SharedGuestMemory: a memfd mapped here and described to the back-end as
 * one region (gpa = uva = base); what this process writes is in the file
 * the back-end maps; the bump allocator; close releases fd and mapping.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ErrorCode, isVirtioError } from "../errors.ts";
import { mappingCount, mmap, munmap, pageSize } from "../native/index.ts";
import { fdSnapshot, fdsOpenedSince, fdTarget } from "../native/test-support.ts";
import { FRONTEND_MEMORY_BASE, SharedGuestMemory } from "./frontend-memory.ts";

describe("SharedGuestMemory", () => {
  test("one memfd region at the base, identity user address, shared with a second mapping", () => {
    const fds = fdSnapshot();
    const maps = mappingCount();
    const mem = SharedGuestMemory.create({ size: 3 * pageSize() - 100, name: "fe-test" });
    assert.equal(mem.size, 3 * pageSize(), "rounded up to the page size");
    assert.equal(mem.base, FRONTEND_MEMORY_BASE);
    assert.deepEqual(mem.region, {
      guestPhysAddr: BigInt(FRONTEND_MEMORY_BASE),
      memorySize: BigInt(mem.size),
      userspaceAddr: BigInt(FRONTEND_MEMORY_BASE),
      mmapOffset: 0n,
    });
    assert.match(fdTarget(mem.fd), /memfd:fe-test/);
    assert.deepEqual(mem.memory.layout, [{ guestPhysAddr: FRONTEND_MEMORY_BASE, size: mem.size }]);

    // What a back-end maps from the fd sees our writes, and we see its writes.
    const other = new Uint8Array(mmap(mem.fd, mem.size, 0));
    mem.memory.writeU32(FRONTEND_MEMORY_BASE + 8, 0xdeadbeef);
    assert.deepEqual([...other.subarray(8, 12)], [0xef, 0xbe, 0xad, 0xde]);
    other[mem.size - 1] = 0x5a;
    assert.equal(mem.memory.readU8(FRONTEND_MEMORY_BASE + mem.size - 1), 0x5a);
    munmap(other.buffer);

    // Outside the region is a guest-memory error, not a crash.
    assert.throws(
      () => mem.memory.readU8(FRONTEND_MEMORY_BASE - 1),
      (e) => isVirtioError(e, ErrorCode.MEM_OUT_OF_RANGE),
    );
    mem.close();
    mem.close();
    assert.equal(mem.closed, true);
    assert.deepEqual(fdsOpenedSince(fds), []);
    assert.equal(mappingCount(), maps);
  });

  test("alloc hands out aligned, disjoint ranges until the memory is exhausted", () => {
    const mem = SharedGuestMemory.create({ size: 16384, guestPhysAddr: 0x10_0000 });
    try {
      const a = mem.alloc(10);
      const b = mem.alloc(100, 4096);
      const c = mem.alloc(1, 64);
      assert.equal(a, 0x10_0000);
      assert.equal(b, 0x10_1000);
      assert.equal(c, 0x10_1080); // 0x10_1064 rounded up to 64
      assert.equal(mem.allocated, 0x1081);
      assert.throws(() => mem.alloc(16384), RangeError);
      assert.throws(() => mem.alloc(0), RangeError);
      assert.throws(() => mem.alloc(8, 3), RangeError);
      const rest = 0x10_4000 - 0x10_1088;
      assert.equal(mem.alloc(rest, 8), 0x10_1088);
      assert.throws(() => mem.alloc(1), /exhausted/);
    } finally {
      mem.close();
    }
  });

  test("bad sizes and bases are RangeErrors and leave nothing open", () => {
    const fds = fdSnapshot();
    assert.throws(() => SharedGuestMemory.create({ size: 0 }), RangeError);
    assert.throws(() => SharedGuestMemory.create({ size: 2 ** 32 + 1 }), RangeError);
    assert.throws(() => SharedGuestMemory.create({ size: 4096, guestPhysAddr: 100 }), RangeError);
    assert.throws(
      () => SharedGuestMemory.create({ size: 4096, guestPhysAddr: 2 ** 53 }),
      RangeError,
    );
    assert.deepEqual(fdsOpenedSince(fds), []);
  });
});

import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { ConfigSpace } from "./config-space.ts";

test("driver reads are bounded: bytes past the end read 0xff", () => {
  const c = new ConfigSpace(new Uint8Array([1, 2, 3, 4]));
  const dst = new Uint8Array(4);
  c.driverRead(2, dst);
  assert.deepEqual([...dst], [3, 4, 0xff, 0xff]);
  c.driverRead(4, dst);
  assert.deepEqual([...dst], [0xff, 0xff, 0xff, 0xff]);
  c.driverRead(-1, dst);
  assert.deepEqual([...dst], [0xff, 0xff, 0xff, 0xff]);
  c.driverRead(Number.NaN, dst);
  assert.deepEqual([...dst], [0xff, 0xff, 0xff, 0xff]);
});

test("driver writes go to the hook, truncated to the space; no hook = read-only", () => {
  const c = new ConfigSpace(8);
  const seen: [number, number[]][] = [];
  const hook = (off: number, data: Uint8Array, cs: ConfigSpace): void => {
    seen.push([off, [...data]]);
    cs.store(off, data);
  };
  assert.equal(c.driverWrite(6, new Uint8Array([9, 9, 9, 9]), hook), 2);
  assert.deepEqual(seen, [[6, [9, 9]]]);
  assert.equal(c.driverWrite(8, new Uint8Array([1]), hook), 0);
  assert.equal(c.driverWrite(-3, new Uint8Array([1]), hook), 0);
  assert.equal(c.driverWrite(0, new Uint8Array([7]), undefined), 0);
  assert.deepEqual([...c.snapshot()], [0, 0, 0, 0, 0, 0, 9, 9]);
  assert.equal(c.generation, 0, "a driver write stored by the hook does not bump the generation");
});

test("update bumps the generation and calls the listener once per change", () => {
  const c = new ConfigSpace(8);
  let calls = 0;
  c.setChangeListener(() => calls++);
  c.update((v) => v.setBigUint64(0, 123n, true));
  c.update((v) => v.setUint16(0, 7, true));
  assert.equal(c.generation, 2);
  assert.equal(calls, 2);
  assert.equal(c.getU16(0), 7);
  assert.equal(c.getU64(0), 7n);
});

test("store outside the space is a device bug (RangeError); bad sizes are rejected", () => {
  const c = new ConfigSpace(4);
  assert.throws(() => c.store(2, new Uint8Array(4)), RangeError);
  assert.throws(() => new ConfigSpace(-1), RangeError);
  assert.throws(() => new ConfigSpace(5000), RangeError);
});

test("property: arbitrary driver accesses never throw and never change bytes without a hook", () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ maxLength: 64 }),
      fc.oneof(fc.integer(), fc.double()),
      fc.integer({ min: 0, max: 80 }),
      (init, off, len) => {
        const c = new ConfigSpace(init);
        const dst = new Uint8Array(len);
        c.driverRead(off, dst);
        c.driverWrite(off, dst, undefined);
        assert.deepEqual(c.snapshot(), init);
      },
    ),
  );
});

import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  PACKED_RING_START,
  checkPackedRingState,
  cyclePos,
  decodePackedVringBase,
  encodePackedVringBase,
  outstandingSlots,
  type PackedRingState,
  type WrapCounter,
} from "./packed-ring-state.ts";

const state = (
  availPos: number,
  availWrap: WrapCounter,
  usedPos: number,
  usedWrap: WrapCounter,
): PackedRingState => ({ availPos, availWrap, usedPos, usedWrap });

test("vhost-user encoding: bits 0-14 avail, 15 avail wrap, 16-30 used, 31 used wrap", () => {
  assert.equal(encodePackedVringBase(PACKED_RING_START), 0x8000_8000);
  assert.equal(encodePackedVringBase(state(0, 0, 0, 0)), 0);
  assert.equal(encodePackedVringBase(state(0x7fff, 1, 0x7fff, 1)), 0xffff_ffff);
  assert.equal(encodePackedVringBase(state(5, 0, 3, 1)), 0x8003_0005);
  assert.equal(encodePackedVringBase(state(1, 1, 2, 0)), 0x0002_8001);
  assert.deepEqual(decodePackedVringBase(0x8003_0005), state(5, 0, 3, 1));
  assert.deepEqual(decodePackedVringBase(0x8000_8000), PACKED_RING_START);
  assert.deepEqual(decodePackedVringBase(0x0002_8001), state(1, 1, 2, 0));
});

test("vhost-user encoding round-trips every u32 and every valid state", () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0xffff_ffff }), (n) => {
      assert.equal(encodePackedVringBase(decodePackedVringBase(n)), n);
    }),
    { numRuns: 2000 },
  );
  const wrap = fc.constantFrom<WrapCounter>(0, 1);
  const pos = fc.integer({ min: 0, max: 0x7fff });
  fc.assert(
    fc.property(pos, wrap, pos, wrap, (a, aw, u, uw) => {
      const s = state(a, aw, u, uw);
      assert.deepEqual(decodePackedVringBase(encodePackedVringBase(s)), s);
    }),
    { numRuns: 2000 },
  );
});

test("encoding refuses what does not fit; decoding refuses what is not a u32", () => {
  for (const s of [
    state(0x8000, 1, 0, 1),
    state(0, 1, 0x8000, 1),
    state(-1, 1, 0, 1),
    state(0.5, 1, 0, 1),
    { ...PACKED_RING_START, availWrap: 2 as WrapCounter },
    { ...PACKED_RING_START, usedWrap: -1 as WrapCounter },
  ])
    assert.throws(() => encodePackedVringBase(s), RangeError, JSON.stringify(s));
  for (const n of [-1, 2 ** 32, 1.5, Number.NaN])
    assert.throws(() => decodePackedVringBase(n), RangeError, String(n));
});

test("outstanding descriptors between the used and avail positions, across the wrap", () => {
  const size = 5;
  assert.equal(outstandingSlots(state(0, 1, 0, 1), size), 0);
  assert.equal(outstandingSlots(state(3, 1, 1, 1), size), 2);
  // Avail wrapped, used not yet: from used 4 to the end (1), then 0..1 (2).
  assert.equal(outstandingSlots(state(2, 0, 4, 1), size), 3);
  // Same position, different wrap counters: a full ring outstanding.
  assert.equal(outstandingSlots(state(2, 0, 2, 1), size), 5);
  assert.equal(outstandingSlots(state(2, 1, 2, 0), size), 5);
  // Second lap: both wrapped back to 1.
  assert.equal(outstandingSlots(state(1, 1, 4, 0), size), 2);
  assert.equal(cyclePos(0, 1, size), 0);
  assert.equal(cyclePos(0, 0, size), 5);
  assert.equal(cyclePos(4, 0, size), 9);
});

test("checkPackedRingState: positions in the ring, used at most one ring behind avail", () => {
  assert.equal(checkPackedRingState(PACKED_RING_START, 1), null);
  assert.equal(checkPackedRingState(state(2, 0, 4, 1), 5), null);
  assert.equal(checkPackedRingState(state(2, 0, 2, 1), 5), null, "a full ring outstanding");
  assert.match(checkPackedRingState(state(5, 1, 0, 1), 5)!, /avail position 5/);
  assert.match(checkPackedRingState(state(0, 1, 5, 1), 5)!, /used position 5/);
  assert.match(
    checkPackedRingState(state(1, 1, 2, 1), 5)!,
    /not within one ring behind/,
    "used ahead of avail",
  );
  assert.match(checkPackedRingState(state(4, 0, 1, 1), 5)!, /not within one ring behind/);
  assert.match(
    checkPackedRingState({ ...PACKED_RING_START, availWrap: 3 as WrapCounter }, 5)!,
    /not bits/,
  );
});

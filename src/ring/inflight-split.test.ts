import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { inflightQueueRegionSize } from "../spec/vhost-user.ts";
import { SplitInflightLog } from "./inflight-split.ts";

const QSIZE = 16;

/** The device's side of a run: fetch, complete in any order, publish in batches. */
type Step = { op: "fetch" } | { op: "complete"; pick: number } | { op: "publish" };

const step: fc.Arbitrary<Step> = fc.oneof(
  fc.constant({ op: "fetch" } as const),
  fc.record({ op: fc.constant("complete" as const), pick: fc.nat() }),
  fc.constant({ op: "publish" } as const),
);

test("a fresh log is initialised (version, desc_num, used_idx = the ring's) and asks for nothing", () => {
  const region = new Uint8Array(inflightQueueRegionSize(QSIZE));
  const log = new SplitInflightLog(region, QSIZE);
  assert.equal(log.recover(37, QSIZE), null);
  const dv = new DataView(region.buffer);
  assert.deepEqual(
    [dv.getUint16(8, true), dv.getUint16(10, true), dv.getUint16(14, true)],
    [1, QSIZE, 37],
  );
  assert.equal(inflightQueueRegionSize(128), 2112, "QEMU's stride for 128 entries");
});

test("after a crash at any point, exactly the chains taken and not published are resubmitted, oldest first", () => {
  fc.assert(
    fc.property(fc.array(step, { maxLength: 300 }), fc.nat(0xffff), (steps, used0) => {
      const region = new Uint8Array(inflightQueueRegionSize(QSIZE));
      const log = new SplitInflightLog(region, QSIZE);
      log.recover(used0, QSIZE);
      const free = Array.from({ length: QSIZE }, (_, i) => QSIZE - 1 - i);
      let taken: number[] = []; // in fetch order, not yet completed
      let done: number[] = []; // completed, not yet published
      let fetchedCount = 0;
      const order = new Map<number, number>();
      let used = used0;
      for (const s of steps) {
        if (s.op === "fetch" && free.length > 0) {
          const head = free.pop()!;
          log.fetched(head);
          taken.push(head);
          order.set(head, fetchedCount++);
        } else if (s.op === "complete" && taken.length > 0) {
          const head = taken[s.pick % taken.length]!;
          taken = taken.filter((h) => h !== head);
          log.used(head);
          done.push(head);
        } else if (s.op === "publish") {
          used = (used + done.length) & 0xffff;
          log.published(used);
          free.unshift(...done);
          done = [];
        }
      }
      // Crash: a new back-end reads the same bytes; the ring's used.idx is what was published.
      const r = new SplitInflightLog(region, QSIZE).recover(used, QSIZE);
      const expected = [...taken, ...done].sort((a, b) => order.get(a)! - order.get(b)!);
      assert.ok(r !== null);
      assert.equal(r.discarded, undefined);
      assert.deepEqual(r.resubmit, expected);
      assert.equal(r.nextAvail, (used0 + fetchedCount) & 0xffff);
    }),
    { numRuns: 300 },
  );
});

test("resubmission keeps the fetch order across a batch published but not cleared", () => {
  const region = new Uint8Array(inflightQueueRegionSize(QSIZE));
  const log = new SplitInflightLog(region, QSIZE);
  log.recover(0, QSIZE);
  for (const h of [5, 2, 9, 7]) log.fetched(h);
  log.used(2);
  log.used(9);
  // The used ring's idx moved by 2 (published) but the marks were not cleared (crash in between).
  const r = new SplitInflightLog(region, QSIZE).recover(2, QSIZE);
  assert.deepEqual(r?.resubmit, [5, 7]);
  assert.equal(r?.nextAvail, 4);
  // The next back-end's fetches go on after the newest counter.
  const again = new SplitInflightLog(region, QSIZE);
  again.recover(2, QSIZE);
  again.fetched(11);
  const r2 = new SplitInflightLog(region, QSIZE).recover(2, QSIZE);
  assert.deepEqual(r2?.resubmit, [5, 7, 11]);
});

test("a log the front-end scribbled on never throws, never resubmits a head outside the ring or more than a ring", () => {
  fc.assert(
    fc.property(
      fc.uint8Array({
        minLength: inflightQueueRegionSize(QSIZE),
        maxLength: inflightQueueRegionSize(QSIZE),
      }),
      fc.nat(0xffff),
      fc.constantFrom(1, 2, 4, 8, 16),
      (bytes, usedIdx, ring) => {
        const r = new SplitInflightLog(bytes, QSIZE).recover(usedIdx, ring);
        if (r === null) return;
        assert.ok(r.resubmit.length <= ring);
        assert.ok(r.resubmit.every((h) => h < ring));
        assert.equal(new Set(r.resubmit).size, r.resubmit.length);
        assert.equal(r.nextAvail, (usedIdx + r.resubmit.length) & 0xffff);
      },
    ),
    { numRuns: 500 },
  );
  assert.throws(() => new SplitInflightLog(new Uint8Array(100), QSIZE), RangeError);
});

test("a ring larger than the log: the log is not used (one reason), nothing is written to it, nothing throws (found by fuzzing)", () => {
  for (const version of [0, 1]) {
    const region = new Uint8Array(inflightQueueRegionSize(2));
    const dv = new DataView(region.buffer);
    dv.setUint16(8, version, true);
    dv.setUint16(10, 2, true);
    const before = region.slice();
    const log = new SplitInflightLog(region, 2);
    const r = log.recover(0, 8);
    assert.match(r?.discarded ?? "", /ring of 8 entries, log of 2/);
    assert.equal(r?.untracked, true);
    assert.deepEqual(r?.resubmit, []);
    for (const h of [1, 5]) log.fetched(h);
    log.used(5);
    log.used(1);
    log.published(2);
    assert.deepEqual(region, before, "untouched");
  }
});

test("a fresh log (version 0) starts without marks, whatever the front-end left in it", () => {
  const region = new Uint8Array(inflightQueueRegionSize(QSIZE));
  region[16 + 16 * 3] = 1; // head 3 "in flight" in a log that says it is new
  assert.equal(new SplitInflightLog(region, QSIZE).recover(0, QSIZE), null);
  const r = new SplitInflightLog(region, QSIZE).recover(0, QSIZE);
  assert.deepEqual(r?.resubmit, []);
});

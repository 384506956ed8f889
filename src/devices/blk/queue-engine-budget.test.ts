/**
 * The engine's default budget where `setImmediate` exists (Node): a long
 * batch of available chains is processed in runs of
 * DEFAULT_BLK_ENGINE_BUDGET, and what each run completed is published and
 * signalled before the next run starts, so the driver can refill the ring
 * while the rest of the batch is processed.
 *
 * @module
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { MemoryBacking } from "./backing.ts";
import { DEFAULT_BLK_ENGINE_BUDGET } from "./queue-engine.ts";
import { VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN } from "../../spec/blk.ts";
import { BlkRig, pattern, until } from "../../../test/conformance/blk-harness.ts";

test("with setImmediate the default budget is 16", () => {
  assert.equal(typeof setImmediate, "function");
  assert.equal(DEFAULT_BLK_ENGINE_BUDGET, 16);
});

test("a long batch is published in runs of the default budget, each signalled before the next run", async () => {
  const r = new BlkRig({ backing: new MemoryBacking(pattern(1 << 20, 3)), queueSize: 256 });
  // Answered synchronously (GET_ID): the first run ends at the budget, published and signalled.
  for (let i = 0; i < 40; i++) r.add({ type: VIRTIO_BLK_T_GET_ID, inLen: 20 });
  r.engine.kick();
  assert.equal(r.drv.usedIdx, DEFAULT_BLK_ENGINE_BUDGET);
  assert.equal(r.notifications, 1);
  await until(() => r.drv.usedIdx === 40, "the rest of the batch");
  assert.ok(r.notifications >= 3, `${r.notifications} notifications for 40 chains in runs of 16`);
});

test("reads completed by the store in a run are published before the next run pops more", async () => {
  const disk = pattern(1 << 20, 5);
  // In-flight limit above the batch: only the budget splits it.
  const r = new BlkRig({
    backing: new MemoryBacking(disk),
    queueSize: 256,
    engine: { maxInFlight: 128 },
  });
  const reqs = Array.from({ length: 48 }, (_, i) =>
    r.add({ type: VIRTIO_BLK_T_IN, sector: i * 8, inLen: 4096 }),
  );
  const seen: number[] = [];
  const q = r.q;
  const pop = q.popAvail.bind(q);
  // Record the used index at each pop: it grows while the batch is still being consumed.
  q.popAvail = () => {
    seen.push(r.drv.usedIdx);
    return pop();
  };
  r.engine.kick();
  await until(() => r.drv.usedIdx === 48, "all reads");
  for (let i = 0; i < 48; i++) {
    const got = r.readIn(reqs[i]!);
    assert.deepEqual(got, disk.subarray(i * 4096, (i + 1) * 4096), `read ${i}`);
  }
  assert.equal(seen[0], 0);
  assert.ok(
    seen.some((u) => u > 0 && u < 48),
    "some chains were popped after earlier ones were already published",
  );
});

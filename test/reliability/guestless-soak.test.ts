/**
 * The guest-less soak in the suite, bounded: the CLI back-end under the
 * project's front-end with 4 KiB random reads and writes at depth 32, O_DIRECT
 * on 1 queue and on 2 queues with 2 I/O threads. Each run fails on a stall
 * (no completion for 10 s with requests outstanding), on a read that does not
 * return the last write, or if the back-end exits. Longer runs:
 * `npm run soak -- --guestless --minutes N`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { guestlessSoak } from "./guestless-soak.ts";

describe("guest-less soak: random 4 KiB reads and writes at depth 32", { timeout: 120_000 }, () => {
  for (const c of [
    { label: "1 queue, --direct --writeback", numQueues: 1, cliArgs: ["--direct", "--writeback"] },
    {
      label: "2 queues, --direct, 2 I/O threads",
      numQueues: 2,
      cliArgs: ["--direct", "--io-threads", "2"],
    },
  ]) {
    test(`${c.label}: no stall, every read returns the last write`, async (t) => {
      const r = await guestlessSoak({ ...c, seconds: 15 });
      assert.ok(r.reads > 0 && r.writes > 0, `reads ${r.reads}, writes ${r.writes}`);
      t.diagnostic(
        `${r.reads} reads, ${r.writes} writes; longest pause ${r.longestPauseMs} ms; ${r.repaired} lost wake-ups repaired`,
      );
    });
  }
});

/**
 * Runs every fuzz target briefly under the coverage-guided engine: the
 * committed seed corpus, then a fixed number of mutated inputs from a fixed
 * seed (bounded in runs and in time), in a scratch work directory. Any crash,
 * hang or memory blow-up fails the test with the target's report.
 * Long campaigns are `npm run fuzz` (docs/fuzzing.md).
 *
 * @module
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { fuzzTarget } from "../../fuzz/run.ts";
import { FUZZ_TARGETS } from "../../fuzz/targets/index.ts";

/** Mutated runs per target on top of its seeds. */
const RUNS = 3000;

for (const t of FUZZ_TARGETS) {
  test(`fuzz target ${t.name}: seeds and ${RUNS} mutated runs without a finding`, async () => {
    const work = mkdtempSync(join(tmpdir(), `virtio-ts-fuzz-${t.name}-`));
    try {
      const r = await fuzzTarget({
        target: t.name,
        seconds: 8,
        runs: RUNS,
        seed: 7,
        work,
        timeoutMs: 10000,
        rssLimitMb: 1024,
      });
      assert.equal(r.type, "done", `${t.name}: ${r.type}: ${r.detail ?? r.error ?? ""}`);
      assert.equal(r.exitCode, 0);
      assert.ok((r.runs ?? 0) > 0, "the target ran");
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
}

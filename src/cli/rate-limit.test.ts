import assert from "node:assert/strict";
import { test } from "node:test";
import { LineRateLimiter } from "./rate-limit.ts";

test("lines of one kind (numbers aside) pass up to the limit per window; drops are counted and reported", () => {
  let now = 0;
  const reports: string[] = [];
  const rl = new LineRateLimiter(
    (s) => reports.push(s),
    { lines: 3, windowMs: 1000 },
    () => now,
  );
  const passed = Array.from({ length: 10 }, (_, i) => rl.allow(`conn ${i}: ring 0 broken`));
  assert.deepEqual(passed, [true, true, true, false, false, false, false, false, false, false]);
  assert.equal(rl.allow("another kind of line 5"), true, "other kinds have their own budget");
  assert.deepEqual(reports, []);
  now = 1000;
  assert.equal(rl.allow("conn 99: ring 1 broken"), true, "a new window");
  assert.deepEqual(reports, ["7 more lines like this one were dropped: conn 3: ring 0 broken"]);
  for (let i = 0; i < 5; i++) rl.allow(`conn ${i}: ring 0 broken`);
  rl.flush();
  assert.equal(reports.at(-1), "3 more lines like this one were dropped: conn 2: ring 0 broken");
  rl.flush();
  assert.equal(reports.length, 2, "nothing more to report");
});

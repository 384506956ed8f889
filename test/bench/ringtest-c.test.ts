/**
 * Unit tests of the C ringtest wrapper's pure parts: which ringtest run each
 * of our ring jobs is compared with, and its command line.
 *
 * @module
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { ringtestArgs, ringtestRunFor } from "../../bench/ringtest-c.ts";

test("ringtestRunFor: sleep/poll mode, batch 1 or 32, one outstanding for ping-pong", () => {
  assert.deepEqual(ringtestRunFor("sleep", "batch-1", 1000), {
    sleep: true,
    batch: 1,
    runCycles: 1000,
  });
  assert.deepEqual(ringtestRunFor("sleep", "batch-32", 1000), {
    sleep: true,
    batch: 32,
    runCycles: 1000,
  });
  assert.deepEqual(ringtestRunFor("poll", "ping-pong", 50), {
    sleep: false,
    batch: 1,
    outstanding: 1,
    runCycles: 50,
  });
});

test("ringtestArgs: ringtest's long options, ring of 256; invalid counts rejected", () => {
  assert.deepEqual(ringtestArgs(ringtestRunFor("sleep", "ping-pong", 100)), [
    "--ring-size",
    "256",
    "--run-cycles",
    "100",
    "--batch",
    "1",
    "--outstanding",
    "1",
    "--sleep",
  ]);
  assert.equal(
    ringtestArgs(ringtestRunFor("poll", "batch-32", 7)).join(" "),
    "--ring-size 256 --run-cycles 7 --batch 32",
  );
  assert.throws(() => ringtestArgs({ sleep: true, batch: 1, runCycles: 0 }), RangeError);
  assert.throws(() => ringtestArgs({ sleep: true, batch: 1.5, runCycles: 10 }), RangeError);
  assert.throws(() => ringtestArgs({ sleep: true, batch: 1, runCycles: 2 ** 31 }), RangeError);
});

/**
 * The adaptive poller with a hand-driven clock and event loop: windows open
 * only when polling pays, grow while waits fit under the maximum, shrink to
 * nothing when they do not, and a stopped poller never runs its queue.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { QueuePoller } from "./adaptive-poll.ts";

function harness(maxNs: number) {
  let now = 0;
  /** When the driver's next request appears (Infinity: none pending). */
  let workAt = Infinity;
  const turns: (() => void)[] = [];
  const resumed: string[] = [];
  const p = new QueuePoller({
    maxNs,
    hasWork: () => now >= workAt,
    resume: () => resumed.push(now >= workAt ? "work" : "empty"),
    schedule: (fn) => turns.push(fn),
    now: () => now,
  });
  const spin = (stepNs: number): number => {
    let n = 0;
    while (turns.length > 0 && n < 10_000) {
      now += stepNs;
      turns.shift()!();
      n++;
    }
    return n;
  };
  return {
    p,
    resumed,
    spin,
    advance: (ns: number) => (now += ns),
    pending: () => turns.length,
    /** The queue runs dry; the driver's next request comes `waitNs` later (1 µs per poll turn). */
    cycle(waitNs: number): "polled" | "kicked" {
      workAt = now + waitNs;
      try {
        if (p.idle()) {
          spin(1_000);
          if (resumed.at(-1) === "work") return "polled";
          assert.equal(p.idle(), false, "after an empty window the queue sleeps");
        }
        now = Math.max(now, workAt);
        p.kicked();
        return "kicked";
      } finally {
        workAt = Infinity;
      }
    },
  };
}

describe("QueuePoller", () => {
  test("off: a maximum of 0 never opens a window", () => {
    const h = harness(0);
    for (let i = 0; i < 5; i++) assert.equal(h.cycle(1_000), "kicked");
    assert.equal(h.p.windowNs, 0);
    assert.equal(h.pending(), 0);
  });

  test("short waits grow the window from 4 µs by doubling, up to the maximum", () => {
    const h = harness(32_000);
    const seen: string[] = [];
    for (let i = 0; i < 6; i++) seen.push(`${h.cycle(20_000)} ${h.p.windowNs / 1000}`);
    assert.deepEqual(seen, [
      "kicked 4",
      "kicked 8",
      "kicked 16",
      "kicked 32",
      "polled 32",
      "polled 32",
    ]);
    assert.equal(h.p.hits, 2);
  });

  test("a window that ends empty resumes once, then the queue sleeps; idle() during a window keeps it", () => {
    const h = harness(16_000);
    for (let i = 0; i < 3; i++) h.cycle(10_000);
    assert.equal(h.p.windowNs, 16_000);
    const before = h.resumed.length;
    const misses = h.p.misses;
    assert.equal(h.p.idle(), true);
    assert.equal(h.p.idle(), true, "re-entered while polling: still polling, no second turn");
    assert.equal(h.pending(), 1);
    const turns = h.spin(1_000);
    assert.ok(turns >= 16 && turns <= 17, `${turns} turns over a 16 µs window at 1 µs each`);
    assert.deepEqual(h.resumed.slice(before), ["empty"]);
    assert.equal(h.p.misses, misses + 1);
    assert.equal(h.p.idle(), false, "the run after an empty window enables notifications");
    assert.equal(h.pending(), 0, "nothing polls while the queue sleeps");
  });

  test("long waits shrink the window by half, then to none", () => {
    const h = harness(32_000);
    for (let i = 0; i < 4; i++) h.cycle(20_000);
    assert.equal(h.p.windowNs, 32_000);
    const windows: number[] = [];
    for (let i = 0; i < 5; i++) {
      assert.equal(h.cycle(1_000_000), "kicked");
      windows.push(h.p.windowNs);
    }
    assert.deepEqual(windows, [16_000, 8_000, 4_000, 0, 0]);
  });

  test("stop: a pending turn does nothing and no window opens again", () => {
    const h = harness(32_000);
    for (let i = 0; i < 2; i++) h.cycle(20_000);
    assert.equal(h.p.idle(), true);
    h.p.stop();
    const before = h.resumed.length;
    h.spin(1_000);
    assert.equal(h.resumed.length, before, "not resumed after stop");
    assert.equal(h.p.idle(), false);
  });

  test("a ring that throws while polled counts as work: the queue's run reports it", () => {
    let now = 0;
    const resumed: number[] = [];
    const turns: (() => void)[] = [];
    const p = new QueuePoller({
      maxNs: 8_000,
      hasWork: () => {
        throw new Error("avail idx moved too far");
      },
      resume: () => resumed.push(now),
      schedule: (fn) => turns.push(fn),
      now: () => now,
    });
    p.idle();
    now += 1_000;
    p.kicked(); // window 4 µs
    assert.equal(p.idle(), true);
    turns.shift()!();
    assert.equal(resumed.length, 1);
  });

  test("a bad maximum is refused", () => {
    const o = { hasWork: () => false, resume: () => {}, schedule: () => {} };
    assert.throws(() => new QueuePoller({ ...o, maxNs: -1 }), RangeError);
    assert.throws(() => new QueuePoller({ ...o, maxNs: 1.5 }), RangeError);
  });
});

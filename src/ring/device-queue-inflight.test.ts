/**
 * DeviceQueue with an inflight log: a device killed at any point — between
 * any two ring operations, or after storing used.idx and before clearing
 * the log — and restarted on the same guest memory and log completes every
 * request the driver made available exactly once.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { GuestMemory } from "../memory/guest-memory.ts";
import { VIRTQ_DESC_F_WRITE } from "../spec/virtqueue.ts";
import { inflightQueueRegionSize } from "../spec/vhost-user.ts";
import { MockSplitQueue } from "../testing/mock-driver.ts";
import { DeviceQueue, type InflightTracker } from "./device-queue.ts";
import { SplitInflightLog } from "./inflight-split.ts";

const RING = 0x1000;
const DATA = 0x10000;

type Op =
  | { op: "submit"; n: number }
  | { op: "pop"; n: number }
  | { op: "complete"; pick: number }
  | { op: "publish" }
  | { op: "collect" }
  | { op: "crash"; midPublish: boolean };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({ op: fc.constant("submit" as const), n: fc.integer({ min: 1, max: 8 }) }),
  },
  {
    weight: 4,
    arbitrary: fc.record({ op: fc.constant("pop" as const), n: fc.integer({ min: 1, max: 8 }) }),
  },
  { weight: 5, arbitrary: fc.record({ op: fc.constant("complete" as const), pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.constant({ op: "publish" } as const) },
  { weight: 2, arbitrary: fc.constant({ op: "collect" } as const) },
  {
    weight: 2,
    arbitrary: fc.record({ op: fc.constant("crash" as const), midPublish: fc.boolean() }),
  },
);

class Crash extends Error {}

/** The log, with a fuse: a publish that crashes after used.idx was stored and before the log follows. */
class FusedLog implements InflightTracker {
  fuse = false;
  constructor(readonly log: SplitInflightLog) {}
  recover(usedIdx: number, queueSize: number) {
    return this.log.recover(usedIdx, queueSize);
  }
  fetched(head: number): void {
    this.log.fetched(head);
  }
  used(head: number): void {
    this.log.used(head);
  }
  published(usedIdx: number): void {
    if (this.fuse) throw new Crash("killed between used.idx and the log");
    this.log.published(usedIdx);
  }
}

/** A driver that gives each head at most once until it comes back, and a device restarted on demand. */
class World {
  readonly mem = GuestMemory.createShared([{ guestPhysAddr: 0, size: 0x40000 }]);
  readonly drv: MockSplitQueue;
  readonly region: Uint8Array;
  readonly free: number[];
  readonly outstanding = new Set<number>();
  completions = 0;
  resubmitted = 0;
  dev!: { q: DeviceQueue; log: FusedLog; popped: number[] };

  constructor(
    readonly size: number,
    start: number,
  ) {
    this.drv = new MockSplitQueue(this.mem, size, RING, { startIdx: start });
    this.drv.usedIdx = start;
    this.region = new Uint8Array(inflightQueueRegionSize(size));
    this.free = Array.from({ length: size }, (_, i) => i);
    this.restart();
  }

  /** A new device on the same memory and log; the front-end sets the avail base to used.idx. */
  restart(): void {
    const log = new FusedLog(new SplitInflightLog(this.region, this.size));
    const q = new DeviceQueue(this.mem, {
      ...this.drv.addresses,
      nextAvail: this.drv.usedIdx,
      inflight: log,
    });
    this.resubmitted += q.recovery?.resubmit.length ?? 0;
    assert.equal(q.recovery?.discarded, undefined);
    this.dev = { q, log, popped: [] };
  }

  submit(n: number): void {
    for (let i = 0; i < n && this.free.length > 0; i++) {
      const head = this.free.shift()!;
      this.drv.writeDesc(head, {
        addr: DATA + head * 16,
        len: 16,
        flags: VIRTQ_DESC_F_WRITE,
        next: 0,
      });
      this.drv.publish(head);
      this.outstanding.add(head);
    }
  }

  pop(n: number): void {
    for (let i = 0; i < n; i++) {
      const c = this.dev.q.popAvail();
      if (c === null) return;
      this.dev.popped.push(c.head);
    }
  }

  complete(pick: number): void {
    const p = this.dev.popped;
    if (p.length === 0) return;
    const [head] = p.splice(pick % p.length, 1);
    this.dev.q.addUsed(head!, 0);
  }

  /** The driver takes what was published: each head must be one it is waiting for. */
  collect(): void {
    for (let e = this.drv.popUsed(); e !== null; e = this.drv.popUsed()) {
      assert.ok(this.outstanding.delete(e.id), `head ${e.id} completed twice or never submitted`);
      this.free.push(e.id);
      this.completions++;
    }
  }

  step(s: Op): void {
    if (s.op === "submit") this.submit(s.n);
    else if (s.op === "pop") this.pop(s.n);
    else if (s.op === "complete") this.complete(s.pick);
    else if (s.op === "publish") this.dev.q.publishUsed();
    else if (s.op === "collect") this.collect();
    else this.crash(s.midPublish);
  }

  crash(midPublish: boolean): void {
    if (midPublish) {
      this.dev.log.fuse = true;
      try {
        this.dev.q.publishUsed(); // the kill lands inside, if anything was pending
      } catch (e) {
        if (!(e instanceof Crash)) throw e;
      }
    }
    this.restart();
  }

  /** Runs the device to the end: everything outstanding completes. */
  drain(): void {
    for (let round = 0; round < 4 * this.size && this.outstanding.size > 0; round++) {
      this.pop(this.size);
      while (this.dev.popped.length > 0) this.complete(0);
      this.dev.q.publishUsed();
      this.collect();
    }
  }
}

test("killed at any point and restarted, the device completes every request exactly once", () => {
  let resubmitted = 0;
  fc.assert(
    fc.property(
      fc.constantFrom(8, 16, 32),
      fc.oneof(fc.constant(0), fc.constant(0xfff0), fc.nat(0xffff)),
      fc.array(opArb, { maxLength: 200 }),
      (size, start, ops) => {
        const w = new World(size, start);
        let submitted = 0;
        for (const s of ops) {
          const before = w.outstanding.size;
          w.step(s);
          if (s.op === "submit") submitted += w.outstanding.size - before;
        }
        w.crash(false);
        w.drain();
        assert.equal(w.outstanding.size, 0, "every request completed");
        assert.equal(w.completions, submitted);
        resubmitted += w.resubmitted;
      },
    ),
    { numRuns: 400 },
  );
  assert.ok(resubmitted > 400, `the runs resubmitted ${resubmitted} chains`);
});

test("32 in flight, completed out of order, killed after 8 were published: the other 24 are resubmitted in fetch order", () => {
  const w = new World(32, 0);
  w.submit(32);
  w.pop(32);
  // Completion order: the odd heads first (short requests), then the even ones.
  const order = [
    ...w.dev.popped.filter((h) => h % 2 === 1),
    ...w.dev.popped.filter((h) => h % 2 === 0),
  ];
  for (const h of order.slice(0, 8)) w.dev.q.addUsed(h, 0);
  w.dev.popped = w.dev.popped.filter((h) => !order.slice(0, 8).includes(h));
  w.dev.q.publishUsed();
  for (const h of order.slice(8, 12)) w.dev.q.addUsed(h, 0); // written, never published
  w.restart();
  const r = w.dev.q.recovery;
  assert.ok(r !== null);
  const expected = Array.from({ length: 32 }, (_, i) => i).filter(
    (h) => !order.slice(0, 8).includes(h),
  );
  assert.deepEqual(r.resubmit, expected);
  assert.equal(r.nextAvail, 32);
  assert.equal(w.dev.q.hasAvailable(), true, "resubmissions count as available");
  w.drain();
  assert.equal(w.completions, 32);
  assert.equal(w.dev.q.inFlight, 0);
});

/**
 * PackedDeviceQueue with an inflight log: a device killed at any point — at
 * any store it makes to the log, the ring or a buffer, while taking lists,
 * completing them, publishing a batch, or recovering from an earlier kill —
 * and restarted on the same guest memory and log, with the stale ring state
 * QEMU sends after a crash, completes every request the driver made
 * available exactly once, with the data of that request.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { GuestMemory } from "../memory/guest-memory.ts";
import { inflightPackedQueueRegionSize } from "../spec/vhost-user.ts";
import { MockPackedQueue } from "../testing/mock-packed-driver.ts";
import { PackedInflightLog } from "./inflight-packed.ts";
import { PACKED_RING_START, PackedDeviceQueue } from "./packed-device-queue.ts";

const RING = 0x1000;
const DATA = 0x10000;
const TABLES = 0x40000;
const SLOTS = 512;

class Crash extends Error {}

const STORES = [
  "setUint8",
  "setUint16",
  "setUint32",
  "setBigUint64",
  "setFloat64",
  "setInt32",
] as const;

/**
 * Runs `fn`, throwing {@link Crash} at its `n`-th store (a DataView store or
 * an Atomics.store): a SIGKILL between any two. True if it was killed.
 */
function killedAt(n: number, fn: () => void): boolean {
  const proto = DataView.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
  const saved = STORES.map((k) => proto[k]!);
  const savedStore = Atomics.store;
  let left = n;
  const fuse = (): void => {
    if (left-- === 0) throw new Crash("killed");
  };
  STORES.forEach((k, i) => {
    proto[k] = function (this: DataView, ...a: unknown[]) {
      fuse();
      return saved[i]!.apply(this, a);
    };
  });
  (Atomics as { store: unknown }).store = (...a: Parameters<typeof Atomics.store>) => {
    fuse();
    return savedStore(...a);
  };
  try {
    fn();
    return false;
  } catch (e) {
    if (e instanceof Crash) return true;
    throw e;
  } finally {
    STORES.forEach((k, i) => (proto[k] = saved[i]!));
    (Atomics as { store: unknown }).store = savedStore;
  }
}

type DeviceOp = "pop" | "complete" | "publish" | "recover";
type Op =
  | { op: "submit"; n: number; kinds: number }
  | { op: "pop"; n: number }
  | { op: "complete"; pick: number }
  | { op: "publish" }
  | { op: "collect" }
  | { op: "kill"; during: DeviceOp; at: number; recoverAt: number | null };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      op: fc.constant("submit" as const),
      n: fc.integer({ min: 1, max: 6 }),
      kinds: fc.nat(),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({ op: fc.constant("pop" as const), n: fc.integer({ min: 1, max: 6 }) }),
  },
  { weight: 5, arbitrary: fc.record({ op: fc.constant("complete" as const), pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.constant({ op: "publish" } as const) },
  { weight: 2, arbitrary: fc.constant({ op: "collect" } as const) },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant("kill" as const),
      during: fc.constantFrom<DeviceOp>("pop", "complete", "publish", "recover"),
      at: fc.oneof(fc.nat(16), fc.nat(120)),
      recoverAt: fc.option(fc.nat(60), { freq: 2 }),
    }),
  },
);

interface Submission {
  readonly serial: number;
  readonly out: number;
  readonly slots: number;
}

/** A driver that checks every completion against the request it is waiting for, and a device restarted on demand. */
class World {
  readonly mem = GuestMemory.createShared([{ guestPhysAddr: 0, size: 0x80000 }]);
  readonly drv: MockPackedQueue;
  readonly region: Uint8Array;
  readonly outstanding = new Map<number, Submission>();
  ringUsed = 0;
  serial = 0;
  completions = 0;
  resubmitted = 0;
  kills = 0;
  /** Kills that landed inside the operation (the rest came after it). */
  inside = 0;
  q!: PackedDeviceQueue;
  popped: { id: number; serial: number; out: number }[] = [];

  constructor(readonly size: number) {
    this.drv = new MockPackedQueue(this.mem, size, RING);
    this.region = new Uint8Array(inflightPackedQueueRegionSize(size));
    this.restart();
  }

  /**
   * A new device on the same memory and log. The front-end's SET_VRING_BASE
   * is stale (QEMU 7.2 keeps its last state when GET_VRING_BASE fails): the
   * ring's start.
   */
  restart(): void {
    this.popped = [];
    this.q = new PackedDeviceQueue(this.mem, {
      size: this.size,
      descAddr: this.drv.descAddr,
      driverEventAddr: this.drv.driverAddr,
      deviceEventAddr: this.drv.deviceAddr,
      indirect: true,
      resume: PACKED_RING_START,
      inflight: new PackedInflightLog(this.region, this.size),
    });
    assert.equal(this.q.recovery?.discarded, undefined, "a kill never spoils the log");
    this.resubmitted += this.q.recovery?.resubmit.length ?? 0;
  }

  /** Requests of 1 (indirect), 2 or 3 ring descriptors, each with its own serial and buffers. */
  submit(n: number, kinds: number): void {
    for (let i = 0; i < n && this.outstanding.size < this.size; i++) {
      const kind = (kinds >> (2 * i)) % 3;
      const slots = kind === 0 ? 1 : kind + 1;
      if (slots > this.size - this.ringUsed) return;
      const s = ++this.serial;
      const base = DATA + (s % SLOTS) * 64;
      this.mem.writeU32(base, s);
      this.mem.writeU32(base + 16, 0);
      const inBuf = { addr: base, len: 8 };
      const outBuf = { addr: base + 16, len: 8, writable: true };
      const bufs = kind === 2 ? [inBuf, { addr: base + 32, len: 4 }, outBuf] : [inBuf, outBuf];
      const c = this.drv.buildChain(
        bufs,
        kind === 0 ? { indirectTable: TABLES + (s % SLOTS) * 32 } : {},
      );
      assert.equal(c.count, slots);
      this.drv.publish(c);
      this.outstanding.set(c.id, { serial: s, out: base + 16, slots });
      this.ringUsed += slots;
    }
  }

  pop(n: number): void {
    for (let i = 0; i < n; i++) {
      const c = this.q.popAvail();
      if (c === null) return;
      const serial = this.mem.readU32(c.segAddr[0]!);
      assert.equal(serial, this.outstanding.get(c.head)?.serial, `buffer ID ${c.head}'s request`);
      this.popped.push({ id: c.head, serial, out: c.segAddr[c.numSegs - 1]! });
    }
  }

  complete(pick: number): void {
    if (this.popped.length === 0) return;
    const [r] = this.popped.splice(pick % this.popped.length, 1);
    this.mem.writeU32(r!.out, r!.serial);
    this.q.addUsed(r!.id, 8);
  }

  /** The driver takes what was published: each must be the request it waits for under that ID. */
  collect(): void {
    for (let u = this.drv.popUsed(); u !== null; u = this.drv.popUsed()) {
      const o = this.outstanding.get(u.id);
      assert.ok(o !== undefined, `buffer ID ${u.id} completed twice or never submitted`);
      assert.equal(this.mem.readU32(o.out), o.serial, `buffer ID ${u.id}: the data of its request`);
      assert.equal(u.len, 8);
      this.outstanding.delete(u.id);
      this.ringUsed -= o.slots;
      this.completions++;
    }
  }

  /** Kills the device during `during` at its `at`-th store, then (`recoverAt`) its successor while it recovers. */
  kill(during: DeviceOp, at: number, recoverAt: number | null): void {
    this.kills++;
    if (during === "recover") {
      if (killedAt(at, () => this.restart())) this.inside++;
    } else {
      // The device runs on to the stage named, and is killed at the `at`-th store of the way.
      const inside = killedAt(at, () => {
        this.pop(this.size);
        if (during === "pop") return;
        while (this.popped.length > 0) this.complete(at + this.popped.length);
        if (during === "publish") this.q.publishUsed();
      });
      if (inside) this.inside++;
    }
    if (recoverAt !== null && killedAt(recoverAt, () => this.restart())) this.inside++;
    this.restart();
  }

  step(s: Op): void {
    if (s.op === "submit") this.submit(s.n, s.kinds);
    else if (s.op === "pop") this.pop(s.n);
    else if (s.op === "complete") this.complete(s.pick);
    else if (s.op === "publish") this.q.publishUsed();
    else if (s.op === "collect") this.collect();
    else this.kill(s.during, s.at, s.recoverAt);
  }

  /** Runs the device to the end: everything outstanding completes. */
  drain(): void {
    for (let round = 0; round < 4 * this.size && this.outstanding.size > 0; round++) {
      this.pop(this.size);
      while (this.popped.length > 0) this.complete(0);
      this.q.publishUsed();
      this.collect();
    }
  }
}

test("killed at any store and restarted, the device completes every request exactly once", (t) => {
  let resubmitted = 0;
  let kills = 0;
  let inside = 0;
  let requests = 0;
  fc.assert(
    fc.property(
      fc.constantFrom(3, 4, 5, 8, 16),
      fc.array(opArb, { maxLength: 150, size: "max" }),
      (size, ops) => {
        const w = new World(size);
        for (const s of ops) w.step(s);
        w.restart();
        w.drain();
        assert.equal(w.outstanding.size, 0, "every request completed");
        assert.equal(w.completions, w.serial);
        assert.equal(w.q.inFlight, 0);
        resubmitted += w.resubmitted;
        kills += w.kills;
        inside += w.inside;
        requests += w.serial;
      },
    ),
    { numRuns: 1500 },
  );
  t.diagnostic(
    `${requests} requests, ${kills} kills (${inside} inside an operation), ${resubmitted} lists resubmitted`,
  );
  assert.ok(
    resubmitted > 5000 && inside > 2000,
    `${resubmitted} resubmitted, ${inside} kills inside`,
  );
});

test("16 in flight, completed out of order, killed after 4 were published and 3 more written: 12 resubmitted in fetch order", () => {
  const w = new World(32);
  w.submit(6, 0b10_01_00_10_01_00); // 1, 2, 3, 1, 2, 3 ring descriptors
  w.submit(6, 0b10_01_00_10_01_00);
  w.submit(4, 0b00_10_01_00);
  const order = [...w.outstanding.keys()];
  w.pop(16);
  assert.equal(w.popped.length, 16);
  const popped = w.popped.map((p) => p.id);
  assert.deepEqual(popped, order);
  const byId = (id: number) => w.popped.findIndex((p) => p.id === id);
  const done = [popped[3]!, popped[0]!, popped[9]!, popped[15]!];
  for (const id of done) w.complete(byId(id));
  w.q.publishUsed();
  const usedPos = w.q.ringState.usedPos;
  for (const id of [popped[1]!, popped[2]!, popped[7]!]) w.complete(byId(id)); // written, never published
  const slotsInFlight = popped
    .filter((id) => !done.includes(id))
    .reduce((n, id) => n + w.outstanding.get(id)!.slots, 0);
  const written = w.q.ringState;
  w.restart();
  const r = w.q.recovery;
  assert.ok(r !== null && r.ring !== undefined);
  assert.deepEqual(
    r.resubmit,
    popped.filter((id) => !done.includes(id)),
  );
  assert.equal(r.ring.usedPos, usedPos, "used descriptors resume after the published ones");
  assert.notDeepEqual(r.ring, written);
  assert.equal(
    (r.ring.availPos - r.ring.usedPos + 32) % 32,
    slotsInFlight % 32,
    "new lists are taken after the ring descriptors of those in flight",
  );
  w.collect();
  assert.equal(w.completions, 4);
  w.drain();
  assert.equal(w.completions, 16);
});

import { test } from "node:test";
import assert from "node:assert/strict";
import { GuestMemory } from "../memory/guest-memory.ts";
import fc from "fast-check";
import {
  ErrorCode,
  VirtioError as VirtioErrorCtor,
  isVirtioError,
  type VirtioError,
} from "../errors.ts";
import { MockSplitQueue } from "../testing/mock-driver.ts";
import {
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY,
  vringNeedEvent,
} from "../spec/virtqueue.ts";
import { DeviceQueue, type DeviceQueueConfig } from "./device-queue.ts";

const RING = 0x1000;
const DATA = 0x10000;

function setup(size = 8, cfg: Partial<DeviceQueueConfig> = {}, startIdx = 0) {
  const mem = GuestMemory.createShared([{ guestPhysAddr: 0, size: 0x40000 }]);
  const drv = new MockSplitQueue(mem, size, RING, { startIdx });
  const broken: VirtioError[] = [];
  const q = new DeviceQueue(mem, {
    ...drv.addresses,
    nextAvail: startIdx,
    usedIdxFromMemory: startIdx !== 0,
    onBroken: (e) => broken.push(e),
    ...cfg,
  });
  return { mem, drv, q, broken };
}

const bytes = (...v: number[]) => new Uint8Array(v);

test("direct chain: readable then writable segments, data through the cursors", () => {
  const { mem, drv, q } = setup();
  mem.write(DATA, bytes(1, 2, 3, 4));
  mem.write(DATA + 0x100, bytes(5, 6));
  const head = drv.addChain([
    { addr: DATA, len: 4 },
    { addr: DATA + 0x100, len: 2 },
    { addr: DATA + 0x200, len: 8, writable: true },
  ]);
  assert.equal(q.hasAvailable(), true);
  const c = q.popAvail();
  assert.ok(c, "popped");
  assert.equal(c.head, head);
  assert.equal(c.numSegs, 3);
  assert.equal(c.numReadable, 2);
  assert.equal(c.readableBytes, 6);
  assert.equal(c.writableBytes, 8);
  assert.equal(c.descCount, 3);
  const got = new Uint8Array(6);
  assert.equal(c.reader().read(got), 6);
  assert.deepEqual(got, bytes(1, 2, 3, 4, 5, 6));
  const w = c.writer();
  assert.equal(w.write(bytes(9, 9, 9)), 3);
  assert.equal(q.inFlight, 1);
  assert.equal(q.popAvail(), null);
  q.addUsed(c.head, w.bytesWritten);
  assert.equal(q.inFlight, 0);
  assert.equal(drv.usedIdx, 0, "not visible before publishUsed");
  q.publishUsed();
  assert.equal(drv.usedIdx, 1);
  assert.deepEqual(drv.popUsed(), { id: head, len: 3 });
  assert.deepEqual(mem.readU16(DATA + 0x200), 0x0909);
});

test("indirect chain and direct prefix followed by one indirect descriptor", () => {
  const { drv, q } = setup(8, { indirect: true });
  const h1 = drv.addChain(
    [
      { addr: DATA, len: 16 },
      { addr: DATA + 0x100, len: 512, writable: true },
      { addr: DATA + 0x300, len: 1, writable: true },
    ],
    { indirectTable: DATA + 0x1000 },
  );
  const h2 = drv.addChain(
    [
      { addr: DATA, len: 16 },
      { addr: DATA + 0x20, len: 16 },
      { addr: DATA + 0x400, len: 64, writable: true },
    ],
    { indirectTable: DATA + 0x2000, directCount: 2 },
  );
  const c1 = q.popAvail()!;
  assert.equal(c1.head, h1);
  assert.deepEqual(
    [c1.numSegs, c1.numReadable, c1.readableBytes, c1.writableBytes],
    [3, 1, 16, 513],
  );
  const c2 = q.popAvail()!;
  assert.equal(c2.head, h2);
  assert.deepEqual(
    [c2.numSegs, c2.numReadable, c2.readableBytes, c2.writableBytes],
    [3, 2, 32, 64],
  );
  assert.equal(q.broken, null);
});

test("zero-length buffers are accepted and dropped from the segments", () => {
  const { drv, q } = setup();
  drv.addChain([
    { addr: DATA, len: 0 },
    { addr: 0xdead_0000_0000, len: 0, writable: true },
    { addr: DATA, len: 4, writable: true },
  ]);
  const c = q.popAvail()!;
  assert.equal(c.numSegs, 1);
  assert.equal(c.descCount, 3);
  assert.equal(c.writableBytes, 4);
});

test("many chains, batch publishing makes them visible at once", () => {
  const { drv, q } = setup(16);
  for (let round = 0; round < 10; round++) {
    const heads: number[] = [];
    for (let k = 0; k < 16; k++)
      heads.push(drv.addChain([{ addr: DATA + 0x40 * k, len: 8, writable: true }]));
    const popped = [];
    for (let c = q.popAvail(); c !== null; c = q.popAvail()) popped.push(c.head);
    assert.deepEqual(popped, heads);
    for (const h of popped.reverse()) q.addUsed(h, 8);
    assert.equal(drv.usedIdx, (round * 16) & 0xffff);
    q.publishUsed();
    assert.equal(drv.usedIdx, ((round + 1) * 16) & 0xffff);
    assert.deepEqual(
      drv.drainUsed().map((e) => e.id),
      heads.slice().reverse(),
    );
  }
});

test("wraparound of avail and used indexes past 65535", () => {
  const { drv, q } = setup(4, {}, 65533);
  assert.equal(q.nextAvail, 65533);
  assert.equal(q.nextUsed, 65533);
  for (let n = 0; n < 12; n++) {
    const h = drv.addChain([{ addr: DATA, len: 4, writable: true }]);
    const c = q.popAvail()!;
    assert.equal(c.head, h);
    q.addUsed(h, 4);
    q.publishUsed();
    assert.deepEqual(drv.popUsed(), { id: h, len: 4 });
  }
  assert.equal(q.nextAvail, (65533 + 12) & 0xffff);
  assert.equal(q.nextUsed, (65533 + 12) & 0xffff);
  assert.equal(drv.usedIdx, (65533 + 12) & 0xffff);
});

test("EVENT_IDX: needsNotification follows used_event across wraparound", () => {
  const { drv, q } = setup(4, { eventIdx: true });
  drv.usedEvent = 4;
  const fired: number[] = [];
  for (let n = 0; n < 65536 + 12; n++) {
    const h = drv.addChain([{ addr: DATA, len: 1, writable: true }]);
    q.popAvail();
    q.addUsed(h, 1);
    q.publishUsed();
    if (q.needsNotification()) fired.push(n + 1);
  }
  assert.deepEqual(fired, [5, 5 + 65536]);
});

test("no EVENT_IDX: NO_INTERRUPT suppresses; nothing published means no notification", () => {
  const { drv, q } = setup();
  assert.equal(q.needsNotification(), false);
  drv.addChain([{ addr: DATA, len: 1, writable: true }]);
  q.addUsed(q.popAvail()!.head, 1);
  q.publishUsed();
  assert.equal(q.needsNotification(), true);
  assert.equal(q.needsNotification(), false);
  drv.availFlags = VIRTQ_AVAIL_F_NO_INTERRUPT;
  drv.addChain([{ addr: DATA, len: 1, writable: true }]);
  q.addUsed(q.popAvail()!.head, 1);
  q.publishUsed();
  assert.equal(q.needsNotification(), false);
});

test("enable/disable notification without EVENT_IDX writes NO_NOTIFY and re-checks", () => {
  const { drv, q } = setup();
  q.disableNotification();
  assert.equal(drv.usedFlags, VIRTQ_USED_F_NO_NOTIFY);
  assert.equal(q.enableNotification(), false);
  assert.equal(drv.usedFlags, 0);
  q.disableNotification();
  drv.addChain([{ addr: DATA, len: 1 }]); // slips in while disabled
  assert.equal(q.enableNotification(), true);
});

test("enable notification with EVENT_IDX writes avail_event = nextAvail", () => {
  const { drv, q } = setup(8, { eventIdx: true });
  drv.addChain([{ addr: DATA, len: 1 }]);
  assert.equal(q.enableNotification(), true);
  assert.equal(drv.availEvent, 0);
  q.popAvail();
  q.disableNotification();
  assert.equal(drv.usedFlags, 0, "disable is a no-op with EVENT_IDX");
  assert.equal(q.enableNotification(), false);
  assert.equal(drv.availEvent, 1);
});

test("a bad head breaks the queue once and nothing more is done", () => {
  const { drv, q, broken } = setup();
  drv.publish(8);
  assert.throws(
    () => q.popAvail(),
    (e) => isVirtioError(e, ErrorCode.HEAD_OUT_OF_RANGE),
  );
  assert.equal(q.popAvail(), null);
  assert.equal(q.hasAvailable(), false);
  assert.equal(broken.length, 1);
  assert.equal(q.broken?.code, ErrorCode.HEAD_OUT_OF_RANGE);
});

test("a loop in the descriptor table is DESC_LOOP", () => {
  const { drv, q } = setup(4);
  drv.writeDesc(0, { addr: DATA, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 1 });
  drv.writeDesc(1, { addr: DATA, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 0 });
  drv.publish(0);
  assert.throws(
    () => q.popAvail(),
    (e) => isVirtioError(e, ErrorCode.DESC_LOOP),
  );
});

// ---- notification suppression (device side) ---------------------------------

/**
 * Starts a queue whose used idx is `start`, completes `added` chains (publishing
 * in batches of at most `size`), sets used_event, then asks needsNotification.
 */
function notifyAfter(start: number, added: number, usedEvent: number, size = 16): boolean {
  const { drv, q } = setup(size, { eventIdx: true }, start);
  drv.usedEvent = usedEvent;
  let left = added;
  while (left > 0) {
    const n = Math.min(left, size);
    for (let k = 0; k < n; k++) drv.addChain([{ addr: DATA, len: 1, writable: true }]);
    for (let k = 0; k < n; k++) q.addUsed(q.popAvail()!.head, 1);
    q.publishUsed();
    left -= n;
  }
  return q.needsNotification();
}

test("EVENT_IDX: the vm-virtio and Firecracker needs-notification cases", () => {
  // used_event = 8 but the used idx has already moved past it.
  assert.equal(notifyAfter(9, 1, 8), false);
  // used_event = 15: reaching 15 does not notify, reaching 16 does (entry 15 written).
  assert.equal(notifyAfter(14, 1, 15), false);
  assert.equal(notifyAfter(15, 1, 15), true);
  // used_event = 65532, next used becomes 65533.
  assert.equal(notifyAfter(65532, 1, 65532), true);
  // next_used 10, used_event 6: num_added 5 and 4 notify, 3 does not.
  assert.equal(notifyAfter(5, 5, 6), true);
  assert.equal(notifyAfter(6, 4, 6), true);
  assert.equal(notifyAfter(7, 3, 6), false);
  // Spec note §2.7.7.2: used_event 0 notifies after the 1st buffer.
  assert.equal(notifyAfter(0, 1, 0), true);
  // Window spanning the wrap: [65530, 4) contains 65535 and 2 but not 4.
  assert.equal(notifyAfter(65530, 10, 65535), true);
  assert.equal(notifyAfter(65530, 10, 2), true);
  assert.equal(notifyAfter(65530, 10, 4), false);
});

test("EVENT_IDX: an immediate second call without new used elements is false", () => {
  const { drv, q } = setup(8, { eventIdx: true }, 15);
  drv.usedEvent = 15;
  drv.addChain([{ addr: DATA, len: 1, writable: true }]);
  q.addUsed(q.popAvail()!.head, 1);
  q.publishUsed();
  assert.equal(q.needsNotification(), true);
  assert.equal(q.needsNotification(), false);
  q.publishUsed(); // nothing new: no store, still false
  assert.equal(q.needsNotification(), false);
});

test("EVENT_IDX: unpublished used elements do not count", () => {
  const { drv, q } = setup(8, { eventIdx: true });
  drv.usedEvent = 0;
  drv.addChain([{ addr: DATA, len: 1, writable: true }]);
  q.addUsed(q.popAvail()!.head, 1);
  assert.equal(q.needsNotification(), false);
  q.publishUsed();
  assert.equal(q.needsNotification(), true);
});

test("EVENT_IDX: more than 65535 elements published since the last check force a notification", () => {
  // With 65536 the window covers every u16 value but vring_need_event alone says false.
  for (const ev of [0, 7, 65535]) assert.equal(notifyAfter(0, 65536, ev), true, `used_event ${ev}`);
  assert.equal(notifyAfter(3, 65537, 3), true);
  // 65535 elements: the only value outside [old, new) is new itself.
  assert.equal(notifyAfter(0, 65535, 65535), false);
  assert.equal(notifyAfter(0, 65535, 65534), true);
});

test("no EVENT_IDX: used_event is ignored, only NO_INTERRUPT matters", () => {
  const { drv, q } = setup();
  drv.usedEvent = 1000;
  for (const flags of [0, VIRTQ_AVAIL_F_NO_INTERRUPT, 0xfffe, 0xffff]) {
    drv.availFlags = flags;
    drv.addChain([{ addr: DATA, len: 1, writable: true }]);
    q.addUsed(q.popAvail()!.head, 1);
    q.publishUsed();
    assert.equal(q.needsNotification(), (flags & 1) === 0, `flags ${flags}`);
  }
});

test("EVENT_IDX: NO_INTERRUPT is ignored", () => {
  const { drv, q } = setup(8, { eventIdx: true });
  drv.availFlags = VIRTQ_AVAIL_F_NO_INTERRUPT;
  drv.usedEvent = 0;
  drv.addChain([{ addr: DATA, len: 1, writable: true }]);
  q.addUsed(q.popAvail()!.head, 1);
  q.publishUsed();
  assert.equal(q.needsNotification(), true);
});

test("avail_event written by enableNotification follows nextAvail across wraparound", () => {
  const { drv, q } = setup(4, { eventIdx: true }, 65534);
  for (const expected of [65534, 65535, 0, 1]) {
    assert.equal(q.enableNotification(), false);
    assert.equal(drv.availEvent, expected);
    drv.addChain([{ addr: DATA, len: 1, writable: true }]);
    assert.equal(q.enableNotification(), true, "work pending");
    q.addUsed(q.popAvail()!.head, 1);
  }
  q.disableNotification();
  assert.equal(drv.availEvent, 1, "disable leaves avail_event alone with EVENT_IDX");
  assert.equal(drv.usedFlags, 0);
});

test("no EVENT_IDX: enable/disable only touch NO_NOTIFY, not avail_event", () => {
  const { drv, q } = setup(4);
  q.disableNotification();
  q.disableNotification();
  assert.equal(drv.usedFlags, VIRTQ_USED_F_NO_NOTIFY);
  assert.equal(drv.availEvent, 0);
  q.enableNotification();
  assert.equal(drv.usedFlags, 0);
  assert.equal(drv.availEvent, 0);
});

/** The driver's kick decision after publishing from `old` to `now` (Linux virtqueue_kick_prepare). */
function driverKicks(drv: MockSplitQueue, eventIdx: boolean, old: number, now: number): boolean {
  if (eventIdx) return vringNeedEvent(drv.availEvent, now, old);
  return (drv.usedFlags & VIRTQ_USED_F_NO_NOTIFY) === 0;
}

test("no lost wakeup: whichever order, enable sees the new chain or the driver kicks", () => {
  // Device: disable → drain → enable (store, then re-load avail.idx).
  // Driver: publish (store avail.idx) → check (load avail_event / used.flags).
  for (const eventIdx of [false, true]) {
    for (const order of [
      "publish+check, enable",
      "publish, enable, check",
      "enable, publish+check",
    ]) {
      const { drv, q } = setup(8, { eventIdx });
      // First round so avail_event has a non-trivial history.
      drv.addChain([{ addr: DATA, len: 1 }]);
      q.disableNotification();
      q.addUsed(q.popAvail()!.head, 0);
      const old = drv.availIdx;
      let slipped: boolean;
      let kicked: boolean;
      if (order === "publish+check, enable") {
        drv.addChain([{ addr: DATA, len: 1 }]);
        kicked = driverKicks(drv, eventIdx, old, drv.availIdx);
        slipped = q.enableNotification();
      } else if (order === "publish, enable, check") {
        drv.addChain([{ addr: DATA, len: 1 }]);
        slipped = q.enableNotification();
        kicked = driverKicks(drv, eventIdx, old, drv.availIdx);
      } else {
        slipped = q.enableNotification();
        drv.addChain([{ addr: DATA, len: 1 }]);
        kicked = driverKicks(drv, eventIdx, old, drv.availIdx);
        assert.equal(kicked, true, `${order}: notifications were enabled`);
      }
      assert.ok(slipped || kicked, `eventIdx=${eventIdx}, ${order}: lost wakeup`);
      if (order !== "enable, publish+check") {
        assert.equal(slipped, true, `${order}: the re-check must see the chain`);
      }
      assert.equal(q.popAvail()?.descCount, 1);
    }
  }
});

test("the documented drain loop runs again when work slips in during processing", () => {
  for (const eventIdx of [false, true]) {
    const { drv, q } = setup(8, { eventIdx });
    for (let k = 0; k < 3; k++) drv.addChain([{ addr: DATA, len: 1, writable: true }]);
    let rounds = 0;
    let handled = 0;
    q.disableNotification();
    for (;;) {
      rounds++;
      for (let c = q.popAvail(); c !== null; c = q.popAvail()) {
        handled++;
        q.addUsed(c.head, 1);
        // The driver adds one more while the device is busy, during round 1 only.
        if (rounds === 1 && handled === 2) drv.addChain([{ addr: DATA, len: 1, writable: true }]);
      }
      if (!q.enableNotification()) break;
      q.disableNotification();
      assert.ok(rounds < 5, "bounded rounds");
    }
    assert.equal(handled, 4);
    assert.equal(rounds, 1, "the late chain was drained within the first round's batch");
    drv.addChain([{ addr: DATA, len: 1, writable: true }]);
    // Not drained: enable reports it.
    assert.equal(q.enableNotification(), true);
  }
});

// ---- vringNeedEvent against a spec oracle -----------------------------------

/** Spec oracle: does the driver's event index lie among the indexes [old, new) just used (mod 2^16)? */
function needEventOracle(event: number, now: number, old: number): boolean {
  const count = (now - old) & 0xffff;
  for (let k = 0; k < count; k++) if (((old + k) & 0xffff) === event) return true;
  return false;
}

test("vringNeedEvent equals the oracle: exhaustive near 0 and the wrap", () => {
  const vals = [0, 1, 2, 3, 4, 5, 6, 7, 0x7fff, 0x8000, 65530, 65531, 65532, 65533, 65534, 65535];
  for (const e of vals)
    for (const n of vals)
      for (const o of vals)
        assert.equal(vringNeedEvent(e, n, o), needEventOracle(e, n, o), `${e} ${n} ${o}`);
});

test("vringNeedEvent equals the oracle: random u16 triples", () => {
  const u16 = fc.integer({ min: 0, max: 0xffff });
  fc.assert(
    fc.property(u16, u16, fc.integer({ min: 0, max: 300 }), (e, o, d) => {
      // Mostly short windows (the oracle is linear in the window), some arbitrary.
      const n = (o + d) & 0xffff;
      return vringNeedEvent(e, n, o) === needEventOracle(e, n, o);
    }),
    { numRuns: 2000 },
  );
  fc.assert(
    fc.property(u16, u16, u16, (e, n, o) => vringNeedEvent(e, n, o) === needEventOracle(e, n, o)),
    { numRuns: 200 },
  );
});

test("needsNotification equals the oracle over random batches and used_event moves", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 0xffff }),
      fc.array(
        fc.record({
          batches: fc.array(fc.integer({ min: 0, max: 8 }), { minLength: 0, maxLength: 3 }),
          usedEvent: fc.integer({ min: 0, max: 0xffff }),
          nearby: fc.integer({ min: -3, max: 12 }),
          useNearby: fc.boolean(),
        }),
        { minLength: 1, maxLength: 8 },
      ),
      (start, steps) => {
        const { drv, q } = setup(8, { eventIdx: true }, start);
        let old = start;
        let now = start;
        for (const s of steps) {
          const ev = s.useNearby ? (now + s.nearby) & 0xffff : s.usedEvent;
          drv.usedEvent = ev;
          for (const b of s.batches) {
            for (let k = 0; k < b; k++) drv.addChain([{ addr: DATA, len: 1, writable: true }]);
            for (let k = 0; k < b; k++) q.addUsed(q.popAvail()!.head, 1);
            q.publishUsed();
            now = (now + b) & 0xffff;
          }
          assert.equal(q.needsNotification(), needEventOracle(ev, now, old));
          old = now;
        }
      },
    ),
    { numRuns: 300 },
  );
});

// ---- avail/used bookkeeping and API misuse ----------------------------------

test("exactly queue-size chains ahead is a full ring, not a jump", () => {
  const { drv, q } = setup(4, {}, 65534);
  for (let k = 0; k < 4; k++) drv.addChain([{ addr: DATA, len: 1 }]);
  assert.equal(q.hasAvailable(), true);
  for (let k = 0; k < 4; k++) assert.ok(q.popAvail(), `pop ${k}`);
  assert.equal(q.popAvail(), null);
  assert.equal(q.inFlight, 4);
  assert.equal(q.broken, null);
});

test("hasAvailable does not consume; a spurious check is false and harmless", () => {
  const { drv, q } = setup();
  assert.equal(q.hasAvailable(), false);
  assert.equal(q.popAvail(), null);
  drv.addChain([{ addr: DATA, len: 1 }]);
  assert.equal(q.hasAvailable(), true);
  assert.equal(q.hasAvailable(), true);
  assert.ok(q.popAvail(), "popped");
  assert.equal(q.hasAvailable(), false);
  assert.equal(q.broken, null);
});

test("chain objects are pooled per head and reused after addUsed", () => {
  const { drv, q } = setup(4);
  const seen = new Map<number, object>();
  for (let round = 0; round < 3; round++) {
    for (let k = 0; k < 4; k++) drv.addChain([{ addr: DATA + k, len: 1 + round }]);
    for (let k = 0; k < 4; k++) {
      const c = q.popAvail()!;
      if (round === 0) seen.set(c.head, c);
      else assert.equal(c, seen.get(c.head), `head ${c.head} reuses its chain object`);
      assert.equal(c.readableBytes, 1 + round);
      q.addUsed(c.head, 0);
    }
  }
});

test("usedIdxFromMemory resumes the used index; by default it starts at 0", () => {
  const mem = GuestMemory.createShared([{ guestPhysAddr: 0, size: 0x40000 }]);
  const drv = new MockSplitQueue(mem, 8, RING);
  drv.usedIdx = 1234;
  assert.equal(new DeviceQueue(mem, { ...drv.addresses }).nextUsed, 0);
  const q = new DeviceQueue(mem, { ...drv.addresses, usedIdxFromMemory: true, nextAvail: 77 });
  assert.equal(q.nextUsed, 1234);
  assert.equal(q.nextAvail, 77);
  drv.availIdx = 78;
  drv.setAvailEntry(77, 5);
  drv.writeDesc(5, { addr: DATA, len: 2, flags: VIRTQ_DESC_F_WRITE });
  q.addUsed(q.popAvail()!.head, 2);
  q.publishUsed();
  assert.equal(drv.usedIdx, 1235);
  assert.deepEqual(drv.usedElem(1234), { id: 5, len: 2 });
});

test("addUsed: API misuse is a RangeError, a head not in flight is USED_HEAD_NOT_IN_FLIGHT", () => {
  const { drv, q, broken } = setup(4);
  drv.addChain([{ addr: DATA, len: 8, writable: true }]);
  const c = q.popAvail()!;
  for (const [h, l] of [
    [4, 0],
    [-1, 0],
    [0.5, 0],
    [Number.NaN, 0],
    [c.head, -1],
    [c.head, 2 ** 32],
    [c.head, 1.5],
    [c.head, 9],
  ] as const) {
    assert.throws(() => q.addUsed(h, l), RangeError, `${h} ${l}`);
  }
  assert.throws(
    () => q.addUsed((c.head + 1) % 4, 0),
    (e) => isVirtioError(e, ErrorCode.USED_HEAD_NOT_IN_FLIGHT),
  );
  q.addUsed(c.head, 8);
  assert.throws(
    () => q.addUsed(c.head, 8),
    (e) => isVirtioError(e, ErrorCode.USED_HEAD_NOT_IN_FLIGHT),
  );
  q.publishUsed();
  assert.equal(drv.usedIdx, 1, "only one element written");
  assert.equal(q.broken, null, "misuse does not break the queue");
  assert.equal(broken.length, 0);
});

test("markBroken from outside is sticky, keeps the first error and calls onBroken once", () => {
  const { drv, q, broken } = setup(4);
  drv.addChain([{ addr: DATA, len: 8, writable: true }]);
  const c = q.popAvail()!;
  const first = new VirtioErrorCtor(ErrorCode.DEVICE_BROKEN, "first");
  q.markBroken(first);
  q.markBroken(new VirtioErrorCtor(ErrorCode.DEVICE_RESET, "second"));
  assert.equal(q.broken, first);
  assert.deepEqual(broken, [first]);
  drv.addChain([{ addr: DATA, len: 8, writable: true }]);
  assert.equal(q.hasAvailable(), false);
  assert.equal(q.popAvail(), null);
  assert.equal(q.enableNotification(), false);
  q.addUsed(c.head, 8);
  assert.equal(q.inFlight, 0, "the completion is accounted for");
  q.publishUsed();
  assert.equal(q.needsNotification(), false);
  assert.equal(drv.usedIdx, 0);
  assert.deepEqual(drv.usedElem(0), { id: 0, len: 0 });
});

test("EVENT_IDX: avail_event is nextAvail, not the last avail.idx seen, while chains are pending", () => {
  const { drv, q } = setup(8, { eventIdx: true });
  drv.addChain([{ addr: DATA, len: 1 }]);
  drv.addChain([{ addr: DATA, len: 1 }]);
  assert.ok(q.popAvail(), "first popped; the batch saw avail.idx 2");
  assert.equal(q.enableNotification(), true);
  assert.equal(drv.availEvent, 1);
});

test("used elements added but not published before breaking are never published", () => {
  const { drv, q } = setup(4);
  drv.addChain([{ addr: DATA, len: 4, writable: true }]);
  drv.addChain([{ addr: DATA, len: 4, writable: true }]);
  const a = q.popAvail()!;
  const b = q.popAvail()!;
  q.addUsed(a.head, 4);
  q.publishUsed();
  q.addUsed(b.head, 4); // written, not yet published
  drv.publish(4); // bad head
  assert.throws(
    () => q.popAvail(),
    (e) => isVirtioError(e, ErrorCode.HEAD_OUT_OF_RANGE),
  );
  q.publishUsed();
  assert.equal(drv.usedIdx, 1, "used.idx not moved after breaking");
  assert.equal(q.needsNotification(), false);
});

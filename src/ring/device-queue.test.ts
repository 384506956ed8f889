import { test } from "node:test";
import assert from "node:assert/strict";
import { GuestMemory } from "../memory/guest-memory.ts";
import { ErrorCode, isVirtioError, type VirtioError } from "../errors.ts";
import { MockSplitQueue } from "../testing/mock-driver.ts";
import {
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_USED_F_NO_NOTIFY,
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
  assert.ok(c);
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

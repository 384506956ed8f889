/**
 * The virtio-blk engine when requests do not finish or kicks do not come:
 * the watchdog names stalled requests and picks up chains no kick announced;
 * abort (bounded shutdown) fails what is in flight with IOERR exactly once.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { MemoryBacking } from "../../src/devices/blk/backing.ts";
import { EngineWatchdog } from "../../src/devices/blk/engine-watchdog.ts";
import { VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN } from "../../src/spec/blk.ts";
import { BlkRig, until } from "./blk-harness.ts";

const DISK = 1 << 20;

/** A memory disk whose reads wait until released. */
class StuckBacking extends MemoryBacking {
  readonly waiting: (() => void)[] = [];
  override readv(offset: number, iov: readonly Uint8Array[]): Promise<void> {
    return new Promise<void>((res) => this.waiting.push(res)).then(() => super.readv(offset, iov));
  }
  release(): void {
    for (const w of this.waiting.splice(0)) w();
  }
}

test("the watchdog names a request stuck in the backing store (queue, request, what it waits for), once", async (t) => {
  const backing = new StuckBacking(DISK);
  const r = new BlkRig({ backing });
  const dog = new EngineWatchdog(0.06); // a 10 ms tick, stalled after 60 ms
  t.after(() => dog.stop());
  dog.add(r.engine, 0, r.log);
  const req = r.add({ type: VIRTIO_BLK_T_IN, sector: 8, inLen: 4096 });
  r.engine.kick();
  await until(() => r.log.warnings.length > 0, "a stall warning");
  assert.match(
    r.log.warnings[0]!,
    new RegExp(
      `^virtio-blk vq 0 req ${req.head}: IN sector 8 len 4096 in flight for \\d+ s, waiting for the backing store$`,
    ),
  );
  await new Promise((res) => setTimeout(res, 100));
  assert.equal(r.log.warnings.length, 1, "logged once");
  backing.release();
  await r.waitUsed(1);
  assert.equal(r.status(req), VIRTIO_BLK_S_OK);
});

test("chains made available without a kick are picked up by the watchdog after two idle ticks, and logged", async (t) => {
  const r = new BlkRig({ backing: new MemoryBacking(DISK) });
  const dog = new EngineWatchdog(0.06);
  t.after(() => dog.stop());
  dog.add(r.engine, 0, r.log);
  const req = r.add({ type: VIRTIO_BLK_T_IN, sector: 1, inLen: 512 }); // no kick
  const [used] = await r.waitUsed(1);
  assert.equal(used!.id, req.head);
  assert.equal(r.status(req), VIRTIO_BLK_S_OK);
  assert.ok(
    r.log.warnings.includes(
      "virtio-blk vq 0: available requests were not picked up (no kick arrived); processing them",
    ),
  );
});

test("a notification the driver missed (EVENT_IDX: used_event left behind used.idx on an idle queue) is sent after two idle ticks, and logged", async (t) => {
  const r = new BlkRig({ backing: new MemoryBacking(DISK), eventIdx: true });
  const dog = new EngineWatchdog(0.06);
  t.after(() => dog.stop());
  // The driver asked to hear when used.idx passes 0, but its store lands too late: the device
  // reads an old used_event (here: 0xffff) when it publishes, so it does not notify.
  r.drv.usedEvent = 0xffff;
  r.add({ type: VIRTIO_BLK_T_IN, sector: 1, inLen: 512 });
  r.engine.kick();
  await r.waitUsed(1);
  const before = r.notifications;
  r.drv.usedEvent = 0; // now visible: the driver waits for index 0, already published
  dog.add(r.engine, 0, r.log);
  await until(() => r.notifications > before, "the missed notification");
  assert.ok(
    r.log.warnings.includes(
      "virtio-blk vq 0: the driver is still waiting for completed requests (a notification was lost); notifying it",
    ),
  );
  // Caught up (used_event = used.idx): nothing more is sent.
  r.drv.usedEvent = r.drv.usedIdx;
  const after = r.notifications;
  await new Promise((res) => setTimeout(res, 100));
  assert.equal(r.notifications, after);
});

test("abort fails every request in flight with IOERR now; the late results are dropped, stop completes", async () => {
  const backing = new StuckBacking(DISK);
  const r = new BlkRig({ backing });
  const reqs = [0, 1, 2].map((i) => r.add({ type: VIRTIO_BLK_T_IN, sector: i, inLen: 512 }));
  r.engine.kick();
  await until(() => r.engine.inFlight === 3, "three requests in flight");
  const stopped = r.engine.stop();
  assert.equal(r.engine.abort(), 3);
  await stopped;
  const used = await r.waitUsed(3);
  assert.deepEqual(used.map((u) => u.id).sort(), reqs.map((q) => q.head).sort());
  for (const q of reqs) assert.equal(r.status(q), VIRTIO_BLK_S_IOERR);
  assert.equal(r.log.errors.filter((e) => /still in flight at shutdown/.test(e)).length, 3);
  backing.release();
  await new Promise((res) => setTimeout(res, 20));
  assert.deepEqual(r.drv.drainUsed(), [], "nothing completes twice");
  assert.equal(r.engine.inFlight, 0);
});

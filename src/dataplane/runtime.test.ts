/**
 * The dataplane runtime and pool on the calling thread with a fake device
 * and a fake binding: opening, memory before starts, queue start / kick /
 * stop, the broken report (once per activation, none for a stop's detach),
 * memory pulled away (MEM_FAULT after a run, and instead of a violation),
 * abort, counters, and errors that cross back with their kind.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { ErrorCode, VirtioError } from "../errors.ts";
import { silentLogger } from "../log.ts";
import { GuestMemory } from "../memory/guest-memory.ts";
import { MockSplitQueue } from "../testing/index.ts";
import type { DataplaneDevice, QueueContext, QueueHandler } from "./device.ts";
import type { DeviceEvent } from "./device-handle.ts";
import { LOCAL_RUNTIME, localThreadHost } from "./local.ts";
import { DataplanePool } from "./pool.ts";
import { serveDataplane } from "./runtime.ts";
import type { DoorbellOpener, QueueDoorbells } from "./seams.ts";

const QSIZE = 16;

/** A device whose queues complete each chain at once, or hold them. */
class FakeDevice implements DataplaneDevice {
  readonly contexts = new Map<number, QueueContext>();
  hold = false;
  readonly held: { ctx: QueueContext; head: number }[] = [];
  startQueue(ctx: QueueContext): QueueHandler {
    this.contexts.set(ctx.index, ctx);
    const held = this.held;
    const hold = (): boolean => this.hold;
    return {
      kick() {
        for (let c = ctx.queue.popAvail(); c !== null; c = ctx.queue.popAvail()) {
          if (hold()) held.push({ ctx, head: c.head });
          else ctx.queue.addUsed(c.head, 0);
        }
        ctx.signalUsed();
      },
      halt() {},
      stop: () => Promise.resolve(),
      abort() {
        const n = held.length;
        for (const h of held.splice(0)) h.ctx.queue.addUsed(h.head, 1);
        ctx.signalUsed();
        return n;
      },
      get inFlight() {
        return held.length;
      },
    };
  }
}

/** Doorbells a test rings by hand. */
function fakeBells(): { opener: DoorbellOpener; kick: (q: number) => void; calls: number[] } {
  const kicks = new Map<number, () => void>();
  const calls: number[] = [];
  const opener: DoorbellOpener = (queue) => {
    const bells: QueueDoorbells = {
      wakeups: 0,
      calls: 0,
      start(onKick) {
        kicks.set(queue, onKick);
        onKick();
      },
      call() {
        calls.push(queue);
      },
      stop() {
        kicks.delete(queue);
      },
    };
    return bells;
  };
  return { opener, kick: (q) => kicks.get(q)?.(), calls };
}

async function setup() {
  const device = new FakeDevice();
  /** What the memory space answers to `fault()` (memory pulled away), set by a test. */
  const memory = { fault: null as VirtioError | null };
  const mem = GuestMemory.createShared([{ guestPhysAddr: 0, size: 1 << 20 }]);
  const bells = fakeBells();
  const host = localThreadHost((endpoint) =>
    serveDataplane({
      endpoint,
      devices: { fake: () => ({ device, info: { hello: 1 } }) },
      memory: {
        fake: () => ({
          update: () => {},
          memory: () => mem,
          fault: () => memory.fault,
          dispose: () => {},
        }),
      },
      doorbells: { fake: bells.opener },
    }),
  );
  const pool = await DataplanePool.start({
    host,
    module: LOCAL_RUNTIME,
    runtimes: 1,
    logger: silentLogger,
  });
  const events: DeviceEvent[] = [];
  const handle = await pool.open({ kind: "fake" }, { queues: 2, onEvent: (e) => events.push(e) });
  const drvs = [0, 1].map((q) => new MockSplitQueue(mem, QSIZE, 0x1000 + q * 0x2000));
  const ring = (q: number, nextAvail = 0) => ({
    ...drvs[q]!.addresses,
    size: QSIZE,
    features: 0n,
    base: nextAvail,
  });
  return { device, pool, handle, events, drvs, ring, bells, memory };
}

const chain = (drv: MockSplitQueue) =>
  drv.publish(
    drv.buildChain([
      { addr: 0x8000, len: 16 },
      { addr: 0x9000, len: 1, writable: true },
    ]),
  );

test("open answers the opener's info; a start before memory and an unknown kind are refused with their kind", async () => {
  const s = await setup();
  assert.deepEqual(s.handle.info, [{ hello: 1 }]);
  await assert.rejects(
    s.handle.startQueue(0, 1, s.ring(0), { kind: "fake" }),
    /started before guest memory/,
  );
  await assert.rejects(s.pool.open({ kind: "nope" }, { queues: 1 }), TypeError);
  await s.handle.setMemory({ kind: "fake" });
  await assert.rejects(s.handle.startQueue(0, 1, s.ring(0), { kind: "other" }), TypeError);
  await s.pool.close();
});

test("a started queue takes kicks, calls, stops at its next index, and its detach is not reported as broken", async () => {
  const s = await setup();
  await s.handle.setMemory({ kind: "fake" });
  await s.handle.startQueue(0, 1, s.ring(0), { kind: "fake" });
  chain(s.drvs[0]!);
  chain(s.drvs[0]!);
  s.bells.kick(0);
  assert.equal(s.drvs[0]!.usedIdx, 2);
  assert.ok(s.bells.calls.includes(0));
  assert.deepEqual(await s.handle.stopQueue(0), { base: 2, drained: 0 });
  await s.handle.startQueue(0, 2, s.ring(0, 2), { kind: "fake" });
  assert.deepEqual(await s.handle.stopQueue(0), { base: 2, drained: 0 });
  await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(s.events, []);
  await assert.rejects(s.handle.stopQueue(0), RangeError);
  await s.pool.close();
});

test("a ring violation is reported once per activation, with its code", async () => {
  const s = await setup();
  await s.handle.setMemory({ kind: "fake" });
  await s.handle.startQueue(0, 7, s.ring(0), { kind: "fake" });
  await s.handle.startQueue(1, 7, s.ring(1), { kind: "fake" });
  s.drvs[0]!.publish(QSIZE + 1); // a head outside the ring
  s.bells.kick(0);
  s.drvs[1]!.publish(QSIZE + 2);
  s.bells.kick(1);
  await new Promise((r) => setTimeout(r, 5));
  assert.equal(s.events.length, 1);
  const e = s.events[0]!;
  assert.equal(e.type, "broken");
  assert.ok(e.type === "broken" && e.activation === 7 && e.queue === 0);
  assert.ok(e.error instanceof VirtioError && e.error.code === ErrorCode.HEAD_OUT_OF_RANGE);
  await s.pool.close();
});

test("abort completes what the handlers hold and answers how many", async () => {
  const s = await setup();
  await s.handle.setMemory({ kind: "fake" });
  await s.handle.startQueue(0, 1, s.ring(0), { kind: "fake" });
  s.device.hold = true;
  chain(s.drvs[0]!);
  chain(s.drvs[0]!);
  s.bells.kick(0);
  assert.deepEqual(
    (await s.handle.stats()).map((q) => [q.queue, q.inFlight]),
    [[0, 2]],
  );
  assert.equal(await s.handle.abort(), 2);
  assert.equal(s.drvs[0]!.usedIdx, 2);
  await s.handle.close();
  await s.pool.close();
});

test("a ring resumed from guest memory sends one call at its start; a fresh one sends none", async () => {
  const s = await setup();
  await s.handle.setMemory({ kind: "fake" });
  await s.handle.startQueue(0, 1, s.ring(0), { kind: "fake" });
  assert.deepEqual(s.bells.calls, []);
  await s.handle.stopQueue(0);
  // An earlier device published used.idx 3 and died before its call: the driver is still waiting.
  s.drvs[1]!.usedIdx = 3;
  await s.handle.startQueue(1, 1, { ...s.ring(1, 3), usedIdxFromMemory: true }, { kind: "fake" });
  assert.deepEqual(s.bells.calls, [1]);
  await s.handle.stopQueue(1);
  await s.pool.close();
});

const pulledAway = (): VirtioError =>
  new VirtioError(ErrorCode.MEM_FAULT, "guest memory region gpa 0x0: shrank under the mapping");

test("memory pulled away during a run breaks the queue with MEM_FAULT; no call goes out", async () => {
  const s = await setup();
  await s.handle.setMemory({ kind: "fake" });
  await s.handle.startQueue(0, 3, s.ring(0), { kind: "fake" });
  chain(s.drvs[0]!);
  s.bells.kick(0);
  assert.equal(s.drvs[0]!.usedIdx, 1, "served while the memory is there");
  const calls = s.bells.calls.length;
  s.memory.fault = pulledAway();
  chain(s.drvs[0]!);
  s.bells.kick(0);
  await new Promise((r) => setTimeout(r, 5));
  assert.equal(s.bells.calls.length, calls, "checked before the notification");
  assert.equal(s.drvs[0]!.usedIdx, 1, "nothing published on a broken queue");
  assert.equal(s.events.length, 1);
  const e = s.events[0]!;
  assert.ok(e.type === "broken" && e.activation === 3 && e.queue === 0);
  assert.ok(e.error instanceof VirtioError && e.error.code === ErrorCode.MEM_FAULT);
  await s.pool.close();
});

test("a ring violation read from memory that was pulled away is reported as MEM_FAULT", async () => {
  const s = await setup();
  await s.handle.setMemory({ kind: "fake" });
  await s.handle.startQueue(0, 4, s.ring(0), { kind: "fake" });
  s.memory.fault = pulledAway();
  s.drvs[0]!.publish(QSIZE + 1); // what zeros in place of the ring could look like
  s.bells.kick(0);
  await new Promise((r) => setTimeout(r, 5));
  assert.equal(s.events.length, 1);
  const e = s.events[0]!;
  assert.ok(e.type === "broken" && e.error instanceof VirtioError);
  assert.equal(e.error.code, ErrorCode.MEM_FAULT);
  await s.pool.close();
});

test("queues spread round-robin over the runtimes, or all on one runtime when asked", async () => {
  const opened: number[] = [];
  let next = 0;
  const host = localThreadHost((endpoint) => {
    const runtime = next++;
    return serveDataplane({
      endpoint,
      devices: {
        fake: () => {
          opened.push(runtime);
          return { device: { startQueue: () => ({}) } as unknown as DataplaneDevice, info: {} };
        },
      },
      memory: {},
      doorbells: {},
    });
  });
  const pool = await DataplanePool.start({
    host,
    module: LOCAL_RUNTIME,
    runtimes: 3,
    logger: silentLogger,
  });
  try {
    const spread = await pool.open({ kind: "fake" }, { queues: 4 });
    assert.deepEqual(
      [0, 1, 2, 3].map((q) => spread.runtimeOf(q)),
      [0, 1, 2, 0],
    );
    const together = await pool.open({ kind: "fake" }, { queues: 4, oneRuntime: true });
    assert.deepEqual(
      [0, 1, 2, 3].map((q) => together.runtimeOf(q)),
      [1, 1, 1, 1],
    );
    const after = await pool.open({ kind: "fake" }, { queues: 2 });
    assert.deepEqual(
      [0, 1].map((q) => after.runtimeOf(q)),
      [2, 0],
    );
    assert.deepEqual(opened, [0, 1, 2, 1, 2, 0], "a disk on one runtime is opened once");
  } finally {
    await pool.close();
  }
});

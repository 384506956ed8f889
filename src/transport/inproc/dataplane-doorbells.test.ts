import { test } from "node:test";
import assert from "node:assert/strict";
import {
  KICK_ROUTE_DIRECT,
  KICK_ROUTE_WAITING,
  RegisterLayout,
  createRegisters,
} from "./registers.ts";
import { InprocQueueDoorbells } from "./dataplane-doorbells.ts";

const Q = 1;

function setup() {
  const registers = createRegisters(2);
  const a = new Int32Array(registers);
  const layout = new RegisterLayout(2);
  const route = () => Atomics.load(a, layout.kickRouteBase + Q);
  /** What the driver's kick does (transport/inproc/driver-side.ts). */
  const kick = () => {
    Atomics.add(a, layout.kickBase + Q, 1);
    if ((route() & KICK_ROUTE_WAITING) !== 0) Atomics.notify(a, layout.kickBase + Q);
  };
  return { registers, a, layout, route, kick };
}

async function until(pred: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!pred()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

test("start takes the queue's kicks (DIRECT), handles once at once, then waits with WAITING raised", async () => {
  const s = setup();
  const bells = new InprocQueueDoorbells(s.registers, Q);
  let kicks = 0;
  bells.start(() => kicks++);
  assert.equal(kicks, 1, "a first kick at once (work queued before the start)");
  assert.equal(s.route() & KICK_ROUTE_DIRECT, KICK_ROUTE_DIRECT);
  assert.equal(s.route() & KICK_ROUTE_WAITING, KICK_ROUTE_WAITING);
  for (let i = 2; i <= 5; i++) {
    s.kick();
    await until(() => kicks === i, `kick ${i}`);
  }
  assert.equal(Atomics.load(s.a, s.layout.kickRouteBase), 0, "queue 0's route untouched");
  bells.stop();
  assert.equal(s.route(), 0, "stop hands kicks back to the control thread's doorbell");
  s.kick();
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(kicks, 5, "no kick handled after stop");
});

test("a kick that lands while handling is not lost (the count moved: handled again without waiting)", async () => {
  const s = setup();
  const bells = new InprocQueueDoorbells(s.registers, Q);
  let kicks = 0;
  bells.start(() => {
    kicks++;
    if (kicks === 1) s.kick(); // the driver kicks while the worker is busy (WAITING is low)
  });
  await until(() => kicks === 2, "the kick that landed during handling");
  bells.stop();
});

test("stop then start again: the old wait loop leaves the new one's WAITING bit alone", async () => {
  const s = setup();
  const bells = new InprocQueueDoorbells(s.registers, Q);
  let kicks = 0;
  bells.start(() => kicks++);
  bells.stop();
  bells.start(() => kicks++);
  await new Promise((r) => setTimeout(r, 20)); // the old loop wakes from stop's notify and ends
  assert.equal(s.route(), KICK_ROUTE_DIRECT | KICK_ROUTE_WAITING);
  const before = kicks;
  s.kick();
  await until(() => kicks === before + 1, "a kick to the restarted doorbells");
  bells.stop();
  assert.throws(() => new InprocQueueDoorbells(s.registers, 2), RangeError);
});

test("call bumps the queue's CALL counter and the driver doorbell", () => {
  const s = setup();
  const bells = new InprocQueueDoorbells(s.registers, Q);
  bells.call();
  bells.call();
  assert.equal(Atomics.load(s.a, s.layout.callBase + Q), 2);
  assert.equal(Atomics.load(s.a, s.layout.drvWake), 2);
  assert.equal(bells.calls, 2);
});

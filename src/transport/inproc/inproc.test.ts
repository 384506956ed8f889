import { test } from "node:test";
import assert from "node:assert/strict";
import { GuestMemory } from "../../memory/guest-memory.ts";
import { vringLayout } from "../../ring/layout.ts";
import { placeRing, ringLayoutOf } from "../../ring/ring-layout.ts";
import type { DriverRing } from "../../ring/driver-ring.ts";
import { VirtioDevice } from "../../device/virtio-device.ts";
import type { ActivationContext, VirtioDeviceBackend } from "../../device/backend.ts";
import { ConfigSpace } from "../../device/config-space.ts";
import { ErrorCode, isVirtioError } from "../../errors.ts";
import {
  VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET,
  VIRTIO_CONFIG_S_FAILED,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  VIRTIO_RING_F_EVENT_IDX,
  featureBit,
} from "../../spec/virtio.ts";
import { InprocDeviceTransport, stopInprocDevice } from "./device-side.ts";
import { InprocDriverTransport } from "./driver-side.ts";
import { Op, RegisterLayout, Result, W, createRegisters, openRegisters } from "./registers.ts";

const VERSION_1 = featureBit(VIRTIO_F_VERSION_1);
const EVENT_IDX = featureBit(VIRTIO_RING_F_EVENT_IDX);
const PACKED = featureBit(VIRTIO_F_RING_PACKED);
const RING = 0x1000;
const BUF = 0x20000;

/** Copies the readable bytes, each plus one, into the writable part (synchronously). */
class PlusOneBackend implements VirtioDeviceBackend {
  readonly name = "plus-one";
  readonly deviceId = 0x7e;
  readonly queueMaxSizes = [64];
  readonly features = EVENT_IDX | PACKED;
  readonly config: ConfigSpace;
  veto = false;
  ctx: ActivationContext | null = null;

  constructor(configSize = 8) {
    this.config = new ConfigSpace(configSize);
  }

  validateFeatures(): boolean {
    return !this.veto;
  }

  writeConfig(offset: number, data: Uint8Array, config: ConfigSpace): void {
    config.store(offset, data);
  }

  activate(ctx: ActivationContext): void {
    this.ctx = ctx;
  }

  queueNotify(index: number): void {
    const ctx = this.ctx!;
    const q = ctx.queues[index]!;
    try {
      q.disableNotification();
      for (;;) {
        for (let c = q.popAvail(); c !== null; c = q.popAvail()) {
          const bytes = new Uint8Array(c.readableBytes);
          c.reader().read(bytes);
          for (let i = 0; i < bytes.length; i++) bytes[i] = (bytes[i]! + 1) & 0xff;
          q.addUsed(c.head, c.writer().write(bytes));
        }
        if (!q.enableNotification()) break;
        q.disableNotification();
      }
    } catch (e) {
      if (!isVirtioError(e)) throw e;
    }
    ctx.signalUsed(index);
  }
}

interface Rig {
  memory: GuestMemory;
  registers: SharedArrayBuffer;
  backend: PlusOneBackend;
  device: VirtioDevice;
  transport: InprocDeviceTransport;
  driver: InprocDriverTransport;
  loop: Promise<void>;
  logs: string[];
}

/** Device and driver on this thread: the device loop in "async" mode, the driver with runAsync. */
function rig(backend = new PlusOneBackend(), controlTimeoutMs = 5000): Rig {
  const memory = GuestMemory.createShared([{ guestPhysAddr: 0, size: 1 << 20 }]);
  const registers = createRegisters(1);
  const logs: string[] = [];
  const device = new VirtioDevice(backend, { memory, log: (l) => logs.push(l) });
  const transport = new InprocDeviceTransport(registers, device);
  const loop = transport.run({ wait: "async", sleepSliceMs: 50 });
  const driver = new InprocDriverTransport({ registers, memory }, { controlTimeoutMs });
  return { memory, registers, backend, device, transport, driver, loop, logs };
}

/** A kick written straight into the register block, bypassing the ring's kickNeeded (a rogue driver). */
function rawKick(registers: SharedArrayBuffer, n: number): void {
  const { i32, layout } = openRegisters(registers);
  // Atomics.add (SeqCst RMW): bump queue 0's kick counter.
  Atomics.add(i32, layout.kickBase, n);
  // Atomics.add (SeqCst RMW): then the device doorbell, ordered after the kick count.
  Atomics.add(i32, layout.devWake, 1);
  // Atomics.notify: wake the device loop if it sleeps.
  Atomics.notify(i32, layout.devWake);
}

async function stop(r: Rig): Promise<void> {
  stopInprocDevice(r.registers);
  await r.loop;
}

/** §3.1.1 with `wanted` features; the ring is placed for the layout they select. */
async function bringUp(
  r: Rig,
  wanted = VERSION_1 | EVENT_IDX,
  size = 16,
): Promise<DriverRing<number>> {
  await r.driver.runAsync(r.driver.negotiate(wanted));
  const ring = placeRing(ringLayoutOf(wanted), size, RING);
  const dq = await r.driver.runAsync(r.driver.setupQueue<number>(0, ring));
  await r.driver.runAsync(r.driver.start());
  return dq;
}

test("register layout: each writer's hot words sit on their own cache lines", () => {
  for (const n of [1, 2, 14, 15, 16, 100]) {
    const l = new RegisterLayout(n);
    const line = (w: number): number => Math.floor(w / 16);
    const driverLines = new Set([
      line(W.REQ_SEQ),
      line(l.devWake),
      line(l.kickBase + n - 1),
      line(l.drvSleeping),
    ]);
    const deviceLines = new Set([
      line(W.ACK_SEQ),
      line(l.drvWake),
      line(l.callBase + n - 1),
      line(l.devSleeping),
    ]);
    for (const d of driverLines) assert.ok(!deviceLines.has(d), `queues=${n}: line ${d} shared`);
    assert.equal(line(l.kickBase + n - 1) < line(l.devSleeping), true);
    assert.equal(l.callBase + n - 1 < l.drvSleeping, true);
    assert.ok(l.data > l.drvSleeping);
  }
  assert.throws(() => new RegisterLayout(0), RangeError);
  assert.throws(() => openRegisters(new SharedArrayBuffer(1024)), RangeError);
  const regs = createRegisters(3);
  assert.equal(openRegisters(regs).layout.numQueues, 3);
  const device = new VirtioDevice(new PlusOneBackend(), { log: () => {} });
  assert.throws(() => new InprocDeviceTransport(regs, device), RangeError);
});

for (const [layout, wanted, size] of [
  ["split", VERSION_1 | EVENT_IDX, 16],
  ["packed", VERSION_1 | EVENT_IDX | PACKED, 12],
] as const) {
  test(`control + data path on one thread: negotiate, set up, requests, payloads, kick accounting (${layout} ring of ${size})`, async () => {
    const r = rig();
    const dq = await bringUp(r, wanted, size);
    assert.equal(dq.layout, layout);
    assert.equal(r.driver.features, wanted);
    assert.equal(await r.driver.runAsync(r.driver.readStatus()), 0x0f);
    const info = await r.driver.runAsync(r.driver.deviceInfo());
    assert.deepEqual(info, { deviceId: 0x7e, numQueues: 1, configSize: 8 });
    let kicks = 0;
    for (let i = 0; i < 200; i++) {
      const src = BUF + 128 * (i % 8);
      r.memory.write(src, Uint8Array.of(i & 0xff, 7, 250));
      assert.equal(dq.add([{ addr: src, len: 3 }], [{ addr: src + 64, len: 3 }], i), true);
      r.driver.kick(0);
      kicks++;
      assert.equal(await r.driver.waitUsedAsync(0, 5000), "used");
      const u = dq.getUsed();
      assert.deepEqual(u, { token: i, len: 3 });
      const out = new Uint8Array(3);
      r.memory.read(src + 64, out);
      assert.deepEqual([...out], [(i + 1) & 0xff, 8, 251]);
    }
    const s = r.driver.stats;
    assert.equal(s.kicksRung + s.kicksSuppressed, kicks);
    assert.ok(s.kicksRung > 0);
    assert.equal(r.transport.stats.kicksSeen > 0, true);
    assert.equal(r.device.stats.notificationsSent, r.transport.stats.callsRung);
    await stop(r);
    assert.deepEqual(r.logs, []);
  });
}

test("FEATURES_OK refused: negotiate throws FEATURES_REFUSED and leaves FAILED set", async () => {
  const b = new PlusOneBackend();
  b.veto = true;
  const r = rig(b);
  await assert.rejects(r.driver.runAsync(r.driver.negotiate(VERSION_1)), (e) =>
    isVirtioError(e, ErrorCode.FEATURES_REFUSED),
  );
  const status = await r.driver.runAsync(r.driver.readStatus());
  assert.equal(status & VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FAILED);
  await stop(r);
});

test("configuration space over the transport: chunked reads, hook writes, generation", async () => {
  const r = rig(new PlusOneBackend(600));
  r.backend.config.update((v) => {
    for (let i = 0; i < 600; i++) v.setUint8(i, i & 0xff);
  });
  const bytes = await r.driver.runAsync(r.driver.readConfig(10, 596));
  assert.equal(bytes.length, 596);
  assert.equal(bytes[0], 10);
  assert.equal(bytes[589], 599 & 0xff);
  assert.deepEqual([...bytes.subarray(590)], [0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
  await r.driver.runAsync(r.driver.negotiate(VERSION_1));
  const data = new Uint8Array(300).fill(0xab);
  assert.equal(await r.driver.runAsync(r.driver.writeConfig(400, data)), 200);
  assert.equal(r.backend.config.getU8(599), 0xab);
  await stop(r);
});

test("garbage in the register block never crashes the device loop", async () => {
  const r = rig();
  const seqs = [Op.DEVICE_INFO, 0, 99, -1, Op.SET_QUEUE_ADDRS, Op.SET_QUEUE_READY, Op.GET_CONFIG];
  for (const op of seqs) {
    const reply = await r.driver.requestAsync({
      op,
      args: [-1, -1, -1, -1, -1, -1, -1],
      readBack: 4,
    });
    assert.ok(reply.result === Result.OK || reply.result === Result.UNKNOWN_OP);
  }
  const unknown = await r.driver.requestAsync({ op: 1234, args: [] });
  assert.equal(unknown.result, Result.UNKNOWN_OP);
  // Kick counters for queues that are not set up, before DRIVER_OK.
  rawKick(r.registers, 5);
  // The device still answers.
  const dq = await bringUp(r);
  r.memory.write(BUF, Uint8Array.of(1));
  dq.add([{ addr: BUF, len: 1 }], [{ addr: BUF + 64, len: 1 }], 1);
  r.driver.kick(0);
  assert.equal(await r.driver.waitUsedAsync(0, 5000), "used");
  assert.equal(r.memory.readU8(BUF + 64), 2);
  await stop(r);
});

test("a ring violation reaches the driver as a configuration change with DEVICE_NEEDS_RESET; reset recovers", async () => {
  const r = rig();
  const l = vringLayout(16, RING);
  await bringUp(r);
  // Head 40 in a queue of 16: the device breaks.
  r.memory.writeU16(l.availAddr + 4, 40);
  r.memory.atomicStoreU16(l.availAddr + 2, 1);
  rawKick(r.registers, 1);
  assert.equal(await r.driver.waitUsedAsync(0, 5000), "config");
  const status = await r.driver.runAsync(r.driver.readStatus());
  assert.equal(status & VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET, VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET);
  assert.equal(r.logs.length, 1);
  assert.match(r.logs[0]!, /HEAD_OUT_OF_RANGE/);
  await r.driver.runAsync(r.driver.reset());
  assert.equal(await r.driver.runAsync(r.driver.readStatus()), 0);
  const dq = await bringUp(r);
  r.memory.write(BUF, Uint8Array.of(41));
  dq.add([{ addr: BUF, len: 1 }], [{ addr: BUF + 64, len: 1 }], 1);
  r.driver.kick(0);
  assert.equal(await r.driver.waitUsedAsync(0, 5000), "used");
  assert.equal(r.memory.readU8(BUF + 64), 42);
  await stop(r);
});

test("without a device loop a control request fails with INPROC_TIMEOUT (bounded wait)", async () => {
  const memory = GuestMemory.createShared([{ guestPhysAddr: 0, size: 1 << 16 }]);
  const driver = new InprocDriverTransport(
    { registers: createRegisters(1), memory },
    { controlTimeoutMs: 30 },
  );
  await assert.rejects(driver.runAsync(driver.readStatus()), (e) =>
    isVirtioError(e, ErrorCode.INPROC_TIMEOUT),
  );
});

test("waitUsed on a quiet queue returns 'timeout' after its bound", async () => {
  const r = rig();
  await bringUp(r);
  assert.equal(await r.driver.waitUsedAsync(0, 20), "timeout");
  assert.throws(() => r.driver.kick(3), RangeError);
  await stop(r);
});

test("waitUsed(delayed) arms used_event 3/4 into the outstanding requests; plain waitUsed at the next one", async () => {
  const r = rig();
  const dq = await bringUp(r);
  await stop(r); // nobody serves the ring from now on: the requests stay outstanding
  const l = vringLayout(16, RING);
  const usedEvent = (): number => r.memory.readU16(l.availAddr + 4 + 2 * 16);
  for (let i = 0; i < 8; i++) dq.add([{ addr: BUF + 16 * i, len: 8 }], [], i);
  r.driver.kick(0);
  assert.equal(await r.driver.waitUsedAsync(0, 10, true), "timeout");
  assert.equal(usedEvent(), 6);
  assert.equal(await r.driver.waitUsedAsync(0, 10), "timeout");
  assert.equal(usedEvent(), 0);
});

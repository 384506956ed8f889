/**
 * BlkDriver over the real in-process transport: the device (BlkDevice +
 * VirtioDevice + InprocDeviceTransport) in a worker thread, the driver on
 * this thread with InprocDriverTransport (§3.1.1 initialization through
 * control requests, kicks and calls through the doorbells), on split and on
 * packed rings (VIRTIO 1.2 §2.7 / §2.8: the device's maximum is 64, the
 * packed rings are 60). Every wait is bounded.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { ErrorCode, isVirtioError } from "../../errors.ts";
import { GuestMemory } from "../../memory/guest-memory.ts";
import type { DriverRing } from "../../ring/driver-ring.ts";
import type { RingLayoutKind } from "../../ring/ring-layout.ts";
import { VIRTIO_BLK_CONFIG_SIZE } from "../../spec/blk.ts";
import { VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET } from "../../spec/virtio.ts";
import {
  InprocDriverTransport,
  createRegisters,
  nextMessage,
  stopInprocDevice,
  type InprocShared,
  type WorkerThread,
} from "../../transport/inproc/index.ts";
import { nodeThreadHost } from "../../dataplane/node-threads.ts";
import { BlkDriver } from "./driver.ts";
import { parseBlkConfig, selectBlkFeatures } from "./driver-config.ts";
import { planBlkDriverMemory } from "./driver-memory.ts";
import { patternBytes, within } from "./driver-test-support.ts";
import type { DriverTestWorkerDone, DriverTestWorkerInit } from "./driver-test-worker.ts";

const host = nodeThreadHost({ loaderRegister: import.meta.resolve("tsx/esm/api") });
const DISK = 4 << 20;
const QUEUE_SIZE = 64;
/** The packed rings' size: not a power of two, below the device's maximum. */
const PACKED_SIZE = 60;
const SERIAL = "inproc-disk-7";

interface Session {
  readonly memory: GuestMemory;
  readonly shared: InprocShared;
  readonly worker: WorkerThread;
  readonly t: InprocDriverTransport;
  readonly driver: BlkDriver;
  readonly dq: DriverRing<number>;
  readonly userBase: number;
  /** Statuses read after configuration change notifications. */
  readonly statuses: number[];
  /** Stops the pump loop and the device; resolves with the disk. */
  finish(): Promise<Uint8Array>;
}

const isType =
  <T>(type: string) =>
  (m: unknown): m is T =>
    typeof m === "object" && m !== null && (m as { type?: unknown }).type === type;

/** Starts the device worker, initializes it (§3.1.1) and builds a BlkDriver with a pump loop. */
async function start(layout: RingLayoutKind, maxInFlight = 32): Promise<Session> {
  const plan = planBlkDriverMemory({
    base: 0x10000,
    numQueues: 1,
    queueSize: layout === "packed" ? PACKED_SIZE : QUEUE_SIZE,
    layout,
    indirectEntries: 32,
    bounceBytes: 256 << 10,
  });
  const userBase = Math.ceil(plan.end / 4096) * 4096;
  const memory = GuestMemory.createShared([{ guestPhysAddr: 0, size: userBase + (4 << 20) }]);
  const shared: InprocShared = { registers: createRegisters(1), memory: memory.toTransferable() };
  const init: DriverTestWorkerInit = {
    shared,
    diskBytes: DISK,
    numQueues: 1,
    queueSize: QUEUE_SIZE,
    serial: SERIAL,
    maxInFlight,
  };
  const worker = host.spawn(new URL("./driver-test-worker.ts", import.meta.url), init);
  await nextMessage(worker, isType("ready"), 20_000);
  const done = nextMessage<DriverTestWorkerDone>(worker, isType("done"), 60_000);
  done.catch(() => {});

  const t = new InprocDriverTransport({ registers: shared.registers, memory });
  const offered = await t.runAsync(t.deviceFeatures());
  const exclude = layout === "split" ? (["RING_PACKED"] as const) : [];
  const features = await t.runAsync(t.negotiate(selectBlkFeatures(offered, { exclude })));
  // §5.2.5.1: the configuration (writeback) is read after FEATURES_OK.
  const config = parseBlkConfig(
    await t.runAsync(t.readConfig(0, VIRTIO_BLK_CONFIG_SIZE)),
    features,
  );
  const dq = await t.runAsync(
    t.setupQueue<number>(0, { ...plan.rings[0]!, indirectArena: plan.indirectArenas[0]! }),
  );
  await t.runAsync(t.start());
  assert.equal(dq.layout, layout);
  const driver = new BlkDriver({
    memory,
    queues: [dq],
    config,
    arena: plan.arena,
    indirectEntries: plan.indirectEntries,
    transport: t, // InprocDriverTransport.kick(i) asks the ring itself
  });
  const statuses: number[] = [];
  let running = true;
  const pump = (async () => {
    while (running) {
      const w = await t.waitUsedAsync(0, 100);
      if (w === "used") driver.processUsed(0);
      else if (w === "config") {
        const status = await t.runAsync(t.readStatus());
        statuses.push(status);
        if ((status & VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET) !== 0) driver.markDeviceBroken();
      }
    }
  })();
  pump.catch(() => {});
  return {
    memory,
    shared,
    worker,
    t,
    driver,
    dq,
    userBase,
    statuses,
    async finish() {
      running = false;
      await within(
        pump.catch(() => {}),
        5000,
        "pump loop",
      );
      stopInprocDevice(shared.registers);
      try {
        return (await done).disk;
      } finally {
        await worker.terminate();
      }
    },
  };
}

for (const layout of ["split", "packed"] as const) {
  test(`in-process transport: every request type, device in a worker (${layout} rings)`, async () => {
    const s = await start(layout);
    try {
      const d = s.driver;
      assert.equal(d.config.capacityBytes, DISK);
      assert.equal(await within(d.getId()), SERIAL);
      const data = patternBytes(1 << 20, 11);
      await within(d.write(0, data));
      const back = new Uint8Array(1 << 20);
      await within(d.read(0, back));
      assert.deepEqual(back, data);
      // Zero-copy: 3 segments in guest memory.
      const segs = [
        { addr: s.userBase, len: 1000 },
        { addr: s.userBase + 4096, len: 3096 },
        { addr: s.userBase + 16384, len: 4096 },
      ];
      const z = patternBytes(8192, 12);
      s.memory.write(segs[0]!.addr, z.subarray(0, 1000));
      s.memory.write(segs[1]!.addr, z.subarray(1000, 4096));
      s.memory.write(segs[2]!.addr, z.subarray(4096));
      await within(d.writeSegments(2 << 20, segs));
      await within(d.flush());
      await within(d.discard([{ offset: 4096, length: 4096 }]));
      await within(d.writeZeroes([{ offset: 65536, length: 8192 }], { unmap: true }));
      // Many at once: more than the ring holds.
      const ps = [];
      for (let i = 0; i < 200; i++)
        ps.push(d.write((3 << 20) + i * 4096, patternBytes(4096, 100 + i)));
      await within(Promise.all(ps), 20_000);
      assert.equal(d.pending, 0);
      assert.ok(s.t.stats.kicksRung >= 1);
      const disk = await s.finish();
      const want = data.slice();
      want.fill(0, 4096, 8192);
      want.fill(0, 65536, 65536 + 8192);
      assert.deepEqual(disk.subarray(0, 1 << 20), want);
      assert.deepEqual(disk.subarray(2 << 20, (2 << 20) + 8192), z);
      for (let i = 0; i < 200; i++) {
        const at = (3 << 20) + i * 4096;
        assert.deepEqual(disk.subarray(at, at + 4096), patternBytes(4096, 100 + i));
      }
    } finally {
      await s.worker.terminate();
    }
  });

  test(`in-process transport: device reset with requests in flight; every promise settles once (${layout} rings)`, async () => {
    const s = await start(layout, 4);
    try {
      const d = s.driver;
      const outcome: string[] = [];
      const ps = Array.from({ length: 150 }, (_, i) => {
        const p = d.write(i * 8192, patternBytes(8192, i));
        p.then(
          () => outcome.push("ok"),
          (e: unknown) => outcome.push(isVirtioError(e) ? e.code : String(e)),
        );
        return p;
      });
      // The device completes what it popped before it acknowledges the reset (status reads 0).
      await s.t.runAsync(s.t.reset());
      d.reset();
      await within(Promise.allSettled(ps), 10_000);
      await new Promise((res) => setTimeout(res, 10));
      assert.equal(outcome.length, 150);
      assert.ok(
        outcome.every((o) => o === "ok" || o === ErrorCode.DEVICE_RESET),
        outcome.join(),
      );
      assert.ok(outcome.includes(ErrorCode.DEVICE_RESET), "requests the device never saw reject");
      assert.equal(d.pending, 0);
      assert.equal(s.dq.numOutstanding, 0);
      await assert.rejects(d.read(0, new Uint8Array(512)), (e: unknown) =>
        isVirtioError(e, ErrorCode.DEVICE_RESET),
      );
      await s.finish();
    } finally {
      await s.worker.terminate();
    }
  });

  test(`in-process transport: a broken device (DEVICE_NEEDS_RESET) fails pending requests (${layout} rings)`, async () => {
    const s = await start(layout);
    try {
      const d = s.driver;
      await within(d.write(0, new Uint8Array(4096).fill(1)));
      // A malformed request (no status byte): the device breaks (BLK_MISSING_HEADERS), sets
      // DEVICE_NEEDS_RESET and sends a configuration change notification.
      assert.ok(s.dq.stage([{ addr: s.userBase, len: 16 }], [], 9999));
      const ps = Array.from({ length: 5 }, (_, i) => d.read(i * 512, new Uint8Array(512)));
      const res = await within(Promise.allSettled(ps), 10_000);
      for (const r of res) {
        assert.equal(r.status, "rejected");
        assert.ok(isVirtioError(r.reason, ErrorCode.DEVICE_BROKEN), String(r.reason));
      }
      assert.ok(s.statuses.some((st) => (st & VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET) !== 0));
      assert.equal(d.state, "broken");
      await s.t.runAsync(s.t.reset());
      d.reset();
      assert.equal(s.dq.broken, null);
      await s.finish();
    } finally {
      await s.worker.terminate();
    }
  });
}

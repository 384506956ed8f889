/**
 * BlkDataplaneDevice's control side with dataplane runtimes on this
 * thread (localThreadHost stands in for the thread boundary): activation,
 * kicks taken by the worker, reset, broken propagation, an activation that
 * fails halfway, and bad options. The cross-thread behaviour is covered by
 * test/integration/blk-*.test.ts.
 */
import { splitOnly } from "../../testing/index.ts";
import { test } from "node:test";
import assert from "node:assert/strict";
import { ErrorCode } from "../../errors.ts";
import { VirtioDevice } from "../../device/virtio-device.ts";
import { GuestMemory } from "../../memory/guest-memory.ts";
import { MockAllocator, MockSplitQueue } from "../../testing/index.ts";
import * as blk from "../../spec/blk.ts";
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE as ACK,
  VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET as NEEDS_RESET,
  VIRTIO_CONFIG_S_DRIVER as DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK as DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK as FEATURES_OK,
} from "../../spec/virtio.ts";
import {
  KICK_ROUTE_WAITING,
  RegisterLayout,
  createRegisters,
} from "../../transport/inproc/registers.ts";
import type { ThreadHost } from "../../dataplane/threads.ts";
import { localThreadHost } from "../../dataplane/local.ts";
import { serveDataplane } from "../../dataplane/runtime.ts";
import type { MemorySpaceFactory } from "../../dataplane/seams.ts";
import { silentLogger } from "../../log.ts";
import {
  INPROC_DOORBELLS,
  INPROC_MEMORY,
  inprocDataplaneBinding,
  inprocDoorbellOpener,
  inprocMemorySpace,
} from "../../transport/inproc/dataplane-binding.ts";
import { openPortableBacking } from "./backing-spec.ts";
import { BlkDataplaneDevice } from "./dataplane-device.ts";
import { BLK_DEVICE_KIND, blkDeviceOpener } from "./runtime-device.ts";

const MEM = 1 << 22;
const QUEUE_SIZE = 64;

/** A ThreadHost whose "threads" are dataplane runtimes on this thread. */
function inThreadHost(memory: MemorySpaceFactory = inprocMemorySpace): ThreadHost {
  return localThreadHost((endpoint) =>
    serveDataplane({
      endpoint,
      devices: { [BLK_DEVICE_KIND]: blkDeviceOpener(openPortableBacking) },
      memory: { [INPROC_MEMORY]: memory },
      doorbells: { [INPROC_DOORBELLS]: inprocDoorbellOpener() },
    }),
  );
}

async function setup(o: { queues?: number; ioThreads?: number; memory?: MemorySpaceFactory } = {}) {
  const queues = o.queues ?? 2;
  const mem = GuestMemory.createShared([{ guestPhysAddr: 0, size: MEM }]);
  const registers = createRegisters(queues);
  const disk = new SharedArrayBuffer(1 << 20);
  new Uint8Array(disk).fill(0x5a);
  const blkDev = await BlkDataplaneDevice.create({
    backing: { kind: "shared-memory", buffer: disk },
    numQueues: queues,
    queueSize: QUEUE_SIZE,
    ...(o.ioThreads === undefined ? {} : { ioThreads: o.ioThreads }),
    threads: inThreadHost(o.memory),
    workerModule: new URL("file:///unused"),
    binding: inprocDataplaneBinding(registers),
    logger: silentLogger,
  });
  let configChanges = 0;
  const dev = new VirtioDevice(blkDev, {
    memory: mem,
    notifier: { notifyQueue: () => {}, notifyConfig: () => configChanges++ },
    log: () => {},
  });
  await dev.writeStatus(ACK | DRIVER);
  dev.writeDriverFeatures(splitOnly(dev.readDeviceFeatures()));
  await dev.writeStatus(ACK | DRIVER | FEATURES_OK);
  const drvs = Array.from({ length: queues }, (_, q) => {
    const drv = new MockSplitQueue(mem, QUEUE_SIZE, 0x1000 + q * 0x4000);
    dev.setQueueSize(q, QUEUE_SIZE);
    dev.setQueueAddresses(q, drv.descAddr, drv.availAddr, drv.usedAddr);
    assert.equal(dev.setQueueReady(q, true), true);
    return drv;
  });
  await dev.writeStatus(ACK | DRIVER | FEATURES_OK | DRIVER_OK);
  const alloc = new MockAllocator(0x40000, MEM);
  const a = new Int32Array(registers);
  const layout = new RegisterLayout(queues);
  /** The driver's kick (transport/inproc/driver-side.ts): count, and notify a waiting dataplane. */
  const kick = (q: number) => {
    Atomics.add(a, layout.kickBase + q, 1);
    if ((Atomics.load(a, layout.kickRouteBase + q) & KICK_ROUTE_WAITING) !== 0)
      Atomics.notify(a, layout.kickBase + q);
  };
  const read = (q: number, sector: number) => {
    const hdr = alloc.alloc(16);
    mem.writeU32(hdr, blk.VIRTIO_BLK_T_IN);
    mem.writeU64(hdr + 8, BigInt(sector));
    const data = alloc.alloc(512, 512);
    const status = alloc.alloc(1);
    mem.writeU8(status, 0xee);
    const head = drvs[q]!.addChain([
      { addr: hdr, len: 16 },
      { addr: data, len: 512, writable: true },
      { addr: status, len: 1, writable: true },
    ]);
    kick(q);
    return { head, status };
  };
  return { mem, dev, blkDev, drvs, read, kick, alloc, configChanges: () => configChanges };
}

async function until(pred: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!pred()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

test("activation starts every ready queue on its worker; kicks reach the worker; reset stops them", async () => {
  const s = await setup({ queues: 3, ioThreads: 2 });
  try {
    assert.equal(s.blkDev.workerCount, 2);
    assert.deepEqual(
      [0, 1, 2].map((q) => s.blkDev.workerOf(q)),
      [0, 1, 0],
    );
    const reqs = [0, 1, 2].map((q) => s.read(q, q));
    await until(() => s.drvs.every((d) => d.usedIdx === 1), "one completion per queue");
    reqs.forEach((r) => assert.equal(s.mem.readU8(r.status), blk.VIRTIO_BLK_S_OK));
    const stats = await s.blkDev.stats();
    assert.deepEqual(
      stats.queues.map((q) => [q.queue, q.calls]),
      [
        [0, 1],
        [1, 1],
        [2, 1],
      ],
    );
    await s.dev.writeStatus(0);
    assert.equal(s.dev.readStatus(), 0);
    assert.deepEqual(
      s.blkDev.lastStops.map((x) => [x.queue, x.base, x.drained]),
      [
        [0, 1, 0],
        [1, 1, 0],
        [2, 1, 0],
      ],
    );
    s.read(0, 9);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(s.drvs[0]!.usedIdx, 1, "nothing served after the reset");
  } finally {
    await s.blkDev.dispose();
  }
});

test("a ring violation in a worker makes the device broken (NEEDS_RESET, config change) and halts the other worker", async () => {
  const s = await setup({ queues: 2 });
  try {
    // Queue 1: a head outside the queue.
    s.drvs[1]!.publish(QUEUE_SIZE + 3);
    s.kick(1);
    await until(() => s.dev.broken !== null, "device broken");
    assert.equal(s.dev.broken?.code, ErrorCode.HEAD_OUT_OF_RANGE);
    assert.equal(s.dev.readStatus() & NEEDS_RESET, NEEDS_RESET);
    assert.equal(s.configChanges(), 1);
    await new Promise((r) => setTimeout(r, 10)); // the halt reaches worker 0
    s.read(0, 1);
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(s.drvs[0]!.usedIdx, 0, "queue 0 consumes nothing once the device is broken");
    await s.dev.writeStatus(0);
    assert.equal(s.dev.broken, null);
  } finally {
    await s.blkDev.dispose();
  }
});

test("an activation that fails on one queue breaks the device and halts the queues that did start", async () => {
  // The workers see only the first 16 KiB of memory: queue 0's ring (0x1000) fits, queue 1's (0x5000) does not.
  const small: MemorySpaceFactory = () => {
    const full = inprocMemorySpace();
    return {
      update: (d, busy) => full.update(d, busy),
      memory: () => {
        const r = full.memory()!.toTransferable().regions[0]!;
        return new GuestMemory([{ ...r, size: 0x4000 }]);
      },
      dispose: () => full.dispose(),
    };
  };
  const s = await setup({ queues: 2, memory: small });
  try {
    assert.equal(s.dev.broken?.code, ErrorCode.QUEUE_CONFIG);
    assert.equal(s.dev.readStatus() & NEEDS_RESET, NEEDS_RESET);
    await new Promise((r) => setTimeout(r, 10));
    s.mem.writeU32(0x3000, blk.VIRTIO_BLK_T_FLUSH);
    s.drvs[0]!.addChain([
      { addr: 0x3000, len: 16 },
      { addr: 0x3010, len: 1, writable: true },
    ]);
    s.kick(0);
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(s.drvs[0]!.usedIdx, 0, "the started queue was halted");
  } finally {
    await s.blkDev.dispose();
  }
});

test("bad options throw at once, before any worker starts", async () => {
  let spawned = 0;
  const host: ThreadHost = {
    spawn: () => {
      spawned++;
      throw new Error("no thread expected");
    },
  };
  const base = {
    backing: { kind: "shared-memory", buffer: new SharedArrayBuffer(4096) },
    threads: host,
    workerModule: new URL("file:///unused"),
    binding: inprocDataplaneBinding(createRegisters(1)),
  } as const;
  await assert.rejects(BlkDataplaneDevice.create({ ...base, maxInFlight: 0 }), RangeError);
  await assert.rejects(BlkDataplaneDevice.create({ ...base, ioThreads: 0 }), RangeError);
  await assert.rejects(BlkDataplaneDevice.create({ ...base, logicalBlockSize: 1000 }), RangeError);
  await assert.rejects(
    BlkDataplaneDevice.create({ ...base, numQueues: 2, features: { MQ: false } }),
    RangeError,
  );
  assert.equal(spawned, 0);
  assert.throws(() => inprocDataplaneBinding(new SharedArrayBuffer(8)), RangeError);
  const plain = new GuestMemory([{ guestPhysAddr: 0, size: 4096, buffer: new ArrayBuffer(4096) }]);
  assert.throws(() => inprocDataplaneBinding(createRegisters(1)).exportMemory(plain), TypeError);
});

import { test } from "node:test";
import { splitOnly } from "../../testing/index.ts";
import assert from "node:assert/strict";
import { ErrorCode } from "../../errors.ts";
import { GuestMemory } from "../../memory/guest-memory.ts";
import { VirtioDevice, type DeviceNotifier } from "../../device/virtio-device.ts";
import { MockAllocator, MockSplitQueue } from "../../testing/index.ts";
import * as blk from "../../spec/blk.ts";
import { BlkConfig } from "../../spec/blk.ts";
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE as ACK,
  VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET as NEEDS_RESET,
  VIRTIO_CONFIG_S_DRIVER as DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK as DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK as FEATURES_OK,
  featureBit,
} from "../../spec/virtio.ts";
import { type BlkBacking, MemoryBacking } from "./backing.ts";
import { BlkDevice } from "./device.ts";
import { silentLogger } from "../../log.ts";

const DISK = new Uint8Array(1 << 20).map((_, i) => (i * 13) & 0xff);

/** A MemoryBacking whose reads wait for `release()`. */
class SlowBacking extends MemoryBacking {
  readonly waiting: (() => void)[] = [];
  override readv(offset: number, iov: readonly Uint8Array[]): Promise<void> {
    return new Promise<void>((res) => this.waiting.push(res)).then(() => super.readv(offset, iov));
  }
  release(): void {
    for (const w of this.waiting.splice(0)) w();
  }
}

async function setup(backing: BlkBacking = new MemoryBacking(DISK), features?: bigint) {
  const mem = GuestMemory.createShared([{ guestPhysAddr: 0, size: 1 << 22 }]);
  const calls: number[] = [];
  let configChanges = 0;
  const notifier: DeviceNotifier = {
    notifyQueue: (i) => calls.push(i),
    notifyConfig: () => configChanges++,
  };
  const blkDev = new BlkDevice({ backing, serial: "dev", queueSize: 64, logger: silentLogger });
  const dev = new VirtioDevice(blkDev, { memory: mem, notifier, log: () => {} });
  await dev.writeStatus(ACK);
  await dev.writeStatus(ACK | DRIVER);
  dev.writeDriverFeatures(features ?? splitOnly(dev.readDeviceFeatures()));
  await dev.writeStatus(ACK | DRIVER | FEATURES_OK);
  const drv = new MockSplitQueue(mem, 64, 0x1000);
  dev.setQueueSize(0, 64);
  dev.setQueueAddresses(0, drv.descAddr, drv.availAddr, drv.usedAddr);
  assert.equal(dev.setQueueReady(0, true), true);
  await dev.writeStatus(ACK | DRIVER | FEATURES_OK | DRIVER_OK);
  const alloc = new MockAllocator(0x10000, 1 << 22);
  const read = (sector: number, len: number) => {
    const hdr = alloc.alloc(16);
    mem.writeU32(hdr, blk.VIRTIO_BLK_T_IN);
    mem.writeU64(hdr + 8, BigInt(sector));
    const data = alloc.alloc(len, 512);
    const status = alloc.alloc(1);
    mem.writeU8(status, 0xee);
    const head = drv.addChain([
      { addr: hdr, len: 16 },
      { addr: data, len, writable: true },
      { addr: status, len: 1, writable: true },
    ]);
    return { head, data, status };
  };
  return {
    mem,
    dev,
    blkDev,
    drv,
    calls,
    configChanges: () => configChanges,
    read,
    alloc,
  };
}

const turns = async (n = 5) => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

test("a VirtioDevice with BlkDevice serves reads through the framework's queues and notifier", async () => {
  const s = await setup();
  assert.equal(s.dev.deviceId, 2);
  const r = s.read(4, 1024);
  s.dev.queueNotify(0);
  await turns();
  assert.deepEqual(s.drv.drainUsed(), [{ id: r.head, len: 1025 }]);
  assert.equal(s.mem.readU8(r.status), blk.VIRTIO_BLK_S_OK);
  const got = new Uint8Array(1024);
  s.mem.read(r.data, got);
  assert.deepEqual(got, DISK.subarray(2048, 3072));
  assert.deepEqual(s.calls, [0], "one used-buffer notification through the framework");
  assert.equal(s.dev.stats.notificationsSent, 1);
});

test("a request made available before DRIVER_OK is served at activation", async () => {
  const mem = GuestMemory.createShared([{ guestPhysAddr: 0, size: 1 << 22 }]);
  const blkDev = new BlkDevice({ backing: new MemoryBacking(DISK), logger: silentLogger });
  const dev = new VirtioDevice(blkDev, { memory: mem, log: () => {} });
  await dev.writeStatus(ACK | DRIVER);
  dev.writeDriverFeatures(splitOnly(dev.readDeviceFeatures()));
  await dev.writeStatus(ACK | DRIVER | FEATURES_OK);
  const drv = new MockSplitQueue(mem, 64, 0x1000);
  dev.setQueueSize(0, 64);
  dev.setQueueAddresses(0, drv.descAddr, drv.availAddr, drv.usedAddr);
  dev.setQueueReady(0, true);
  mem.writeU32(0x20000, blk.VIRTIO_BLK_T_GET_ID);
  drv.addChain([
    { addr: 0x20000, len: 16 },
    { addr: 0x20100, len: 21, writable: true },
  ]);
  await dev.writeStatus(ACK | DRIVER | FEATURES_OK | DRIVER_OK);
  assert.equal(drv.usedIdx, 1);
});

test("config space: capacity, writeback toggled by the driver, resize bumps the generation and notifies", async () => {
  const s = await setup();
  const cap = new Uint8Array(8);
  s.dev.readConfig(BlkConfig.capacity, cap);
  assert.equal(new DataView(cap.buffer).getBigUint64(0, true), 2048n);
  const wb = new Uint8Array(1);
  s.dev.readConfig(BlkConfig.writeback, wb);
  assert.equal(wb[0], 1);
  s.dev.writeConfig(BlkConfig.writeback, Uint8Array.of(0));
  s.dev.readConfig(BlkConfig.writeback, wb);
  assert.equal(wb[0], 0);
  assert.equal(s.blkDev.blkConfig.writeThrough, true);
  const gen = s.dev.configGeneration;
  await s.blkDev.resize(2 << 20);
  assert.equal(s.blkDev.backing.size, 2 << 20);
  s.dev.readConfig(BlkConfig.capacity, cap);
  assert.equal(new DataView(cap.buffer).getBigUint64(0, true), 4096n);
  assert.notEqual(s.dev.configGeneration, gen);
  assert.equal(s.configChanges(), 1);
  await assert.rejects(s.blkDev.resize(1000), RangeError);
});

test("CONFIG_WCE without FLUSH: writeback reads 0 after FEATURES_OK", async () => {
  const features =
    new BlkDevice({ backing: new MemoryBacking(4096) }).features &
    ~featureBit(blk.VIRTIO_BLK_F_FLUSH);
  const s = await setup(new MemoryBacking(DISK), features);
  const wb = new Uint8Array(1);
  s.dev.readConfig(BlkConfig.writeback, wb);
  assert.equal(wb[0], 0);
});

test("reset with a read in flight: the read completes into the used ring before status reads 0", async () => {
  const backing = new SlowBacking(DISK);
  const s = await setup(backing);
  const r = s.read(0, 512);
  s.dev.queueNotify(0);
  await turns();
  let done = false;
  const resetting = s.dev.writeStatus(0).then(() => (done = true));
  await turns();
  assert.equal(done, false, "reset waits for in-flight I/O");
  backing.release();
  await resetting;
  assert.equal(s.dev.readStatus(), 0);
  assert.equal(s.drv.usedIdx, 1);
  assert.equal(s.mem.readU8(r.status), blk.VIRTIO_BLK_S_OK);
  assert.equal(s.blkDev.engines.length, 0);
});

test("a request without a status byte breaks the device: NEEDS_RESET, config notification", async () => {
  const s = await setup();
  const hdr = s.alloc.alloc(16);
  s.drv.addChain([{ addr: hdr, len: 16 }]);
  s.dev.queueNotify(0);
  assert.equal(s.dev.broken?.code, ErrorCode.BLK_MISSING_HEADERS);
  assert.equal(s.dev.readStatus() & NEEDS_RESET, NEEDS_RESET);
  assert.equal(s.configChanges(), 1);
  assert.equal(s.blkDev.engines[0]?.halted, true);
  await s.dev.writeStatus(0);
  assert.equal(s.dev.broken, null, "reset clears broken");
});

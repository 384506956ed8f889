import { test } from "node:test";
import assert from "node:assert/strict";
import { GuestMemory } from "../memory/guest-memory.ts";
import {
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  featureBit,
} from "../spec/virtio.ts";
import { DriverQueue } from "./driver-queue.ts";
import { vringLayout } from "./layout.ts";
import { openDriverRing } from "./open-driver-ring.ts";
import { openRing } from "./open-ring.ts";
import { PackedDriverQueue } from "./packed-driver-queue.ts";
import { packedRingLayout } from "./packed-layout.ts";
import { placeRing, ringLayoutOf, type RingLayoutKind } from "./ring-layout.ts";

const VERSION_1 = featureBit(VIRTIO_F_VERSION_1);
const PACKED = featureBit(VIRTIO_F_RING_PACKED);
const INDIRECT = featureBit(VIRTIO_RING_F_INDIRECT_DESC);
const EVENT_IDX = featureBit(VIRTIO_RING_F_EVENT_IDX);
const RING_BASE = 0x1000;
const ARENA = { addr: 0x40000, entriesPerChain: 4 };
const BUF = 0x80000;

const layoutFeatures = (layout: RingLayoutKind): bigint =>
  VERSION_1 | (layout === "packed" ? PACKED : 0n);
const memory = (): GuestMemory => GuestMemory.createShared([{ guestPhysAddr: 0, size: 1 << 20 }]);

test("ringLayoutOf: packed iff VIRTIO_F_RING_PACKED", () => {
  assert.equal(ringLayoutOf(VERSION_1), "split");
  assert.equal(ringLayoutOf(VERSION_1 | PACKED), "packed");
});

test("placeRing: split as vringLayout, packed as packedRingLayout under the transports' names", () => {
  assert.deepEqual(placeRing("split", 64, 0x2000), { layout: "split", ...vringLayout(64, 0x2000) });
  assert.deepEqual(placeRing("split", 64, 0x2000, 4096), {
    layout: "split",
    ...vringLayout(64, 0x2000, 4096),
  });
  const p = packedRingLayout(100, 0x2000);
  assert.deepEqual(placeRing("packed", 100, 0x2000), {
    layout: "packed",
    size: 100,
    descAddr: p.descAddr,
    availAddr: p.driverAddr,
    usedAddr: p.deviceAddr,
    totalBytes: p.totalBytes,
  });
  assert.throws(() => placeRing("split", 100, 0x2000), RangeError, "split sizes are powers of two");
  assert.throws(() => placeRing("packed", 0, 0x2000), RangeError);
  assert.throws(() => placeRing("packed", 32769, 0x2000), RangeError);
  assert.throws(() => placeRing("packed", 8, 0x2008), RangeError, "16-aligned base");
});

test("openDriverRing: the layout, indirect and event index follow the negotiated features", () => {
  const mem = memory();
  const split = openDriverRing<number>(mem, VERSION_1, placeRing("split", 16, RING_BASE));
  assert.ok(split instanceof DriverQueue);
  assert.equal(split.layout, "split");
  assert.equal(split.indirect, false);
  const packed = openDriverRing<number>(
    mem,
    VERSION_1 | PACKED,
    placeRing("packed", 12, RING_BASE),
  );
  assert.ok(packed instanceof PackedDriverQueue);
  assert.equal(packed.layout, "packed");
  assert.equal(packed.size, 12);
  for (const layout of ["split", "packed"] as const) {
    const l = placeRing(layout, 8, RING_BASE);
    const f = layoutFeatures(layout);
    // An arena without INDIRECT_DESC is not used (§2.7.5.3.1 / §2.8.19).
    assert.equal(openDriverRing(mem, f, l, { indirectArena: ARENA }).indirect, false);
    assert.equal(openDriverRing(mem, f | INDIRECT, l, { indirectArena: ARENA }).indirect, true);
    assert.equal(openDriverRing(mem, f | INDIRECT, l).indirect, false, "no arena, no tables");
  }
  assert.throws(
    () =>
      openDriverRing(mem, VERSION_1, {
        size: 100,
        descAddr: RING_BASE,
        availAddr: RING_BASE + 0x1000,
        usedAddr: RING_BASE + 0x2000,
      }),
    RangeError,
  );
  assert.throws(
    () =>
      openDriverRing(mem, VERSION_1 | PACKED, placeRing("packed", 8, RING_BASE), {
        initialIndex: 5,
      }),
    RangeError,
  );
  // A split-sized placement opened as packed is still a valid packed ring (sizes are free there).
  assert.equal(
    openDriverRing(mem, VERSION_1 | PACKED, { ...placeRing("split", 8, RING_BASE) }).size,
    8,
  );
});

test("notificationData: split = the published avail.idx; packed = next_off | next_wrap << 15", () => {
  const mem = memory();
  const split = openDriverRing<number>(mem, VERSION_1, placeRing("split", 4, RING_BASE), {
    initialIndex: 0xfffe,
  });
  assert.equal(split.notificationData, 0xfffe);
  for (let i = 0; i < 3; i++) split.add([{ addr: BUF, len: 8 }], [], i);
  assert.equal(split.notificationData, 0x0001, "the 16-bit index wrapped");
  split.stage([{ addr: BUF, len: 8 }], [], 3);
  assert.equal(split.notificationData, 0x0001, "staged requests do not count");
  const packed = openDriverRing<number>(mem, VERSION_1 | PACKED, placeRing("packed", 3, RING_BASE));
  assert.equal(packed.notificationData, 0x8000, "slot 0, wrap counter 1");
  packed.add([{ addr: BUF, len: 8 }], [{ addr: BUF + 8, len: 8 }], 0);
  assert.equal(packed.notificationData, 0x8002);
  packed.add([{ addr: BUF, len: 8 }], [], 1);
  assert.equal(packed.notificationData, 0x0000, "past the end: slot 0, wrap counter 0");
});

for (const layout of ["split", "packed"] as const) {
  test(`a ${layout} driver ring from openDriverRing talks to the device ring from openRing`, () => {
    const mem = memory();
    const size = layout === "packed" ? 7 : 8;
    const features = layoutFeatures(layout) | INDIRECT | EVENT_IDX;
    const l = placeRing(layout, size, RING_BASE);
    const drv = openDriverRing<string>(mem, features, l, { indirectArena: ARENA });
    const dev = openRing(mem, { ...l, features });
    let completed = 0;
    // Enough rounds for both wrap counters (packed) to flip many times.
    for (let round = 0; round < 50; round++) {
      const n = 1 + (round % size);
      for (let i = 0; i < n; i++) {
        const segs = (round + i) % 3;
        const writable = Array.from({ length: segs }, (_, k) => ({ addr: BUF + 64 * k, len: 16 }));
        assert.equal(
          drv.stage([{ addr: BUF + 0x1000, len: 16 }], writable, `r${round}.${i}`),
          true,
        );
      }
      drv.kickNeeded();
      const heads: number[] = [];
      for (let c = dev.popAvail(); c !== null; c = dev.popAvail()) heads.push(c.head);
      assert.equal(heads.length, n);
      for (const h of heads.reverse()) dev.addUsed(h, 0);
      dev.publishUsed();
      const got: string[] = [];
      for (let u = drv.getUsed(); u !== null; u = drv.getUsed()) got.push(u.token);
      assert.equal(got.length, n);
      assert.deepEqual(new Set(got).size, n);
      completed += n;
      assert.equal(drv.numFree, size);
      assert.equal(drv.numOutstanding, 0);
    }
    assert.equal(drv.broken, null);
    assert.equal(dev.broken, null);
    assert.ok(completed > 4 * size);
  });
}

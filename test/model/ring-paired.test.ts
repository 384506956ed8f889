/**
 * Driver and device run against each other over one GuestMemory for 70000+
 * requests each, on split rings (VIRTIO 1.2 §2.7, notification suppression
 * §2.7.7 / §2.7.10) and on packed rings (§2.8, §2.8.10; a size that is not a
 * power of two), both built from negotiated features (`openDriverRing`,
 * `openRing`), with both sides following their sleep protocols:
 *
 * - the device runs only when kicked (or while its re-check after
 *   `enableNotification` finds work), and completes in-flight requests out of
 *   order, some asynchronously while it sleeps;
 * - the driver consumes only when called (or while its re-check after
 *   `enableCallbacks` / `enableCallbacksDelayed` finds work);
 * - both suppress: EVENT_IDX on or off, indirect on or off.
 *
 * A lost kick or call shows up as a stall: nothing can move while requests
 * are outstanding. Every request must be completed exactly once with its
 * token, length and payload; split indexes wrap past 65535 on the way,
 * packed wrap counters flip ten thousand times or more.
 *
 * @module
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { openDriverRing } from "../../src/ring/open-driver-ring.ts";
import { openRing } from "../../src/ring/open-ring.ts";
import type { DescriptorChain } from "../../src/ring/chain.ts";
import { placeRing, type RingLayoutKind } from "../../src/ring/ring-layout.ts";
import { GuestMemory } from "../../src/memory/guest-memory.ts";
import {
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  featureBit,
} from "../../src/spec/virtio.ts";

/** Ring sizes: split 8, packed 7 (not a power of two). */
const SIZES: Record<RingLayoutKind, number> = { split: 8, packed: 7 };
/** Descriptors per indirect table. */
const ENTRIES = 4;
const RING_BASE = 0x1000;
const ARENA = 0x4000;
const DATA = 0x10000;
const SLOT = 256;
const REQUESTS = 70_000;
/** Iterations without any progress that count as a stall (each side gets many chances to act). */
const STALL_LIMIT = 2_000;

interface PairedCfg {
  layout: RingLayoutKind;
  eventIdx: boolean;
  indirect: boolean;
  seed: number;
}

type SideState = "asleep" | "awake" | "rearm";

/** xorshift32: a small deterministic PRNG so a failure reproduces. */
function rng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 1;
  return (n) => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
}

interface PairedResult {
  kicks: number;
  calls: number;
  /** Descriptors (ring slots) the requests took, in all. */
  slots: number;
  /** The device's vhost-user ring base at the end, and the driver's notification data. */
  vringBase: number;
  notificationData: number;
}

function runPaired(cfg: PairedCfg): PairedResult {
  const SIZE = SIZES[cfg.layout];
  const mem = GuestMemory.createShared([{ guestPhysAddr: 0, size: DATA + SIZE * SLOT }]);
  const l = placeRing(cfg.layout, SIZE, RING_BASE);
  const features =
    featureBit(VIRTIO_F_VERSION_1) |
    (cfg.layout === "packed" ? featureBit(VIRTIO_F_RING_PACKED) : 0n) |
    (cfg.eventIdx ? featureBit(VIRTIO_RING_F_EVENT_IDX) : 0n) |
    (cfg.indirect ? featureBit(VIRTIO_RING_F_INDIRECT_DESC) : 0n);
  const drv = openDriverRing<number>(mem, features, l, {
    indirectArena: { addr: ARENA, entriesPerChain: ENTRIES },
  });
  const dev = openRing(mem, { ...l, features });
  assert.equal(drv.layout, cfg.layout);
  const rand = rng(cfg.seed);
  const inFlight: DescriptorChain[] = [];
  const expectLen = new Int32Array(REQUESTS).fill(-1);
  const done = new Uint8Array(REQUESTS);
  const tag = new Uint8Array(4);
  const view = new DataView(tag.buffer);
  // Buffer slots: at most SIZE requests are outstanding, each owns one slot until the driver takes it back.
  const freeSlots = Array.from({ length: SIZE }, (_, i) => i);
  const slotOf = new Int32Array(REQUESTS);
  let submitted = 0;
  let slots = 0;
  let completed = 0;
  let kicks = 0;
  let calls = 0;
  let devState: SideState = "asleep";
  let drvState: SideState = "asleep";
  let stalled = 0;

  const submit = (): boolean => {
    const token = submitted;
    const slot = freeSlots.pop();
    if (slot === undefined) return false;
    const base = DATA + slot * SLOT;
    const nWrite = rand(3); // 0..2 writable segments after one 16-byte readable header
    const writable = Array.from({ length: nWrite }, (_, k) => ({
      addr: base + 16 + 64 * k,
      len: 4 + rand(60),
    }));
    view.setUint32(0, token, true);
    mem.write(base, tag);
    if (!drv.add([{ addr: base, len: 16 }], writable, token)) {
      freeSlots.push(slot);
      return false;
    }
    slotOf[token] = slot;
    submitted++;
    const total = 1 + nWrite;
    slots += cfg.indirect && total > 1 && total <= ENTRIES ? 1 : total;
    return true;
  };

  const complete = (): void => {
    const [c] = inFlight.splice(rand(inFlight.length), 1) as [DescriptorChain];
    c.reader().read(tag);
    const token = view.getUint32(0, true);
    const len = c.writableBytes === 0 ? 0 : 4 + rand(c.writableBytes - 3);
    if (len > 0) assert.equal(c.writer().write(tag), 4); // echo the token as payload
    expectLen[token] = len;
    dev.addUsed(c.head, len);
  };

  const publishAndCall = (): void => {
    dev.publishUsed();
    if (dev.needsNotification()) {
      calls++;
      if (drvState === "asleep") drvState = "awake";
    }
  };

  // Each side: "awake" (disable notifications, drain) → "rearm" (a later step: enable and re-check) →
  // "asleep" (armed; only the other side's notification wakes it) or back to "awake" if work slipped in.
  // Other steps of the other side run between drain and re-arm, so the re-check races for real.
  const deviceStep = (): boolean => {
    if (devState === "rearm") {
      devState = dev.enableNotification() ? "awake" : "asleep";
      return false;
    }
    dev.disableNotification();
    let moved = false;
    for (let budget = 1 + rand(SIZE); budget > 0; budget--) {
      const c = dev.popAvail();
      if (c === null) {
        devState = "rearm";
        break;
      }
      inFlight.push(c);
      moved = true;
      if (rand(2) === 0) complete();
    }
    if (moved) publishAndCall();
    return moved;
  };

  const driverStep = (): boolean => {
    if (drvState === "rearm") {
      const armed =
        cfg.eventIdx && rand(2) === 0 ? drv.enableCallbacksDelayed() : drv.enableCallbacks();
      drvState = armed ? "asleep" : "awake";
      return false;
    }
    drv.disableCallbacks();
    let moved = false;
    while (drv.nextUsed()) {
      const token = drv.usedToken;
      assert.equal(done[token], 0, `token ${token} completed twice`);
      done[token] = 1;
      assert.equal(drv.usedLen, expectLen[token], `token ${token} length`);
      if (drv.usedLen > 0) {
        mem.read(DATA + slotOf[token]! * SLOT + 16, tag);
        assert.equal(view.getUint32(0, true), token, `token ${token} payload`);
      }
      freeSlots.push(slotOf[token]!);
      completed++;
      moved = true;
    }
    drvState = "rearm";
    return moved;
  };

  while (completed < REQUESTS) {
    let moved = false;
    switch (rand(4)) {
      case 0: {
        for (let k = 1 + rand(4); k > 0 && submitted < REQUESTS && submit(); k--) moved = true;
        if (drv.kickNeeded()) {
          kicks++;
          if (devState === "asleep") devState = "awake";
        }
        break;
      }
      case 1:
        if (devState !== "asleep") moved = deviceStep();
        break;
      case 2:
        // An asynchronous completion, whether or not the device is awake.
        if (inFlight.length > 0) {
          complete();
          publishAndCall();
          moved = true;
        }
        break;
      default:
        if (drvState !== "asleep") moved = driverStep();
    }
    stalled = moved ? 0 : stalled + 1;
    if (stalled > STALL_LIMIT) {
      assert.fail(
        `stall (lost notification?): submitted ${submitted}, completed ${completed}, device in flight ${inFlight.length}, ` +
          `device ${devState}, driver ${drvState}, free ${drv.numFree}`,
      );
    }
  }
  assert.equal(drv.numFree, SIZE);
  assert.equal(drv.broken, null);
  assert.equal(dev.broken, null);
  assert.equal(
    done.every((d) => d === 1),
    true,
  );
  return { kicks, calls, slots, vringBase: dev.vringBase, notificationData: drv.notificationData };
}

for (const layout of ["split", "packed"] as const) {
  for (const eventIdx of [false, true]) {
    for (const indirect of [false, true]) {
      test(`paired driver + device, ${REQUESTS} requests, ${layout} rings, EVENT_IDX ${eventIdx ? "on" : "off"}, indirect ${indirect ? "on" : "off"}`, () => {
        const { kicks, calls, slots, vringBase, notificationData } = runPaired({
          layout,
          eventIdx,
          indirect,
          seed:
            0x9e3779b9 ^
            (Number(eventIdx) * 2 + Number(indirect)) ^
            (layout === "packed" ? 0x55 : 0),
        });
        if (layout === "split") {
          assert.equal(
            vringBase,
            REQUESTS & 0xffff,
            "the 16-bit indexes wrapped and stayed in step",
          );
          assert.equal(notificationData, REQUESTS & 0xffff);
        } else {
          // Both sides at the same slot with the same wrap counter, avail and used alike.
          const size = SIZES.packed;
          const at = (slots % size) | (((Math.floor(slots / size) + 1) % 2) << 15);
          assert.equal(notificationData, at, "the driver's next slot and wrap counter");
          assert.equal(vringBase, (at | (at << 16)) >>> 0, "the device's avail and used positions");
          assert.ok(
            slots / size >= 5_000,
            `the wrap counters flipped ${Math.floor(slots / size)} times`,
          );
        }
        // Suppression had an effect on both sides (batches share one notification).
        assert.ok(kicks > 0 && kicks < REQUESTS, `kicks ${kicks}`);
        assert.ok(calls > 0 && calls < REQUESTS, `calls ${calls}`);
      });
    }
  }
}

import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { VirtioDevice } from "./virtio-device.ts";
import type { DeviceNotifier } from "./virtio-device.ts";
import type { ActivationContext, VirtioDeviceBackend } from "./backend.ts";
import { ConfigSpace } from "./config-space.ts";
import { GuestMemory } from "../memory/guest-memory.ts";
import { MockSplitQueue } from "../testing/index.ts";
import type { DescriptorChain } from "../ring/chain.ts";
import { ErrorCode, VirtioError, isVirtioError } from "../errors.ts";
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE as ACK,
  VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET as NEEDS_RESET,
  VIRTIO_CONFIG_S_DRIVER as DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK as DRIVER_OK,
  VIRTIO_CONFIG_S_FAILED as FAILED,
  VIRTIO_CONFIG_S_FEATURES_OK as FEATURES_OK,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  VIRTIO_RING_F_EVENT_IDX,
  featureBit,
} from "../spec/virtio.ts";
import { placeRing } from "../ring/ring-layout.ts";

const VERSION_1 = featureBit(VIRTIO_F_VERSION_1);
const EVENT_IDX = featureBit(VIRTIO_RING_F_EVENT_IDX);
const DEVICE_BIT = featureBit(3);
const PACKED = featureBit(VIRTIO_F_RING_PACKED);
const RING0 = 0x1000;
const RING1 = 0x4000;
const BUF = 0x10000;

/**
 * A test device: sums the readable bytes of each chain and writes the sum
 * (le32) into the writable part. In `hold` mode chains stay in flight until
 * {@link completeHeld} runs (an asynchronous backend).
 */
class SumBackend implements VirtioDeviceBackend {
  readonly name = "sum-test";
  readonly deviceId = 0x7f;
  readonly queueMaxSizes: readonly number[];
  readonly features: bigint;
  readonly config = new ConfigSpace(8);
  hold = false;
  ctx: ActivationContext | null = null;
  activations = 0;
  resets = 0;
  readonly held: { q: number; chain: DescriptorChain }[] = [];
  readonly configWrites: [number, number[]][] = [];
  quiesceWaiter: (() => void) | null = null;
  failActivation = false;
  validate: ((f: bigint) => boolean) | undefined = undefined;

  constructor(queueMaxSizes: readonly number[] = [16, 16], features = DEVICE_BIT | EVENT_IDX) {
    this.queueMaxSizes = queueMaxSizes;
    this.features = features;
  }

  validateFeatures(f: bigint): boolean {
    return this.validate === undefined || this.validate(f);
  }

  writeConfig(offset: number, data: Uint8Array, config: ConfigSpace): void {
    this.configWrites.push([offset, [...data]]);
    // Only byte 4 is writable (like blk `writeback`).
    if (offset <= 4 && offset + data.length > 4)
      config.store(4, data.subarray(4 - offset, 5 - offset));
  }

  activate(ctx: ActivationContext): void {
    if (this.failActivation) throw new Error("cannot start");
    this.ctx = ctx;
    this.activations++;
  }

  queueNotify(index: number): void {
    const q = this.ctx!.queues[index]!;
    try {
      q.disableNotification();
      for (;;) {
        for (let c = q.popAvail(); c !== null; c = q.popAvail()) {
          if (this.hold) this.held.push({ q: index, chain: c });
          else this.#complete(index, c);
        }
        if (!q.enableNotification()) break;
        q.disableNotification();
      }
    } catch (e) {
      if (!isVirtioError(e)) throw e;
      return; // the device is broken; nothing more to do
    }
    this.ctx!.signalUsed(index);
  }

  #complete(index: number, c: DescriptorChain): void {
    const q = this.ctx!.queues[index]!;
    const r = c.reader();
    const bytes = new Uint8Array(r.length);
    r.read(bytes);
    let sum = 0;
    for (const b of bytes) sum = (sum + b) >>> 0;
    const out = new Uint8Array(4);
    new DataView(out.buffer).setUint32(0, sum, true);
    const w = c.writer();
    const n = w.write(out);
    q.addUsed(c.head, n);
  }

  completeHeld(): void {
    const touched = new Set<number>();
    for (const h of this.held.splice(0)) {
      this.#complete(h.q, h.chain);
      touched.add(h.q);
    }
    for (const i of touched) this.ctx!.signalUsed(i);
  }

  quiesce(): Promise<void> | void {
    if (this.held.length === 0) return;
    return new Promise((resolve) => {
      this.quiesceWaiter = () => {
        this.completeHeld();
        resolve();
      };
    });
  }

  reset(): void {
    this.resets++;
    this.ctx = null;
  }
}

class Recorder implements DeviceNotifier {
  readonly queue: number[] = [];
  config = 0;
  notifyQueue(index: number): void {
    this.queue.push(index);
  }
  notifyConfig(): void {
    this.config++;
  }
}

interface Rig {
  mem: GuestMemory;
  backend: SumBackend;
  dev: VirtioDevice;
  notes: Recorder;
  logs: string[];
  drv: MockSplitQueue[];
}

function rig(backend = new SumBackend()): Rig {
  const mem = GuestMemory.createShared([{ guestPhysAddr: 0, size: 1 << 20 }]);
  const notes = new Recorder();
  const logs: string[] = [];
  const dev = new VirtioDevice(backend, { memory: mem, notifier: notes, log: (l) => logs.push(l) });
  const drv = [new MockSplitQueue(mem, 8, RING0), new MockSplitQueue(mem, 8, RING1)];
  return { mem, backend, dev, notes, logs, drv };
}

/** Runs the §3.1.1 sequence up to (and including) `until`. */
async function init(
  r: Rig,
  features: bigint = VERSION_1 | DEVICE_BIT | EVENT_IDX,
  until = DRIVER_OK,
): Promise<void> {
  await r.dev.writeStatus(ACK);
  await r.dev.writeStatus(ACK | DRIVER);
  r.dev.writeDriverFeatures(features);
  await r.dev.writeStatus(ACK | DRIVER | FEATURES_OK);
  if (until === FEATURES_OK) return;
  r.drv.forEach((d, i) => {
    assert.equal(r.dev.setQueueSize(i, d.size), true);
    assert.equal(r.dev.setQueueAddresses(i, d.descAddr, d.availAddr, d.usedAddr), true);
    assert.equal(r.dev.setQueueReady(i, true), true);
  });
  await r.dev.writeStatus(ACK | DRIVER | FEATURES_OK | DRIVER_OK);
}

/** Adds one request: `data` readable at BUF + 64·k, 4 writable bytes after it. */
function addRequest(r: Rig, q: number, k: number, data: number[]): void {
  const addr = BUF + 0x1000 * q + 64 * k;
  r.mem.write(addr, Uint8Array.from(data));
  r.drv[q]!.addChain([
    { addr, len: data.length },
    { addr: addr + 32, len: 4, writable: true },
  ]);
}

test("the full init sequence activates the backend with the ready queues", async () => {
  const r = rig();
  assert.equal(r.dev.readStatus(), 0);
  assert.equal(r.dev.readDeviceFeatures() & VERSION_1, VERSION_1, "VERSION_1 is always offered");
  await init(r);
  assert.equal(r.dev.readStatus(), ACK | DRIVER | FEATURES_OK | DRIVER_OK);
  assert.equal(r.backend.activations, 1);
  assert.equal(r.dev.features, VERSION_1 | DEVICE_BIT | EVENT_IDX);
  assert.equal(r.backend.ctx!.queues.length, 2);
  assert.ok(r.backend.ctx!.queues.every((q) => q !== null));
  assert.deepEqual(r.logs, []);
});

test("a request flows: kick → backend → used ring → notification", async () => {
  const r = rig();
  await init(r);
  addRequest(r, 0, 0, [1, 2, 3, 250]);
  r.dev.queueNotify(0);
  const used = r.drv[0]!.popUsed();
  assert.deepEqual(used, { id: 0, len: 4 });
  assert.equal(r.mem.readU32(BUF + 32), 256);
  assert.deepEqual(r.notes.queue, [0]);
  assert.equal(r.dev.stats.notificationsSent, 1);
  assert.equal(r.dev.stats.kicks, 1);
});

test("EVENT_IDX: used_event decides whether signalUsed notifies", async () => {
  const r = rig();
  await init(r);
  r.drv[0]!.usedEvent = 5; // notify only when used.idx passes 5
  for (let k = 0; k < 3; k++) addRequest(r, 0, k, [k]);
  r.dev.queueNotify(0);
  assert.deepEqual(r.notes.queue, []);
  assert.equal(r.dev.stats.notificationsSuppressed, 1);
  for (let k = 3; k < 7; k++) addRequest(r, 0, k, [k]);
  r.dev.queueNotify(0);
  assert.deepEqual(r.notes.queue, [0]);
  assert.equal(r.drv[0]!.drainUsed().length, 7);
});

test("FEATURES_OK is refused for an unoffered bit, without VERSION_1, or by the device", async () => {
  for (const [features, veto] of [
    [VERSION_1 | featureBit(40), false],
    [DEVICE_BIT, false],
    [VERSION_1, true],
  ] as const) {
    const r = rig();
    if (veto) r.backend.validate = () => false;
    await init(r, features, FEATURES_OK);
    assert.equal(r.dev.readStatus(), ACK | DRIVER, "status reads back without FEATURES_OK");
    assert.equal(r.dev.features, 0n);
    assert.equal(r.logs.length, 1);
    // DRIVER_OK can't follow: the step is skipped.
    await r.dev.writeStatus(ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    assert.equal(r.backend.activations, 0);
    // The driver may fix its set and try again.
    r.backend.validate = undefined;
    assert.equal(r.dev.writeDriverFeatures(VERSION_1), true);
    await r.dev.writeStatus(ACK | DRIVER | FEATURES_OK);
    assert.equal(r.dev.readStatus(), ACK | DRIVER | FEATURES_OK);
  }
});

test("features are frozen after FEATURES_OK and not writable before DRIVER", async () => {
  const r = rig();
  assert.equal(r.dev.writeDriverFeatures(VERSION_1), false);
  await r.dev.writeStatus(ACK);
  assert.equal(r.dev.writeDriverFeaturesWord(1, 1), false);
  await init(r, VERSION_1, FEATURES_OK);
  assert.equal(r.dev.writeDriverFeatures(VERSION_1 | DEVICE_BIT), false);
  assert.equal(r.dev.writeDriverFeaturesWord(0, 8), false);
  assert.equal(r.dev.features, VERSION_1);
  assert.equal(r.dev.readDeviceFeaturesWord(1), 1);
});

test("illegal status transitions are ignored and logged, never thrown", async () => {
  const r = rig();
  await r.dev.writeStatus(DRIVER); // skips ACKNOWLEDGE
  assert.equal(r.dev.readStatus(), 0);
  await r.dev.writeStatus(ACK | DRIVER);
  await r.dev.writeStatus(ACK | DRIVER | DRIVER_OK); // DRIVER_OK before FEATURES_OK
  assert.equal(r.dev.readStatus(), ACK | DRIVER);
  await r.dev.writeStatus(ACK); // clears DRIVER
  assert.equal(r.dev.readStatus(), ACK | DRIVER);
  assert.equal(r.logs.length, 3);
  await r.dev.writeStatus(ACK | DRIVER | FAILED);
  assert.equal(r.dev.readStatus(), ACK | DRIVER | FAILED);
  r.dev.writeDriverFeatures(VERSION_1);
  await r.dev.writeStatus(ACK | DRIVER | FEATURES_OK);
  assert.equal(r.dev.readStatus(), ACK | DRIVER | FAILED, "after FAILED only a reset helps");
  await r.dev.writeStatus(0);
  assert.equal(r.dev.readStatus(), 0);
  assert.equal(r.backend.activations, 0);
});

test("queue setup is only taken with FEATURES_OK set and DRIVER_OK clear", async () => {
  const r = rig();
  const d = r.drv[0]!;
  await r.dev.writeStatus(ACK | DRIVER);
  assert.equal(r.dev.setQueueSize(0, 8), false);
  assert.equal(r.dev.setQueueReady(0, true), false);
  await init(r);
  assert.equal(r.dev.setQueueSize(0, 4), false);
  assert.equal(r.dev.setQueueAddresses(0, d.descAddr, d.availAddr, d.usedAddr), false);
  assert.equal(r.dev.setQueueReady(0, false), true, "still ready");
  assert.equal(r.dev.queueSize(0), 8);
});

test("queue size and addresses are validated; a bad ring stays not ready", async () => {
  const r = rig();
  await init(r, undefined, FEATURES_OK);
  assert.equal(r.dev.queueSize(0), 16, "defaults to the maximum");
  assert.equal(r.dev.setQueueSize(0, 32), false, "above the maximum");
  assert.equal(r.dev.setQueueSize(0, 12), false, "not a power of two");
  assert.equal(r.dev.setQueueSize(0, 0), false);
  assert.equal(r.dev.setQueueSize(5, 8), false, "no such queue");
  assert.equal(r.dev.setQueueReady(99, true), false);
  assert.equal(r.dev.setQueueSize(0, 8), true);
  r.dev.setQueueAddresses(0, RING0 + 8, RING0 + 0x200, RING0 + 0x400); // desc misaligned
  assert.equal(r.dev.setQueueReady(0, true), false);
  r.dev.setQueueAddresses(0, RING0, RING0 + 0x81, RING0 + 0x400); // avail misaligned
  assert.equal(r.dev.setQueueReady(0, true), false);
  r.dev.setQueueAddresses(0, RING0, RING0 + 0x80, (1 << 20) - 8); // used outside memory
  assert.equal(r.dev.setQueueReady(0, true), false);
  r.dev.setQueueAddresses(0, 2 ** 60, Number.NaN, -4);
  assert.equal(r.dev.setQueueReady(0, true), false);
  assert.equal(r.dev.queueReady(0), false);
  const d = r.drv[0]!;
  r.dev.setQueueAddresses(0, d.descAddr, d.availAddr, d.usedAddr);
  assert.equal(r.dev.setQueueReady(0, true), true);
  assert.equal(r.dev.setQueueSize(0, 4), false, "size is fixed while ready");
});

test("with VIRTIO_F_RING_PACKED negotiated any size up to the maximum is taken; without it, powers of two only", async () => {
  for (const packed of [false, true]) {
    const r = rig(new SumBackend([16, 16], DEVICE_BIT | EVENT_IDX | PACKED));
    await init(r, VERSION_1 | DEVICE_BIT | (packed ? PACKED : 0n), FEATURES_OK);
    assert.equal(r.dev.setQueueSize(0, 12), packed, "12 is a packed size only");
    assert.equal(r.dev.setQueueSize(0, 17), false, "above the maximum");
    assert.equal(r.dev.setQueueSize(0, 0), false);
    if (!packed) continue;
    assert.equal(r.dev.queueSize(0), 12);
    const l = placeRing("packed", 12, RING0);
    r.dev.setQueueAddresses(0, l.descAddr + 8, l.availAddr, l.usedAddr); // Descriptor Ring misaligned
    assert.equal(r.dev.setQueueReady(0, true), false);
    r.dev.setQueueAddresses(0, l.descAddr, l.availAddr, l.usedAddr);
    assert.equal(r.dev.setQueueReady(0, true), true);
  }
});

test("only ready queues are handed over; kicks for others are ignored", async () => {
  const r = rig();
  await init(r, undefined, FEATURES_OK);
  const d = r.drv[0]!;
  r.dev.setQueueSize(0, 8);
  r.dev.setQueueAddresses(0, d.descAddr, d.availAddr, d.usedAddr);
  r.dev.setQueueReady(0, true);
  await r.dev.writeStatus(15);
  assert.deepEqual(
    r.backend.ctx!.queues.map((q) => q !== null),
    [true, false],
  );
  r.dev.queueNotify(1);
  r.dev.queueNotify(7);
  r.dev.queueNotify(-1);
  assert.equal(r.dev.stats.kicksIgnored, 3);
});

test("configuration space: bounded reads, hook writes after DRIVER, generation + notification on change", async () => {
  const r = rig();
  r.backend.config.update((v) => v.setUint32(0, 0xaabbccdd, true));
  assert.equal(r.notes.config, 0, "no notification before DRIVER_OK");
  const dst = new Uint8Array(6);
  r.dev.readConfig(4, dst);
  assert.deepEqual([...dst], [0, 0, 0, 0, 0xff, 0xff]);
  assert.equal(r.dev.writeConfig(4, Uint8Array.of(1)), 0, "not writable before DRIVER");
  await init(r);
  const gen = r.dev.configGeneration;
  assert.equal(r.dev.writeConfig(3, Uint8Array.of(7, 1, 9)), 3);
  assert.equal(r.backend.config.getU8(4), 1, "the writable byte took");
  assert.equal(r.backend.config.getU8(3), 0xaa, "read-only bytes did not");
  assert.equal(r.dev.writeConfig(8, Uint8Array.of(1)), 0);
  assert.equal(r.dev.configGeneration, gen);
  r.backend.config.update((v) => v.setUint8(0, 1));
  assert.equal(r.dev.configGeneration, gen + 1);
  assert.equal(r.notes.config, 1);
});

test("a ring violation breaks the whole device: NEEDS_RESET, config notification, one log line, all queues stop", async () => {
  const r = rig();
  await init(r);
  addRequest(r, 1, 0, [1]);
  r.drv[0]!.publish(12); // head 12 ≥ queue size 8
  r.dev.queueNotify(0);
  assert.equal(r.dev.broken?.code, ErrorCode.HEAD_OUT_OF_RANGE);
  assert.equal(r.dev.readStatus(), 15 | NEEDS_RESET);
  assert.equal(r.notes.config, 1);
  assert.equal(r.logs.length, 1);
  assert.match(r.logs[0]!, /queue 0.*VIRTIO_ERR_HEAD_OUT_OF_RANGE.*head=12/);
  // The healthy queue stops too: its kick is ignored and nothing reaches its used ring.
  r.dev.queueNotify(1);
  assert.equal(r.drv[1]!.usedIdx, 0);
  assert.equal(r.backend.ctx!.queues[1]!.broken?.code, ErrorCode.HEAD_OUT_OF_RANGE);
  // Sticky: a driver status write keeps NEEDS_RESET; a second error logs nothing.
  await r.dev.writeStatus(15);
  assert.equal(r.dev.readStatus() & NEEDS_RESET, NEEDS_RESET);
  r.dev.markBroken(new VirtioError(ErrorCode.DESC_LOOP, "again"));
  assert.equal(r.logs.length, 1);
  assert.equal(r.dev.broken?.code, ErrorCode.HEAD_OUT_OF_RANGE);
});

test("markBroken from the device type before DRIVER_OK: NEEDS_RESET but no notification", async () => {
  const r = rig();
  await init(r, undefined, FEATURES_OK);
  r.dev.markBroken(new VirtioError(ErrorCode.BLK_MISSING_HEADERS, "no header", { head: 3 }));
  assert.equal(r.dev.readStatus(), ACK | DRIVER | FEATURES_OK | NEEDS_RESET);
  assert.equal(r.notes.config, 0);
  assert.match(r.logs[0]!, /BLK_MISSING_HEADERS: no header \{head=3\}/);
});

test("activation failure breaks the device", async () => {
  const r = rig();
  r.backend.failActivation = true;
  await init(r);
  assert.equal(r.dev.broken?.code, ErrorCode.DEVICE_BROKEN);
  assert.equal(r.dev.readStatus(), 15 | NEEDS_RESET);
  assert.equal(r.notes.config, 1);
});

test("reset with I/O in flight: completions land before status reads 0, nothing after", async () => {
  const r = rig();
  await init(r);
  r.backend.hold = true;
  addRequest(r, 0, 0, [5, 6]);
  addRequest(r, 0, 1, [7]);
  r.dev.queueNotify(0);
  assert.equal(r.backend.held.length, 2);
  const done = r.dev.writeStatus(0);
  assert.equal(r.dev.resetting, true);
  assert.equal(r.dev.readStatus(), 15, "status is not 0 while requests are in flight");
  // Kicks and other writes during the reset are ignored.
  addRequest(r, 0, 2, [9]);
  r.dev.queueNotify(0);
  await r.dev.writeStatus(ACK);
  assert.equal(r.backend.held.length, 2);
  // The backend finishes its I/O: completions go to the used ring, then the reset completes.
  r.backend.quiesceWaiter!();
  await done;
  assert.equal(r.dev.readStatus(), 0);
  assert.deepEqual(
    r.drv[0]!.drainUsed().map((u) => u.id),
    [0, 2],
  );
  assert.equal(r.mem.readU32(BUF + 32), 11);
  assert.equal(r.drv[0]!.usedIdx, 2, "the request kicked during the reset was not consumed");
  assert.equal(r.dev.queues[0], null);
  assert.equal(r.dev.features, 0n);
  assert.equal(r.dev.broken, null);
  assert.equal(r.backend.resets, 1);
});

test("a stale queue after reset writes nothing to guest memory", async () => {
  const r = rig();
  await init(r);
  r.backend.hold = true;
  addRequest(r, 0, 0, [1]);
  r.dev.queueNotify(0);
  const ctx = r.backend.ctx!;
  const q = ctx.queues[0]!;
  const chain = r.backend.held[0]!.chain;
  r.backend.held.length = 0; // the backend "forgets" to finish during quiesce
  await r.dev.writeStatus(0);
  const snapshot = new Uint8Array(0x1000);
  r.mem.read(RING0, snapshot);
  q.addUsed(chain.head, 0);
  q.publishUsed();
  assert.equal(ctx.signalUsed(0), false);
  ctx.markBroken(new VirtioError(ErrorCode.DESC_LOOP, "late"));
  const after = new Uint8Array(0x1000);
  r.mem.read(RING0, after);
  assert.deepEqual(after, snapshot);
  assert.equal(r.dev.broken, null, "a stale activation cannot break the new one");
  assert.equal(r.notes.config, 0);
});

test("reset clears broken; the device can be initialised again", async () => {
  const r = rig();
  await init(r);
  r.drv[0]!.publish(12);
  r.dev.queueNotify(0);
  assert.notEqual(r.dev.broken, null);
  await r.dev.writeStatus(0);
  assert.equal(r.dev.readStatus(), 0);
  assert.equal(r.dev.broken, null);
  r.drv = [new MockSplitQueue(r.mem, 8, RING0), new MockSplitQueue(r.mem, 8, RING1)];
  await init(r);
  addRequest(r, 0, 0, [40, 2]);
  r.dev.queueNotify(0);
  assert.deepEqual(r.drv[0]!.popUsed(), { id: 0, len: 4 });
  assert.equal(r.mem.readU32(BUF + 32), 42);
  assert.equal(r.backend.activations, 2);
});

test("concurrent resets share one promise", async () => {
  const r = rig();
  await init(r);
  r.backend.hold = true;
  addRequest(r, 0, 0, [5]);
  r.dev.queueNotify(0);
  const a = r.dev.reset();
  const b = r.dev.writeStatus(0);
  r.backend.quiesceWaiter!();
  await Promise.all([a, b]);
  assert.equal(r.backend.resets, 1);
});

test("a reset with nothing in flight is complete when the status write returns", async () => {
  const r = rig();
  await init(r);
  void r.dev.writeStatus(0);
  assert.equal(r.dev.resetting, false);
  assert.equal(r.dev.readStatus(), 0);
  assert.equal(r.backend.resets, 1);
  // A driver that does not wait (legacy, virtio-mmio) goes on at once.
  void r.dev.writeStatus(ACK);
  assert.equal(r.dev.readStatus(), ACK);
});

test("the constructor rejects inconsistent device types", () => {
  assert.throws(() => new VirtioDevice(new SumBackend([])), RangeError);
  assert.throws(() => new VirtioDevice(new SumBackend([12])), RangeError);
});

test("property: random driver operations never throw and keep the status invariants", async () => {
  const op = fc.oneof(
    fc.record({ k: fc.constant("status" as const), v: fc.integer({ min: -5, max: 300 }) }),
    fc.record({
      k: fc.constant("status-step" as const),
      v: fc.constantFrom(0, ACK, ACK | DRIVER, 11, 15, FAILED),
    }),
    fc.record({ k: fc.constant("features" as const), v: fc.bigInt({ min: -1n, max: 1n << 66n }) }),
    fc.record({ k: fc.constant("features-ok" as const), v: fc.constant(0n) }),
    fc.record({
      k: fc.constant("size" as const),
      q: fc.integer({ min: -1, max: 3 }),
      v: fc.integer({ min: -1, max: 40 }),
    }),
    fc.record({
      k: fc.constant("addr" as const),
      q: fc.integer({ min: -1, max: 3 }),
      v: fc.integer({ min: 0, max: 1 << 21 }),
    }),
    fc.record({
      k: fc.constant("ready" as const),
      q: fc.integer({ min: -1, max: 3 }),
      v: fc.boolean(),
    }),
    fc.record({
      k: fc.constant("config" as const),
      off: fc.integer({ min: -4, max: 12 }),
      v: fc.integer({ min: 0, max: 10 }),
    }),
    fc.record({ k: fc.constant("kick" as const), q: fc.integer({ min: -1, max: 3 }) }),
  );
  await fc.assert(
    fc.asyncProperty(fc.array(op, { maxLength: 40 }), async (ops) => {
      const r = rig();
      for (const o of ops) {
        switch (o.k) {
          case "status":
          case "status-step":
            await r.dev.writeStatus(o.v);
            break;
          case "features":
            r.dev.writeDriverFeatures(o.v);
            break;
          case "features-ok":
            r.dev.writeDriverFeatures(VERSION_1 | EVENT_IDX);
            break;
          case "size":
            r.dev.setQueueSize(o.q, o.v);
            break;
          case "addr": {
            const d = r.drv[o.q & 1]!;
            if (o.v % 2 === 0) r.dev.setQueueAddresses(o.q, d.descAddr, d.availAddr, d.usedAddr);
            else r.dev.setQueueAddresses(o.q, o.v, o.v, o.v);
            break;
          }
          case "ready":
            r.dev.setQueueReady(o.q, o.v);
            break;
          case "config":
            r.dev.writeConfig(o.off, new Uint8Array(o.v));
            r.dev.readConfig(o.off, new Uint8Array(o.v));
            break;
          case "kick":
            r.dev.queueNotify(o.q);
            break;
        }
        const s = r.dev.readStatus();
        if (s & DRIVER_OK) assert.ok(s & FEATURES_OK, "DRIVER_OK implies FEATURES_OK");
        if (s & FEATURES_OK) assert.ok(s & DRIVER, "FEATURES_OK implies DRIVER");
        if (s & DRIVER) assert.ok(s & ACK, "DRIVER implies ACKNOWLEDGE");
        assert.equal((s & NEEDS_RESET) !== 0, r.dev.broken !== null);
        if (s & FEATURES_OK) assert.equal(r.dev.features & ~r.dev.readDeviceFeatures(), 0n);
      }
    }),
    { numRuns: 300 },
  );
});

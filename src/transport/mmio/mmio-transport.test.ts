/**
 * The virtio-mmio register model, register by register (VIRTIO 1.2 §4.2.2,
 * legacy §4.2.4), and a property: random register accesses never throw.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import * as m from "../../spec/virtio-mmio.ts";
import { legacyRingParts } from "../../spec/virtqueue.ts";
import { recordingLine, registerTestDevice } from "../register-test-support.ts";
import { VirtioMmioTransport } from "./mmio-transport.ts";

function make(version: 1 | 2 = 2) {
  const { device, backend, logs } = registerTestDevice();
  const line = recordingLine();
  const mmio = new VirtioMmioTransport(device, {
    interrupt: line,
    version,
    log: (l) => logs.push(l),
  });
  const r = (off: number) => mmio.read(off, 4);
  const w = (off: number, v: number) => mmio.write(off, 4, v);
  return { device, backend, logs, line, mmio, r, w };
}

async function toFeaturesOk(t: ReturnType<typeof make>, high = 1 | (1 << 8)): Promise<void> {
  t.w(m.VIRTIO_MMIO_STATUS, 1);
  t.w(m.VIRTIO_MMIO_STATUS, 3);
  t.w(m.VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
  t.w(m.VIRTIO_MMIO_DRIVER_FEATURES, 1 << 3);
  t.w(m.VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
  t.w(m.VIRTIO_MMIO_DRIVER_FEATURES, high);
  t.w(m.VIRTIO_MMIO_STATUS, 11);
  await t.mmio.settled();
}

test("mmio: identity registers and the window size", () => {
  const t = make();
  assert.equal(t.r(m.VIRTIO_MMIO_MAGIC_VALUE), 0x74726976);
  assert.equal(t.r(m.VIRTIO_MMIO_VERSION_REG), 2);
  assert.equal(t.r(m.VIRTIO_MMIO_DEVICE_ID), 2);
  assert.equal(t.r(m.VIRTIO_MMIO_VENDOR_ID), 0x1af4);
  assert.equal(t.mmio.size, 0x200);
  assert.equal(make(1).r(m.VIRTIO_MMIO_VERSION_REG), 1);
});

test("mmio v2: 64-bit features through the select registers; VERSION_1 required", async () => {
  const t = make();
  const word = (sel: number) => (
    t.w(m.VIRTIO_MMIO_DEVICE_FEATURES_SEL, sel),
    t.r(m.VIRTIO_MMIO_DEVICE_FEATURES)
  );
  assert.equal(word(0), 1 << 3);
  assert.equal(word(1), 1 | (1 << 8)); // VERSION_1 (bit 32) and bit 40
  assert.equal(word(2), 0);
  // Without VERSION_1 FEATURES_OK does not stick.
  await toFeaturesOk(t, 1 << 8);
  assert.equal(t.r(m.VIRTIO_MMIO_STATUS) & 8, 0);
  t.w(m.VIRTIO_MMIO_STATUS, 0);
  await t.mmio.settled();
  await toFeaturesOk(t);
  assert.equal(t.r(m.VIRTIO_MMIO_STATUS), 11);
  assert.equal(t.device.features, (1n << 3n) | (1n << 32n) | (1n << 40n));
  // After FEATURES_OK driver features are frozen.
  t.w(m.VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
  t.w(m.VIRTIO_MMIO_DRIVER_FEATURES, 0);
  assert.equal(t.device.readDriverFeatures() & 0xffn, 1n << 3n);
});

test("mmio v1: only bits 0-31, never VERSION_1; the device runs as legacy", async () => {
  const t = make(1);
  t.w(m.VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
  assert.equal(t.r(m.VIRTIO_MMIO_DEVICE_FEATURES), 0);
  t.w(m.VIRTIO_MMIO_STATUS, 3);
  await t.mmio.settled();
  assert.equal(t.device.legacy, true);
  t.w(m.VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
  t.w(m.VIRTIO_MMIO_DRIVER_FEATURES, 1); // VERSION_1 through a legacy interface: ignored
  t.w(m.VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
  t.w(m.VIRTIO_MMIO_DRIVER_FEATURES, 1 << 3);
  t.w(m.VIRTIO_MMIO_STATUS, 7);
  await t.mmio.settled();
  assert.equal(t.r(m.VIRTIO_MMIO_STATUS), 7);
  assert.deepEqual(t.backend.activations, [1n << 3n]);
});

test("mmio v2: queue registers; out-of-range select; no writes while ready", async () => {
  const t = make();
  t.w(m.VIRTIO_MMIO_QUEUE_SEL, 1);
  assert.equal(t.r(m.VIRTIO_MMIO_QUEUE_NUM_MAX), 8);
  t.w(m.VIRTIO_MMIO_QUEUE_SEL, 7);
  assert.equal(t.r(m.VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
  assert.equal(t.r(m.VIRTIO_MMIO_QUEUE_READY), 0);
  t.w(m.VIRTIO_MMIO_QUEUE_READY, 1); // no such queue: ignored
  await toFeaturesOk(t);
  t.w(m.VIRTIO_MMIO_QUEUE_SEL, 0);
  t.w(m.VIRTIO_MMIO_QUEUE_NUM, 8);
  t.w(m.VIRTIO_MMIO_QUEUE_DESC_LOW, 0x1000);
  t.w(m.VIRTIO_MMIO_QUEUE_AVAIL_LOW, 0x1080);
  t.w(m.VIRTIO_MMIO_QUEUE_USED_LOW, 0x2000);
  t.w(m.VIRTIO_MMIO_QUEUE_READY, 1);
  assert.equal(t.r(m.VIRTIO_MMIO_QUEUE_READY), 1);
  const before = t.mmio.badAccesses;
  t.w(m.VIRTIO_MMIO_QUEUE_DESC_LOW, 0x3000);
  assert.equal(t.mmio.badAccesses, before + 1);
  assert.ok(t.logs.at(-1)!.includes("QueueDescLow ignored: queue 0 is ready"), t.logs.at(-1));
  t.w(m.VIRTIO_MMIO_QUEUE_NUM, 4); // the framework refuses and logs
  assert.equal(t.device.queueSize(0), 8);
  t.w(m.VIRTIO_MMIO_STATUS, 15);
  await t.mmio.settled();
  t.w(m.VIRTIO_MMIO_QUEUE_NOTIFY, 0);
  t.w(m.VIRTIO_MMIO_QUEUE_NOTIFY, 9); // no such queue
  assert.deepEqual(t.backend.kicks, [0]);
  // Status 0 resets: queue not ready, status 0.
  t.w(m.VIRTIO_MMIO_STATUS, 0);
  await t.mmio.settled();
  assert.equal(t.r(m.VIRTIO_MMIO_STATUS), 0);
  assert.equal(t.r(m.VIRTIO_MMIO_QUEUE_READY), 0);
});

test("mmio v1: GuestPageSize, QueueAlign and QueuePFN place a §2.7.2 ring", async () => {
  const t = make(1);
  t.w(m.VIRTIO_MMIO_GUEST_PAGE_SIZE, 4096);
  t.w(m.VIRTIO_MMIO_STATUS, 3);
  t.w(m.VIRTIO_MMIO_QUEUE_SEL, 1);
  t.w(m.VIRTIO_MMIO_QUEUE_NUM, 8);
  t.w(m.VIRTIO_MMIO_QUEUE_ALIGN, 4096);
  t.w(m.VIRTIO_MMIO_QUEUE_PFN, 3);
  assert.equal(t.r(m.VIRTIO_MMIO_QUEUE_PFN), 3);
  assert.equal(t.device.queueReady(1), true);
  t.w(m.VIRTIO_MMIO_QUEUE_PFN, 5); // in use: ignored
  assert.equal(t.r(m.VIRTIO_MMIO_QUEUE_PFN), 3);
  t.w(m.VIRTIO_MMIO_QUEUE_PFN, 0); // stops the queue
  assert.equal(t.r(m.VIRTIO_MMIO_QUEUE_PFN), 0);
  t.w(m.VIRTIO_MMIO_QUEUE_ALIGN, 3); // not a power of two: ignored
  t.w(m.VIRTIO_MMIO_QUEUE_PFN, 2);
  assert.equal(t.r(m.VIRTIO_MMIO_QUEUE_PFN), 2);
  assert.deepEqual(legacyRingParts(0x2000, 8, 4096).usedAddr, 0x3000);
  t.w(m.VIRTIO_MMIO_STATUS, 0);
  await t.mmio.settled();
  assert.equal(t.r(m.VIRTIO_MMIO_QUEUE_PFN), 0, "reset sets QueuePFN to zero");
});

test("mmio: InterruptStatus / InterruptACK drive the line; reset clears them", async () => {
  const t = make();
  t.mmio.interrupts.notifyQueue();
  assert.equal(t.r(m.VIRTIO_MMIO_INTERRUPT_STATUS), 1);
  assert.equal(t.line.up, true);
  t.mmio.interrupts.notifyConfig();
  assert.equal(t.r(m.VIRTIO_MMIO_INTERRUPT_STATUS), 3);
  t.w(m.VIRTIO_MMIO_INTERRUPT_ACK, 1);
  assert.equal(t.r(m.VIRTIO_MMIO_INTERRUPT_STATUS), 2);
  assert.equal(t.line.up, true);
  t.w(m.VIRTIO_MMIO_INTERRUPT_ACK, 2);
  assert.equal(t.line.up, false);
  assert.equal(t.line.raises, 1);
  // A configuration change after DRIVER_OK sets bit 1; ConfigGeneration changes.
  await toFeaturesOk(t);
  t.w(m.VIRTIO_MMIO_STATUS, 15);
  await t.mmio.settled();
  const gen = t.r(m.VIRTIO_MMIO_CONFIG_GENERATION);
  t.device.config.update((dv) => dv.setUint8(0, 9));
  assert.equal(t.r(m.VIRTIO_MMIO_INTERRUPT_STATUS), 2);
  assert.notEqual(t.r(m.VIRTIO_MMIO_CONFIG_GENERATION), gen);
  t.w(m.VIRTIO_MMIO_STATUS, 0);
  assert.equal(t.r(m.VIRTIO_MMIO_INTERRUPT_STATUS), 0);
  assert.equal(t.line.up, false);
  await t.mmio.settled();
});

test("mmio: device configuration at 0x100 in any width", async () => {
  const t = make();
  assert.equal(t.mmio.read(0x100, 1), 1);
  assert.equal(t.mmio.read(0x101, 2), 0x0302);
  assert.equal(t.mmio.read(0x104, 4), 0x08070605);
  assert.equal(t.mmio.read(0x108, 4), 0xffffffff, "past the end of the configuration: 0xff");
  t.w(m.VIRTIO_MMIO_STATUS, 3);
  await t.mmio.settled();
  t.mmio.write(0x104, 1, 0x55);
  assert.equal(t.mmio.read(0x104, 1), 0x55);
});

test("mmio: bad accesses read 0 / are ignored, one line naming the register", () => {
  const t = make();
  const cases: [() => unknown, string][] = [
    [() => t.mmio.read(m.VIRTIO_MMIO_STATUS, 1), "Status"],
    [() => t.mmio.read(m.VIRTIO_MMIO_STATUS + 2, 2), "Status"],
    [() => t.mmio.read(m.VIRTIO_MMIO_QUEUE_SEL, 4), "QueueSel is write-only"],
    [() => t.w(m.VIRTIO_MMIO_MAGIC_VALUE, 1), "MagicValue is read-only"],
    [() => t.w(m.VIRTIO_MMIO_QUEUE_PFN, 1), "reserved register 0x40"],
    [() => t.r(0x0f0), "reserved register 0xf0"],
    [() => t.r(0x400), "outside the window"],
    [() => t.mmio.read(0, 3), "outside the window"],
    [() => t.w(m.VIRTIO_MMIO_QUEUE_READY, 2), "QueueReady 0x2"],
    [() => t.w(m.VIRTIO_MMIO_QUEUE_RESET, 1), "QueueReset"],
  ];
  for (const [access, name] of cases) {
    const n = t.logs.length;
    const v = access();
    if (typeof v === "number") assert.equal(v, 0, name);
    assert.equal(t.logs.length, n + 1, name);
    assert.ok(t.logs.at(-1)!.includes(name), `${t.logs.at(-1)} names ${name}`);
  }
  assert.equal(t.r(m.VIRTIO_MMIO_STATUS), 0);
});

test("mmio: random register accesses never throw (property)", async () => {
  for (const version of [1, 2] as const) {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            write: fc.boolean(),
            offset: fc.oneof(fc.integer({ min: 0, max: 0x210 }), fc.constantFrom(-1, 1e20, NaN)),
            width: fc.constantFrom(1, 2, 3, 4, 8),
            value: fc.oneof(fc.integer({ min: 0, max: 0xffffffff }), fc.constantFrom(-1, 2 ** 40)),
          }),
          { maxLength: 60 },
        ),
        async (accesses) => {
          const t = make(version);
          for (const a of accesses) {
            if (a.write) t.mmio.write(a.offset, a.width, a.value);
            else {
              const v = t.mmio.read(a.offset, a.width);
              assert.ok(Number.isInteger(v) && v >= 0 && v <= 0xffffffff);
            }
          }
          await t.mmio.settled();
        },
      ),
      { numRuns: 150 },
    );
  }
});

test("mmio: a driver that does not wait after Status 0 (nothing in flight) goes on at once", async () => {
  for (const version of [1, 2] as const) {
    const t = make(version);
    if (version === 2) await toFeaturesOk(t);
    else t.w(m.VIRTIO_MMIO_STATUS, 3);
    t.w(m.VIRTIO_MMIO_STATUS, version === 2 ? 15 : 7);
    await t.mmio.settled();
    t.w(m.VIRTIO_MMIO_STATUS, 0);
    assert.equal(t.r(m.VIRTIO_MMIO_STATUS), 0);
    t.w(m.VIRTIO_MMIO_STATUS, 1);
    assert.equal(t.r(m.VIRTIO_MMIO_STATUS), 1);
  }
});

test("mmio v2: QueueReady 0 on a queue that is not ready is a quiet no-op (Linux after a reset)", () => {
  const t = make();
  t.w(m.VIRTIO_MMIO_QUEUE_SEL, 0);
  t.w(m.VIRTIO_MMIO_QUEUE_READY, 0);
  assert.equal(t.r(m.VIRTIO_MMIO_QUEUE_READY), 0);
  assert.deepEqual(t.logs, []);
});

/**
 * The virtio-pci register model, register by register (VIRTIO 1.2 §4.1.2
 * identity, §4.1.4 capabilities, §4.1.4.3 common configuration, §4.1.4.4
 * notify, §4.1.4.5 ISR, §4.1.4.9 PCI_CFG window, §4.1.4.10 legacy block),
 * and a property: random register and configuration space accesses never
 * throw.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  PciHeader,
  VirtioPciCap,
  VirtioPciCommonCfg as C,
  VirtioPciLegacy as L,
} from "../../spec/virtio-pci.ts";
import { findVirtioStructures } from "../../testing/pci-driver.ts";
import { recordingLine, registerTestDevice } from "../register-test-support.ts";
import { VirtioPciTransport, type PciTransportOptions } from "./pci-transport.ts";

function make(o: Omit<PciTransportOptions, "interrupt"> = {}) {
  const { device, backend, logs } = registerTestDevice();
  const line = recordingLine();
  const pci = new VirtioPciTransport(device, { ...o, interrupt: line, log: (l) => logs.push(l) });
  const bar = pci.modern?.bar ?? 0;
  const cr = (off: number, w: number) => pci.read(bar, off, w);
  const cw = (off: number, w: number, v: number) => pci.write(bar, off, w, v);
  return { device, backend, logs, line, pci, cr, cw };
}

const cfg = (pci: VirtioPciTransport, off: number, w: number) => pci.readConfigSpace(off, w);

test("pci: identity per interface (§4.1.2)", () => {
  const modern = make().pci;
  assert.equal(cfg(modern, PciHeader.VENDOR_ID, 2), 0x1af4);
  assert.equal(cfg(modern, PciHeader.DEVICE_ID, 2), 0x1042);
  assert.equal(cfg(modern, PciHeader.REVISION_ID, 1), 1);
  assert.ok(cfg(modern, PciHeader.SUBSYSTEM_ID, 2) >= 0x40);
  assert.equal(cfg(modern, PciHeader.CLASS_BASE, 1), 0x01);
  assert.equal(cfg(modern, PciHeader.INTERRUPT_PIN, 1), 1);
  assert.equal(cfg(modern, PciHeader.STATUS, 2) & 0x10, 0x10, "capability list");
  for (const iface of ["transitional", "legacy"] as const) {
    const p = make({ interface: iface }).pci;
    assert.equal(cfg(p, PciHeader.DEVICE_ID, 2), 0x1001);
    assert.equal(cfg(p, PciHeader.REVISION_ID, 1), 0);
    assert.equal(cfg(p, PciHeader.SUBSYSTEM_ID, 2), 2);
    assert.equal(p.bars[0]!.kind, "io");
    assert.equal(p.bars[0]!.contents, "legacy");
  }
  const legacy = make({ interface: "legacy" }).pci;
  assert.equal(cfg(legacy, PciHeader.CAPABILITIES_PTR, 1), 0);
  assert.equal(cfg(legacy, PciHeader.STATUS, 2) & 0x10, 0);
  assert.equal(legacy.bars.length, 1);
});

test("pci: capability list names the modern structures (§4.1.4)", () => {
  for (const modernBar of ["memory", "io"] as const) {
    const { pci } = make({ interface: "transitional", modernBar });
    const s = findVirtioStructures(pci)!;
    const l = pci.modern!;
    assert.equal(l.bar, 1);
    assert.deepEqual(s.common, { bar: 1, offset: l.common.offset, multiplier: 0 });
    assert.deepEqual(s.notify, { bar: 1, offset: l.notify.offset, multiplier: 4 });
    assert.equal(s.isr.offset, l.isr.offset);
    assert.equal(s.device!.offset % 4, 0);
    assert.equal(l.notify.offset % 2, 0);
    // cap.length >= queue_notify_off * multiplier + 2 for every queue
    assert.ok(l.notify.length >= (2 - 1) * 4 + 2);
    const modern = pci.bars.find((b) => b.contents === "modern")!;
    assert.equal(modern.kind, modernBar);
    if (modernBar === "io") assert.ok(modern.size <= 256);
    assert.equal(modern.ioCapable, true, "the modern registers of a small device fit I/O space");
    assert.equal(pci.bars[0]!.ioCapable, true);
  }
  assert.throws(() => make({ notifyOffMultiplier: 3 }), RangeError);
});

test("pci: BAR sizing and the writable header registers", () => {
  const { pci } = make({ interface: "transitional", modernBar: "io" });
  pci.writeConfigSpace(PciHeader.BAR0, 4, 0xffffffff);
  const size0 = pci.bars[0]!.size;
  assert.equal(cfg(pci, PciHeader.BAR0, 4), (~(size0 - 1) | 1) >>> 0);
  pci.writeConfigSpace(PciHeader.BAR0, 4, 0xc001);
  assert.equal(cfg(pci, PciHeader.BAR0, 4), 0xc001);
  pci.writeConfigSpace(PciHeader.VENDOR_ID, 2, 0x1234);
  assert.equal(cfg(pci, PciHeader.VENDOR_ID, 2), 0x1af4, "read-only");
  pci.writeConfigSpace(PciHeader.INTERRUPT_LINE, 1, 11);
  assert.equal(cfg(pci, PciHeader.INTERRUPT_LINE, 1), 11);
  pci.writeConfigSpace(PciHeader.BAR0 + 12, 4, 0xffffffff);
  assert.equal(cfg(pci, PciHeader.BAR0 + 12, 4), 0, "an unused BAR stays 0");
});

test("pci common cfg: 64-bit features through the selects; VERSION_1 required; frozen after FEATURES_OK", async () => {
  const t = make();
  const word = (sel: number) => (t.cw(C.device_feature_select, 4, sel), t.cr(C.device_feature, 4));
  assert.equal(word(0), 1 << 3);
  assert.equal(word(1), 1 | (1 << 8));
  assert.equal(word(5), 0);
  t.cw(C.device_status, 1, 3);
  t.cw(C.driver_feature_select, 4, 0);
  t.cw(C.driver_feature, 4, 1 << 3);
  t.cw(C.device_status, 1, 11);
  await t.pci.settled();
  assert.equal(t.cr(C.device_status, 1) & 8, 0, "no VERSION_1: FEATURES_OK refused");
  t.cw(C.driver_feature_select, 4, 1);
  t.cw(C.driver_feature, 4, 1);
  assert.equal(t.cr(C.driver_feature, 4), 1);
  t.cw(C.device_status, 1, 11);
  await t.pci.settled();
  assert.equal(t.cr(C.device_status, 1), 11);
  t.cw(C.driver_feature, 4, 0);
  assert.equal(t.cr(C.driver_feature, 4), 1, "frozen after FEATURES_OK");
  assert.equal(t.cr(C.num_queues, 2), 2);
  assert.equal(t.cr(C.config_msix_vector, 2), 0xffff);
});

test("pci common cfg: queue registers, out-of-range select, enable, notify", async () => {
  const t = make();
  t.cw(C.queue_select, 2, 5);
  assert.equal(t.cr(C.queue_size, 2), 0);
  assert.equal(t.cr(C.queue_enable, 2), 0);
  t.cw(C.queue_select, 2, 1);
  assert.equal(t.cr(C.queue_size, 2), 8);
  assert.equal(t.cr(C.queue_notify_off, 2), 1);
  assert.equal(t.cr(C.queue_msix_vector, 2), 0xffff);
  t.cw(C.device_status, 1, 3);
  t.cw(C.driver_feature_select, 4, 1);
  t.cw(C.driver_feature, 4, 1);
  t.cw(C.device_status, 1, 11);
  await t.pci.settled();
  t.cw(C.queue_size, 2, 4);
  assert.equal(t.cr(C.queue_size, 2), 4);
  t.cw(C.queue_desc, 4, 0x1000);
  t.cw(C.queue_desc + 4, 4, 0);
  t.cw(C.queue_driver, 4, 0x1040);
  t.cw(C.queue_device, 4, 0x2000);
  assert.equal(t.cr(C.queue_driver, 4), 0x1040);
  t.cw(C.queue_enable, 2, 1);
  assert.equal(t.cr(C.queue_enable, 2), 1);
  const n = t.logs.length;
  t.cw(C.queue_size, 2, 2);
  t.cw(C.queue_desc, 4, 0x5000);
  t.cw(C.queue_enable, 2, 0);
  assert.equal(t.logs.length, n + 3, t.logs.slice(n).join("\n"));
  assert.equal(t.cr(C.queue_size, 2), 4);
  assert.equal(t.device.queueReady(1), true);
  t.cw(C.device_status, 1, 15);
  await t.pci.settled();
  const l = t.pci.modern!;
  t.cw(l.notify.offset + 1 * l.notifyOffMultiplier, 2, 1);
  assert.deepEqual(t.backend.kicks, [1]);
  t.cw(C.device_status, 1, 0);
  await t.pci.settled();
  assert.equal(t.cr(C.device_status, 1), 0);
  assert.equal(t.cr(C.queue_enable, 2), 0);
  assert.equal(t.cr(C.queue_desc, 4), 0);
});

test("pci: ISR bits, read-to-clear lowers INTx, the status register follows, Interrupt Disable masks", () => {
  const t = make();
  const isr = t.pci.modern!.isr.offset;
  t.pci.interrupts.notifyQueue();
  assert.equal(t.line.up, true);
  assert.equal(cfg(t.pci, PciHeader.STATUS, 2) & 0x8, 0x8);
  t.pci.interrupts.notifyConfig();
  assert.equal(t.cr(isr, 1), 3);
  assert.equal(t.line.up, false);
  assert.equal(t.cr(isr, 1), 0);
  assert.equal(cfg(t.pci, PciHeader.STATUS, 2) & 0x8, 0);
  t.pci.writeConfigSpace(PciHeader.COMMAND, 2, 0x400);
  t.pci.interrupts.notifyQueue();
  assert.equal(t.line.up, false, "masked");
  t.pci.writeConfigSpace(PciHeader.COMMAND, 2, 0);
  assert.equal(t.line.up, true);
});

test("pci device-specific configuration: any width; config_generation", () => {
  const t = make();
  const d = t.pci.modern!.device!.offset;
  assert.equal(t.cr(d, 4), 0x04030201);
  assert.equal(t.cr(d + 1, 2), 0x0302);
  const gen = t.cr(C.config_generation, 1);
  t.device.config.update((dv) => dv.setUint8(0, 9));
  assert.equal(t.cr(d, 1), 9);
  assert.notEqual(t.cr(C.config_generation, 1), gen);
});

test("pci legacy block: bits 0-31, queue address, fixed queue size, ISR, configuration at 20", async () => {
  const t = make({ interface: "transitional" });
  const r = (o: number, w: number) => t.pci.read(0, o, w);
  const w = (o: number, wd: number, v: number) => t.pci.write(0, o, wd, v);
  assert.equal(r(L.HOST_FEATURES, 4), 1 << 3);
  w(L.STATUS, 1, 3);
  w(L.GUEST_FEATURES, 4, 1 << 3);
  assert.equal(r(L.GUEST_FEATURES, 4), 1 << 3);
  w(L.QUEUE_SEL, 2, 1);
  assert.equal(r(L.QUEUE_NUM, 2), 8);
  w(L.QUEUE_PFN, 4, 2);
  assert.equal(r(L.QUEUE_PFN, 4), 2);
  assert.equal(t.device.queueReady(1), true);
  w(L.STATUS, 1, 7);
  await t.pci.settled();
  assert.equal(r(L.STATUS, 1), 7);
  assert.deepEqual(t.backend.activations, [1n << 3n]);
  w(L.QUEUE_NOTIFY, 2, 1);
  assert.deepEqual(t.backend.kicks, [1]);
  assert.equal(r(20, 1), 1);
  assert.equal(r(21, 2), 0x0302);
  t.pci.interrupts.notifyQueue();
  assert.equal(r(L.ISR, 1), 1);
  assert.equal(t.line.up, false);
  w(L.STATUS, 1, 0);
  await t.pci.settled();
  assert.equal(r(L.STATUS, 1), 0);
  assert.equal(r(L.QUEUE_PFN, 4), 0);
  assert.equal(t.device.legacy, false);
});

test("pci: a modern driver's FEATURES_OK shuts the legacy block out", async () => {
  const t = make({ interface: "transitional" });
  t.cw(C.device_status, 1, 3);
  t.cw(C.driver_feature_select, 4, 1);
  t.cw(C.driver_feature, 4, 1);
  t.cw(C.device_status, 1, 11);
  await t.pci.settled();
  t.pci.write(0, L.GUEST_FEATURES, 4, 0);
  t.pci.write(0, L.QUEUE_PFN, 4, 3);
  assert.equal(t.device.queueReady(0), false);
  assert.equal(t.device.legacy, false);
});

test("pci: the PCI_CFG window reaches the BAR registers (§4.1.4.9)", async () => {
  const t = make();
  let at = cfg(t.pci, PciHeader.CAPABILITIES_PTR, 1);
  while (cfg(t.pci, at + VirtioPciCap.cfg_type, 1) !== 5) at = cfg(t.pci, at + 1, 1);
  t.pci.writeConfigSpace(at + VirtioPciCap.bar, 1, 0);
  t.pci.writeConfigSpace(at + VirtioPciCap.offset, 4, C.device_status);
  t.pci.writeConfigSpace(at + VirtioPciCap.length, 4, 1);
  t.pci.writeConfigSpace(at + 16, 4, 1);
  await t.pci.settled();
  assert.equal(t.device.readStatus(), 1);
  t.pci.writeConfigSpace(at + VirtioPciCap.offset, 4, C.num_queues);
  t.pci.writeConfigSpace(at + VirtioPciCap.length, 4, 2);
  assert.equal(cfg(t.pci, at + 16, 4) & 0xffff, 2);
});

test("pci: bad accesses: all ones for nothing there, 0 / ignored otherwise, one line each", () => {
  const t = make();
  const before = t.logs.length;
  assert.equal(t.pci.read(3, 0, 4), 0xffffffff);
  assert.equal(t.pci.read(0, 0x1000, 2), 0xffff);
  assert.equal(t.pci.read(0, 0, 3), 0);
  assert.equal(t.cr(C.device_status, 4), 0);
  assert.equal(t.cr(C.queue_select + 1, 1), 0);
  t.cw(C.num_queues, 2, 7);
  t.cw(C.config_generation, 1, 7);
  t.cw(C.queue_reset, 2, 1);
  assert.equal(t.cr(0x3c, 4), 0);
  assert.equal(t.pci.readConfigSpace(0x101, 1), 0xff);
  assert.equal(t.logs.length, before + 10, t.logs.slice(before).join("\n"));
  assert.ok(t.logs.slice(before).some((l) => l.includes("device_status")));
  assert.ok(t.logs.slice(before).some((l) => l.includes("num_queues")));
  assert.equal(t.cr(C.num_queues, 2), 2);
});

test("pci: random register and configuration space accesses never throw (property)", async () => {
  for (const iface of ["modern", "transitional", "legacy"] as const) {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            kind: fc.constantFrom("bar", "config"),
            write: fc.boolean(),
            bar: fc.integer({ min: -1, max: 6 }),
            offset: fc.oneof(fc.integer({ min: 0, max: 300 }), fc.constantFrom(-4, 2 ** 60, NaN)),
            width: fc.constantFrom(1, 2, 3, 4, 8),
            value: fc.oneof(fc.integer({ min: 0, max: 0xffffffff }), fc.constantFrom(-1, 0.5)),
          }),
          { maxLength: 60 },
        ),
        async (accesses) => {
          const t = make({ interface: iface });
          for (const a of accesses) {
            if (a.kind === "config") {
              if (a.write) t.pci.writeConfigSpace(a.offset, a.width, a.value);
              else assert.ok(t.pci.readConfigSpace(a.offset, a.width) <= 0xffffffff);
            } else if (a.write) t.pci.write(a.bar, a.offset, a.width, a.value);
            else {
              const v = t.pci.read(a.bar, a.offset, a.width);
              assert.ok(Number.isInteger(v) && v >= 0 && v <= 0xffffffff);
            }
          }
          await t.pci.settled();
        },
      ),
      { numRuns: 150 },
    );
  }
});

test("pci legacy: a driver that does not wait after status 0 (nothing in flight) goes on at once", async () => {
  const t = make({ interface: "legacy" });
  t.pci.write(0, L.STATUS, 1, 3);
  t.pci.write(0, L.STATUS, 1, 7);
  await t.pci.settled();
  assert.equal(t.pci.read(0, L.STATUS, 1), 7);
  t.pci.write(0, L.STATUS, 1, 0);
  assert.equal(t.pci.read(0, L.STATUS, 1), 0);
  t.pci.write(0, L.STATUS, 1, 1);
  assert.equal(t.pci.read(0, L.STATUS, 1), 1);
  assert.equal(t.device.legacy, true);
});

/**
 * BlkDriver over the virtio-pci register model (VIRTIO 1.2 §4.1) in one
 * thread: modern (memory or I/O BAR), transitional driven by a modern or a
 * legacy driver (§4.1.4.10), and legacy only. A register-level driver model
 * finds the structures (capability list or BAR0), initializes the device
 * (§3.1.1), the BlkDriver writes, reads and flushes with data checked, the
 * device is reset with requests in flight, initialized again and used again.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { ErrorCode } from "../../errors.ts";
import { PciDriverModel, type PciPort } from "../../testing/pci-driver.ts";
import { PciHeader, VirtioPciCap, VIRTIO_PCI_CAP_PCI_CFG } from "../../spec/virtio-pci.ts";
import { VirtioPciTransport, type PciTransportOptions } from "../../transport/pci/pci-transport.ts";
import { bringUp, emulatedBlk, pattern, runScenario, sameBytes } from "./emulated-test-support.ts";

const cases: [string, Omit<PciTransportOptions, "interrupt">, boolean][] = [
  ["modern, memory BAR", {}, false],
  ["modern, I/O BAR, notify_off_multiplier 0", { modernBar: "io", notifyOffMultiplier: 0 }, false],
  ["transitional, modern driver", { interface: "transitional", modernBar: "io" }, false],
  ["transitional, legacy driver", { interface: "transitional" }, true],
  ["legacy only", { interface: "legacy" }, true],
];

for (const [name, options, legacyDriver] of cases) {
  test(`virtio-pci ${name}: blk driver I/O, reset with I/O in flight, re-init`, async () => {
    const rig = emulatedBlk();
    const pci = new VirtioPciTransport(rig.device, {
      ...options,
      interrupt: rig.line,
      log: (l) => rig.logs.push(l),
    });
    const drv = new PciDriverModel(pci, legacyDriver);
    assert.equal(drv.legacy, legacyDriver);
    const r = await runScenario(rig, drv);
    assert.equal(r.inFlightOutcomes.length, 24);
    assert.ok(
      r.inFlightOutcomes.every((o) => o === "ok" || o === ErrorCode.DEVICE_RESET),
      r.inFlightOutcomes.join(),
    );
    assert.ok(sameBytes(r.readBack, pattern(32 << 10, 2)));
    assert.ok(sameBytes(r.disk.subarray(8192, 8192 + (32 << 10)), pattern(32 << 10, 2)));
    const end = 8192 + (32 << 10);
    assert.ok(sameBytes(r.disk.subarray(end, 64 << 10), pattern(64 << 10, 1).subarray(end)));
    assert.equal(rig.device.legacy, legacyDriver);
    assert.ok(rig.line.raises > 0, "used buffer notifications raised INTx");
    assert.equal(pci.badAccesses, 0, rig.logs.join("\n"));
  });
}

/**
 * A port that reaches the BARs only through the VIRTIO_PCI_CAP_PCI_CFG window
 * (§4.1.4.9), as firmware without access to the BAR's address does.
 */
function windowPort(pci: VirtioPciTransport): PciPort {
  let cap = pci.readConfigSpace(PciHeader.CAPABILITIES_PTR, 1);
  for (let n = 0; n < 16 && pci.readConfigSpace(cap + 3, 1) !== VIRTIO_PCI_CAP_PCI_CFG; n++)
    cap = pci.readConfigSpace(cap + 1, 1);
  const select = (bar: number, offset: number, width: number): void => {
    pci.writeConfigSpace(cap + VirtioPciCap.bar, 1, bar);
    pci.writeConfigSpace(cap + VirtioPciCap.offset, 4, offset);
    pci.writeConfigSpace(cap + VirtioPciCap.length, 4, width);
  };
  const mask = (w: number) => (w === 4 ? 0xffffffff : (1 << (8 * w)) - 1);
  return {
    readConfigSpace: (o, w) => pci.readConfigSpace(o, w),
    read(bar, offset, width) {
      select(bar, offset, width);
      return (pci.readConfigSpace(cap + 16, 4) & mask(width)) >>> 0;
    },
    write(bar, offset, width, value) {
      select(bar, offset, width);
      pci.writeConfigSpace(cap + 16, 4, value);
    },
  };
}

test("virtio-pci modern through the PCI configuration access capability only: blk driver I/O, reset, re-init", async () => {
  const rig = emulatedBlk();
  const pci = new VirtioPciTransport(rig.device, {
    interrupt: rig.line,
    log: (l) => rig.logs.push(l),
  });
  const r = await runScenario(rig, new PciDriverModel(windowPort(pci)));
  assert.ok(sameBytes(r.readBack, pattern(32 << 10, 2)));
  assert.equal(pci.badAccesses, 0, rig.logs.join("\n"));
});

test(
  "virtio-pci: a capacity change raises INTx with ISR bit 1 and a new config_generation",
  { timeout: 20_000 },
  async () => {
    const rig = emulatedBlk();
    const pci = new VirtioPciTransport(rig.device, {
      interrupt: rig.line,
      log: (l) => rig.logs.push(l),
    });
    const drv = new PciDriverModel(pci);
    await bringUp(rig, drv);
    let isr = 0;
    rig.onInterrupt = () => (isr |= drv.interrupt());
    const capacity = () => new DataView(drv.readConfig(0, 8).buffer).getBigUint64(0, true);
    assert.equal(capacity(), BigInt((2 << 20) / 512));
    const gen = pci.read(0, 0x15, 1);
    // A device-side change of the configuration (what a resize does to the capacity field).
    rig.device.config.update((dv) => dv.setBigUint64(0, BigInt((4 << 20) / 512), true));
    await new Promise((resolve) => setTimeout(resolve, 1));
    assert.equal(isr & 2, 2);
    assert.equal(rig.line.up, false, "the ISR read lowered the line");
    assert.notEqual(pci.read(0, 0x15, 1), gen);
    assert.equal(capacity(), BigInt((4 << 20) / 512));
  },
);

test(
  "virtio-pci transitional: firmware drives it as legacy, then the OS as modern after a reset",
  { timeout: 20_000 },
  async () => {
    const rig = emulatedBlk();
    const pci = new VirtioPciTransport(rig.device, {
      interface: "transitional",
      modernBar: "io",
      interrupt: rig.line,
      log: (l) => rig.logs.push(l),
    });
    const firmware = await bringUp(rig, new PciDriverModel(pci, true));
    assert.equal(rig.device.legacy, true);
    const boot = new Uint8Array(4096);
    await firmware.driver.read(0, boot);
    await firmware.driver.write(0, pattern(4096, 9));
    const os = await bringUp(rig, new PciDriverModel(pci));
    assert.equal(rig.device.legacy, false);
    const back = new Uint8Array(4096);
    await os.driver.read(0, back);
    assert.ok(sameBytes(back, pattern(4096, 9)));
    assert.equal(pci.badAccesses, 0, rig.logs.join("\n"));
  },
);

test("virtio-pci modern with packed rings (§2.8, queue size 60): blk driver I/O, reset with I/O in flight, re-init", async () => {
  const rig = emulatedBlk(2 << 20, "packed");
  const pci = new VirtioPciTransport(rig.device, {
    interrupt: rig.line,
    log: (l) => rig.logs.push(l),
  });
  const r = await runScenario(rig, new PciDriverModel(pci));
  assert.ok(sameBytes(r.readBack, pattern(32 << 10, 2)));
  assert.equal(rig.device.queueSize(0), 60);
  assert.equal(pci.badAccesses, 0, rig.logs.join("\n"));
});

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
import { PciDriverModel } from "../../testing/pci-driver.ts";
import { VirtioPciTransport, type PciTransportOptions } from "../../transport/pci/pci-transport.ts";
import { emulatedBlk, pattern, runScenario, sameBytes } from "./emulated-test-support.ts";

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

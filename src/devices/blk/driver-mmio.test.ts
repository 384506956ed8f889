/**
 * BlkDriver over the virtio-mmio register model (VIRTIO 1.2 §4.2), version
 * 2 and the legacy version 1 (§4.2.4), in one thread: a register-level
 * driver model initializes the device (§3.1.1), the BlkDriver writes, reads
 * and flushes with data checked, the device is reset with requests in
 * flight, initialized again and used again.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { ErrorCode } from "../../errors.ts";
import { MmioDriverModel } from "../../testing/mmio-driver.ts";
import { VirtioMmioTransport } from "../../transport/mmio/mmio-transport.ts";
import { emulatedBlk, pattern, runScenario, sameBytes } from "./emulated-test-support.ts";

for (const version of [2, 1] as const) {
  test(`virtio-mmio v${version}: blk driver I/O, reset with I/O in flight, re-init`, async () => {
    const rig = emulatedBlk();
    const mmio = new VirtioMmioTransport(rig.device, {
      interrupt: rig.line,
      version,
      log: (l) => rig.logs.push(l),
    });
    const drv = new MmioDriverModel(mmio);
    assert.equal(drv.legacy, version === 1);
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
    assert.equal(rig.device.legacy, version === 1);
    assert.ok(rig.line.raises > 0, "used buffer notifications raised the line");
    assert.equal(mmio.badAccesses, 0, rig.logs.join("\n"));
  });
}

test("virtio-mmio v2 with packed rings (§2.8, queue size 60): blk driver I/O, reset with I/O in flight, re-init", async () => {
  const rig = emulatedBlk(2 << 20, "packed");
  const mmio = new VirtioMmioTransport(rig.device, {
    interrupt: rig.line,
    log: (l) => rig.logs.push(l),
  });
  const r = await runScenario(rig, new MmioDriverModel(mmio));
  assert.ok(sameBytes(r.readBack, pattern(32 << 10, 2)));
  assert.equal(rig.device.queueSize(0), 60);
  assert.equal(mmio.badAccesses, 0, rig.logs.join("\n"));
});

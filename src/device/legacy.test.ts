/**
 * The device framework driven by a legacy driver (VIRTIO 1.2 §4.1.4.10,
 * §4.2.4): beginLegacy, the ACKNOWLEDGE → DRIVER → DRIVER_OK order without
 * FEATURES_OK, bits 0–31, features final at the first queue write or at
 * DRIVER_OK, and everything back to modern after a reset.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { GuestMemory } from "../memory/guest-memory.ts";
import { legacyRingParts } from "../spec/virtqueue.ts";
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE as ACK,
  VIRTIO_CONFIG_S_DRIVER as DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK as DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK as FEATURES_OK,
  VIRTIO_F_VERSION_1,
  featureBit,
} from "../spec/virtio.ts";
import type { ActivationContext, VirtioDeviceBackend } from "./backend.ts";
import { planStatusWrite } from "./status.ts";
import { VirtioDevice } from "./virtio-device.ts";

class Backend implements VirtioDeviceBackend {
  readonly name = "legacy-test";
  readonly deviceId = 0x7e;
  readonly queueMaxSizes = [16];
  readonly features = featureBit(3) | featureBit(40);
  activations: bigint[] = [];
  refuse = false;
  readonly validated: bigint[] = [];
  validateFeatures(f: bigint): boolean {
    this.validated.push(f);
    return !this.refuse || f === 0n;
  }
  activate(ctx: ActivationContext): void {
    this.activations.push(ctx.features);
  }
}

function make() {
  const memory = GuestMemory.createShared([{ guestPhysAddr: 0, size: 1 << 16 }]);
  const backend = new Backend();
  const logs: string[] = [];
  const dev = new VirtioDevice(backend, { memory, log: (l) => logs.push(l) });
  return { dev, backend, logs };
}

test("status plan: a legacy driver has no FEATURES_OK step", () => {
  assert.equal(planStatusWrite(ACK | DRIVER, ACK | DRIVER | DRIVER_OK, true).kind, "advance");
  assert.equal(planStatusWrite(ACK | DRIVER, ACK | DRIVER | DRIVER_OK).kind, "ignore");
  assert.equal(planStatusWrite(ACK | DRIVER, ACK | DRIVER | FEATURES_OK, true).kind, "ignore");
});

test("legacy: features from word 0, final at the first queue write; DRIVER_OK activates", async () => {
  const { dev, backend } = make();
  assert.equal(dev.beginLegacy(), true);
  assert.equal(dev.legacy, true);
  await dev.writeStatus(ACK);
  await dev.writeStatus(ACK | DRIVER);
  // An unoffered bit (5) is dropped when the set becomes final.
  assert.equal(dev.writeDriverFeaturesWord(0, 0b101000), true);
  const parts = legacyRingParts(0x1000, 16, 4096);
  assert.equal(dev.setQueueAddresses(0, parts.descAddr, parts.availAddr, parts.usedAddr), true);
  assert.equal(dev.writeDriverFeaturesWord(0, 0), false, "features are final after queue setup");
  assert.deepEqual(backend.validated, [featureBit(3)], "the device type sees the final set then");
  assert.equal(dev.setQueueReady(0, true), true);
  await dev.writeStatus(ACK | DRIVER | DRIVER_OK);
  assert.equal(dev.readStatus(), ACK | DRIVER | DRIVER_OK);
  assert.deepEqual(backend.activations, [featureBit(3)]);
  assert.equal(dev.features & featureBit(VIRTIO_F_VERSION_1), 0n);
  // Reset ends the legacy session: the next driver is modern again.
  await dev.writeStatus(0);
  assert.equal(dev.legacy, false);
  await dev.writeStatus(ACK | DRIVER);
  dev.writeDriverFeatures(featureBit(VIRTIO_F_VERSION_1));
  await dev.writeStatus(ACK | DRIVER | FEATURES_OK);
  assert.equal(dev.readStatus() & FEATURES_OK, FEATURES_OK);
  assert.equal(dev.beginLegacy(), false, "no legacy access after a modern FEATURES_OK");
});

test("legacy: DRIVER_OK without queue writes freezes the features; a refusal leaves DRIVER_OK unset", async () => {
  const { dev, backend, logs } = make();
  backend.refuse = true;
  dev.beginLegacy();
  await dev.writeStatus(ACK | DRIVER);
  dev.writeDriverFeaturesWord(0, 0b1000);
  await dev.writeStatus(ACK | DRIVER | DRIVER_OK);
  assert.equal(dev.readStatus(), ACK | DRIVER);
  assert.deepEqual(backend.activations, []);
  assert.ok(logs.some((l) => l.includes("DRIVER_OK refused")));
});

test("modern: queue setup before FEATURES_OK is refused; legacy allows it after DRIVER", async () => {
  const { dev } = make();
  await dev.writeStatus(ACK | DRIVER);
  assert.equal(dev.setQueueSize(0, 8), false);
  dev.beginLegacy();
  assert.equal(dev.setQueueSize(0, 8), true);
});

test("legacy: bits 32-63 written before the legacy session are not acknowledged", async () => {
  const { dev } = make();
  await dev.writeStatus(ACK | DRIVER);
  dev.writeDriverFeatures(featureBit(VIRTIO_F_VERSION_1) | featureBit(40) | featureBit(3));
  assert.equal(dev.beginLegacy(), true);
  await dev.writeStatus(ACK | DRIVER | DRIVER_OK);
  assert.equal(dev.features, featureBit(3));
});

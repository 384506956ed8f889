import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { planStatusWrite } from "./status.ts";
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE as ACK,
  VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET as NEEDS_RESET,
  VIRTIO_CONFIG_S_DRIVER as DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK as DRIVER_OK,
  VIRTIO_CONFIG_S_FAILED as FAILED,
  VIRTIO_CONFIG_S_FEATURES_OK as FEATURES_OK,
} from "../spec/virtio.ts";

test("0 resets from any state", () => {
  for (const cur of [0, ACK, ACK | DRIVER | FEATURES_OK | DRIVER_OK, FAILED, NEEDS_RESET | 15]) {
    assert.deepEqual(planStatusWrite(cur, 0), { kind: "reset" });
  }
  // Only the low 8 bits count: 0x100 is a write of 0.
  assert.deepEqual(planStatusWrite(ACK, 0x100), { kind: "reset" });
});

test("the §3.1.1 order advances one step at a time, with the right flags", () => {
  assert.deepEqual(planStatusWrite(0, ACK), {
    kind: "advance",
    steps: ACK,
    addsFeaturesOk: false,
    addsDriverOk: false,
  });
  assert.deepEqual(planStatusWrite(ACK, ACK | DRIVER), {
    kind: "advance",
    steps: ACK | DRIVER,
    addsFeaturesOk: false,
    addsDriverOk: false,
  });
  assert.deepEqual(planStatusWrite(ACK | DRIVER, ACK | DRIVER | FEATURES_OK), {
    kind: "advance",
    steps: ACK | DRIVER | FEATURES_OK,
    addsFeaturesOk: true,
    addsDriverOk: false,
  });
  assert.deepEqual(planStatusWrite(ACK | DRIVER | FEATURES_OK, 15), {
    kind: "advance",
    steps: 15,
    addsFeaturesOk: false,
    addsDriverOk: true,
  });
});

test("several steps in one write are accepted", () => {
  const p = planStatusWrite(0, 15);
  assert.deepEqual(p, { kind: "advance", steps: 15, addsFeaturesOk: true, addsDriverOk: true });
});

test("skipped steps, cleared bits and writes after FAILED are ignored", () => {
  assert.equal(planStatusWrite(ACK | DRIVER, ACK | DRIVER | DRIVER_OK).kind, "ignore");
  assert.equal(planStatusWrite(0, DRIVER).kind, "ignore");
  assert.equal(planStatusWrite(ACK | DRIVER, ACK).kind, "ignore");
  assert.equal(planStatusWrite(15, ACK | DRIVER | FEATURES_OK).kind, "ignore");
  assert.equal(planStatusWrite(ACK | FAILED, ACK | DRIVER).kind, "ignore");
});

test("FAILED is OR-ed in and the rest of the write ignored", () => {
  assert.deepEqual(planStatusWrite(ACK | DRIVER, FAILED | ACK), {
    kind: "fail",
    status: ACK | DRIVER | FAILED,
  });
});

test("DEVICE_NEEDS_RESET and undefined bits in a write are ignored", () => {
  const p = planStatusWrite(ACK, ACK | DRIVER | NEEDS_RESET | 16 | 32);
  assert.deepEqual(p, {
    kind: "advance",
    steps: ACK | DRIVER,
    addsFeaturesOk: false,
    addsDriverOk: false,
  });
});

test("property: an advance never clears a bit and is always a §3.1.1 prefix", () => {
  const prefixes = [0, 1, 3, 11, 15];
  fc.assert(
    fc.property(fc.constantFrom(...prefixes), fc.integer({ min: -1, max: 0x1ff }), (cur, w) => {
      const p = planStatusWrite(cur, w);
      if (p.kind !== "advance") return;
      assert.equal(p.steps & cur, cur);
      assert.ok(prefixes.includes(p.steps));
      assert.equal(p.addsDriverOk, (p.steps & DRIVER_OK) !== 0 && (cur & DRIVER_OK) === 0);
    }),
  );
});

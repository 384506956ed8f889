import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { FeatureNegotiation } from "./features.ts";

test("offered set is split into 32-bit words; other selects read 0", () => {
  const f = new FeatureNegotiation(0x1_0000_0003n | (1n << 63n));
  assert.equal(f.deviceFeaturesWord(0), 3);
  assert.equal(f.deviceFeaturesWord(1), 0x8000_0001);
  assert.equal(f.deviceFeaturesWord(2), 0);
  assert.equal(f.deviceFeaturesWord(-1), 0);
});

test("the constructor rejects values outside 64 bits", () => {
  assert.throws(() => new FeatureNegotiation(-1n), RangeError);
  assert.throws(() => new FeatureNegotiation(1n << 64n), RangeError);
});

test("unoffered bits are kept as written, excluded from the negotiated set and make it unacceptable", () => {
  const f = new FeatureNegotiation(0b1010n);
  assert.equal(f.setDriverFeatures(0b1110n), true);
  assert.equal(f.driverFeatures, 0b1110n);
  assert.equal(f.unoffered, 0b0100n);
  assert.equal(f.negotiated, 0b1010n);
  assert.equal(f.acceptable(), false);
  f.setDriverFeatures(0b0010n);
  assert.equal(f.acceptable(), true);
  assert.equal(f.has(1), true);
  assert.equal(f.has(3), false);
  assert.equal(f.has(64), false);
});

test("32-bit writes replace one half only; bad selects are refused", () => {
  const f = new FeatureNegotiation((1n << 64n) - 1n);
  f.setDriverFeaturesWord(1, 0xdead_beef);
  f.setDriverFeaturesWord(0, 0x1234);
  assert.equal(f.driverFeatures, 0xdead_beef_0000_1234n);
  f.setDriverFeaturesWord(1, 0);
  assert.equal(f.driverFeatures, 0x1234n);
  assert.equal(f.setDriverFeaturesWord(2, 1), false);
  assert.equal(f.driverFeatures, 0x1234n);
});

test("frozen after freeze(): writes are refused until reset", () => {
  const f = new FeatureNegotiation(0xffn);
  f.setDriverFeatures(0x0fn);
  f.freeze();
  assert.equal(f.setDriverFeatures(0xf0n), false);
  assert.equal(f.setDriverFeaturesWord(0, 0xf0), false);
  assert.equal(f.negotiated, 0x0fn);
  f.reset();
  assert.equal(f.frozen, false);
  assert.equal(f.driverFeatures, 0n);
  assert.equal(f.setDriverFeatures(0xf0n), true);
});

test("property: any driver value is masked to 64 bits and negotiated ⊆ offered", () => {
  fc.assert(
    fc.property(
      fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
      fc.bigInt({ min: -(1n << 70n), max: 1n << 70n }),
      (offered, v) => {
        const f = new FeatureNegotiation(offered);
        f.setDriverFeatures(v);
        assert.ok(f.driverFeatures >= 0n && f.driverFeatures < 1n << 64n);
        assert.equal(f.negotiated & ~offered, 0n);
        assert.equal(f.acceptable(), (f.driverFeatures & ~offered) === 0n);
      },
    ),
  );
});

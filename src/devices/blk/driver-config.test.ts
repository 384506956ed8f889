/**
 * Driver-side feature selection and configuration parsing (VIRTIO 1.2
 * §5.2.3–§5.2.5), checked against the device's own config writer.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { ErrorCode, isVirtioError } from "../../errors.ts";
import * as blk from "../../spec/blk.ts";
import { BlkConfig } from "../../spec/blk.ts";
import {
  VIRTIO_F_VERSION_1,
  VIRTIO_F_RING_PACKED,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  featureBit,
  hasFeature,
} from "../../spec/virtio.ts";
import { BlkDeviceConfig } from "./config.ts";
import { BLK_DRIVER_FEATURES, parseBlkConfig, selectBlkFeatures } from "./driver-config.ts";

const bit = featureBit;

test("selectBlkFeatures: what both sides support, RO always, CONFIG_WCE only with FLUSH", () => {
  const dev = new BlkDeviceConfig({ capacityBytes: 1 << 20, readOnly: true });
  const accepted = selectBlkFeatures(dev.offeredFeatures);
  assert.equal(accepted & ~dev.offeredFeatures, 0n, "never more than offered");
  for (const b of [
    VIRTIO_F_VERSION_1,
    VIRTIO_RING_F_INDIRECT_DESC,
    VIRTIO_RING_F_EVENT_IDX,
    VIRTIO_F_RING_PACKED,
    blk.VIRTIO_BLK_F_RO,
    blk.VIRTIO_BLK_F_FLUSH,
    blk.VIRTIO_BLK_F_CONFIG_WCE,
    blk.VIRTIO_BLK_F_MQ,
    blk.VIRTIO_BLK_F_DISCARD,
    blk.VIRTIO_BLK_F_WRITE_ZEROES,
  ])
    assert.ok(hasFeature(accepted, b), `bit ${b}`);
  // GEOMETRY is not used by this driver.
  const withGeometry = new BlkDeviceConfig({
    capacityBytes: 1 << 20,
    geometry: { cylinders: 1, heads: 1, sectors: 1 },
  });
  assert.ok(
    !hasFeature(selectBlkFeatures(withGeometry.offeredFeatures), blk.VIRTIO_BLK_F_GEOMETRY),
  );
  // Excluding FLUSH drops CONFIG_WCE too.
  const noFlush = selectBlkFeatures(dev.offeredFeatures, { exclude: ["FLUSH"] });
  assert.ok(!hasFeature(noFlush, blk.VIRTIO_BLK_F_FLUSH));
  assert.ok(!hasFeature(noFlush, blk.VIRTIO_BLK_F_CONFIG_WCE));
  const excl = selectBlkFeatures(dev.offeredFeatures, { exclude: ["MQ", "RING_EVENT_IDX"] });
  assert.ok(!hasFeature(excl, blk.VIRTIO_BLK_F_MQ));
  assert.ok(!hasFeature(excl, VIRTIO_RING_F_EVENT_IDX));
  // Packed rings when offered; excluded: split ones.
  const split = selectBlkFeatures(dev.offeredFeatures, { exclude: ["RING_PACKED"] });
  assert.ok(!hasFeature(split, VIRTIO_F_RING_PACKED));
  assert.equal(split, accepted & ~bit(VIRTIO_F_RING_PACKED));
  assert.ok(
    !hasFeature(
      selectBlkFeatures(dev.offeredFeatures & ~bit(VIRTIO_F_RING_PACKED)),
      VIRTIO_F_RING_PACKED,
    ),
    "not offered, not accepted",
  );
  assert.throws(() => selectBlkFeatures(dev.offeredFeatures, { exclude: ["RO"] }), RangeError);
  assert.throws(
    () => selectBlkFeatures(dev.offeredFeatures, { exclude: ["VERSION_1"] }),
    RangeError,
  );
  assert.throws(
    () => selectBlkFeatures(dev.offeredFeatures, { exclude: ["NOPE" as "MQ"] }),
    RangeError,
  );
  assert.throws(
    () => selectBlkFeatures(dev.offeredFeatures & ~bit(VIRTIO_F_VERSION_1)),
    (e: unknown) => isVirtioError(e, ErrorCode.FEATURES_REFUSED),
  );
});

test("selectBlkFeatures: a subset of offered ∩ wanted for any offer (property)", () => {
  fc.assert(
    fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), (raw) => {
      const offered = raw | bit(VIRTIO_F_VERSION_1);
      const got = selectBlkFeatures(offered);
      assert.equal(got & ~(offered & BLK_DRIVER_FEATURES), 0n);
      if (hasFeature(offered, blk.VIRTIO_BLK_F_RO)) assert.ok(hasFeature(got, blk.VIRTIO_BLK_F_RO));
      if (hasFeature(got, blk.VIRTIO_BLK_F_CONFIG_WCE))
        assert.ok(hasFeature(got, blk.VIRTIO_BLK_F_FLUSH));
    }),
  );
});

test("parseBlkConfig reads what the device wrote", () => {
  const dev = new BlkDeviceConfig({
    capacityBytes: 64 << 20,
    logicalBlockSize: 4096,
    physicalBlockExp: 1,
    alignmentOffset: 2,
    minIoSize: 3,
    optIoSize: 16,
    segMax: 100,
    sizeMax: 65536,
    numQueues: 4,
    writeback: false,
    maxDiscardSectors: 1024,
    maxDiscardSeg: 8,
    discardSectorAlignment: 16,
    maxWriteZeroesSectors: 2048,
    maxWriteZeroesSeg: 2,
    writeZeroesMayUnmap: true,
    queueSize: 256,
  });
  const features = selectBlkFeatures(dev.offeredFeatures);
  dev.negotiate(features);
  const c = parseBlkConfig(dev.configBytes(), features);
  assert.equal(c.capacity, (64 << 20) / 512);
  assert.equal(c.capacityBytes, 64 << 20);
  assert.equal(c.blockSize, 4096);
  assert.equal(c.segMax, 100);
  assert.equal(c.sizeMax, 65536);
  assert.equal(c.numQueues, 4);
  assert.equal(c.readOnly, false);
  assert.equal(c.flush, true);
  assert.equal(c.writeback, false);
  assert.deepEqual(
    [c.physicalBlockExp, c.alignmentOffset, c.minIoSize, c.optIoSize],
    [1, 2, 3, 16],
  );
  assert.deepEqual(
    [c.discard, c.maxDiscardSectors, c.maxDiscardSeg, c.discardSectorAlignment],
    [true, 1024, 8, 16],
  );
  assert.deepEqual(
    [c.writeZeroes, c.maxWriteZeroesSectors, c.maxWriteZeroesSeg, c.writeZeroesMayUnmap],
    [true, 2048, 2, true],
  );
  assert.equal(c.features, features);
});

test("parseBlkConfig: fields of features not negotiated are ignored, defaults apply", () => {
  const bytes = new Uint8Array(blk.VIRTIO_BLK_CONFIG_SIZE).fill(0xff);
  const dv = new DataView(bytes.buffer);
  dv.setBigUint64(BlkConfig.capacity, 2048n, true);
  const c = parseBlkConfig(bytes, bit(VIRTIO_F_VERSION_1));
  assert.equal(c.capacity, 2048);
  assert.equal(c.blockSize, 512);
  assert.equal(c.sizeMax, 0xffff_ffff);
  assert.equal(c.segMax, Infinity);
  assert.equal(c.numQueues, 1);
  assert.equal(c.readOnly, false);
  assert.equal(c.flush, false);
  assert.equal(c.writeback, false, "neither CONFIG_WCE nor FLUSH: writethrough");
  assert.equal(c.discard, false);
  assert.equal(c.writeZeroes, false);
  assert.equal(c.minIoSize, 0);
  // FLUSH without CONFIG_WCE: assume a writeback cache (§5.2.5.1).
  assert.equal(
    parseBlkConfig(bytes, bit(VIRTIO_F_VERSION_1) | bit(blk.VIRTIO_BLK_F_FLUSH)).writeback,
    true,
  );
  // A short buffer reads as zeroes past its end.
  assert.equal(
    parseBlkConfig(bytes.subarray(0, 8), bit(blk.VIRTIO_BLK_F_SEG_MAX)).segMax,
    Infinity,
  );
});

test("parseBlkConfig: untrusted values are clamped or refused", () => {
  const bytes = new Uint8Array(blk.VIRTIO_BLK_CONFIG_SIZE);
  const dv = new DataView(bytes.buffer);
  const f = (...bits: number[]): bigint =>
    bits.reduce((m, b) => m | bit(b), bit(VIRTIO_F_VERSION_1));
  const bad = (e: unknown): boolean => isVirtioError(e, ErrorCode.BLK_BAD_CONFIG);
  dv.setBigUint64(BlkConfig.capacity, 1n << 50n, true);
  assert.throws(() => parseBlkConfig(bytes, f()), bad);
  dv.setBigUint64(BlkConfig.capacity, 8n, true);
  for (const size of [0, 256, 1000, 131072]) {
    dv.setUint32(BlkConfig.blk_size, size, true);
    assert.throws(
      () => parseBlkConfig(bytes, f(blk.VIRTIO_BLK_F_BLK_SIZE)),
      bad,
      `blk_size ${size}`,
    );
  }
  assert.throws(() => parseBlkConfig(bytes, f(blk.VIRTIO_BLK_F_MQ)), bad, "num_queues 0");
  dv.setUint32(BlkConfig.size_max, 7, true);
  assert.equal(parseBlkConfig(bytes, f(blk.VIRTIO_BLK_F_SIZE_MAX)).sizeMax, 512);
  const d = parseBlkConfig(bytes, f(blk.VIRTIO_BLK_F_DISCARD, blk.VIRTIO_BLK_F_WRITE_ZEROES));
  assert.equal(d.maxDiscardSectors, 0xffff_ffff, "0 = no limit");
  assert.equal(d.maxDiscardSeg, 1);
  assert.equal(d.discardSectorAlignment, 1, "0 = the block size");
  assert.equal(d.maxWriteZeroesSectors, 0xffff_ffff);
  assert.equal(d.maxWriteZeroesSeg, 1);
  assert.equal(d.writeZeroesMayUnmap, false);
});

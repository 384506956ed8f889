import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as blk from "../../spec/blk.ts";
import { BlkConfig, VIRTIO_BLK_CONFIG_SIZE } from "../../spec/blk.ts";
import {
  VIRTIO_F_VERSION_1,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  featureBit,
  hasFeature,
} from "../../spec/virtio.ts";
import { BlkDeviceConfig } from "./config.ts";

const f = featureBit;

function fields(cfg: BlkDeviceConfig) {
  const b = cfg.configBytes();
  const dv = new DataView(b.buffer);
  return {
    bytes: b,
    capacity: dv.getBigUint64(BlkConfig.capacity, true),
    size_max: dv.getUint32(BlkConfig.size_max, true),
    seg_max: dv.getUint32(BlkConfig.seg_max, true),
    cylinders: dv.getUint16(BlkConfig.geometry_cylinders, true),
    heads: dv.getUint8(BlkConfig.geometry_heads),
    sectors: dv.getUint8(BlkConfig.geometry_sectors),
    blk_size: dv.getUint32(BlkConfig.blk_size, true),
    physical_block_exp: dv.getUint8(BlkConfig.physical_block_exp),
    alignment_offset: dv.getUint8(BlkConfig.alignment_offset),
    min_io_size: dv.getUint16(BlkConfig.min_io_size, true),
    opt_io_size: dv.getUint32(BlkConfig.opt_io_size, true),
    writeback: dv.getUint8(BlkConfig.writeback),
    unused0: dv.getUint8(BlkConfig.unused0),
    num_queues: dv.getUint16(BlkConfig.num_queues, true),
    max_discard_sectors: dv.getUint32(BlkConfig.max_discard_sectors, true),
    max_discard_seg: dv.getUint32(BlkConfig.max_discard_seg, true),
    discard_sector_alignment: dv.getUint32(BlkConfig.discard_sector_alignment, true),
    max_write_zeroes_sectors: dv.getUint32(BlkConfig.max_write_zeroes_sectors, true),
    max_write_zeroes_seg: dv.getUint32(BlkConfig.max_write_zeroes_seg, true),
    write_zeroes_may_unmap: dv.getUint8(BlkConfig.write_zeroes_may_unmap),
    unused1: [...b.subarray(BlkConfig.unused1, BlkConfig.unused1 + 3)],
  };
}

describe("virtio_blk_config bytes", () => {
  test("every field at its spec offset, little-endian", () => {
    const cfg = new BlkDeviceConfig({
      capacityBytes: 0x123_4567_8000 * 512,
      queueSize: 128,
      logicalBlockSize: 4096,
      physicalBlockExp: 1,
      alignmentOffset: 3,
      minIoSize: 2,
      optIoSize: 64,
      sizeMax: 0x10_0000,
      numQueues: 4,
      geometry: { cylinders: 0x1234, heads: 16, sectors: 63 },
      maxDiscardSectors: 0x8000,
      maxDiscardSeg: 8,
      discardSectorAlignment: 16,
      maxWriteZeroesSectors: 0x4000,
      maxWriteZeroesSeg: 2,
      writeZeroesMayUnmap: false,
    });
    assert.equal(cfg.size, VIRTIO_BLK_CONFIG_SIZE);
    const v = fields(cfg);
    assert.equal(v.capacity, 0x123_4567_8000n);
    assert.equal(v.bytes[BlkConfig.capacity], 0x00, "little-endian low byte first");
    assert.equal(v.bytes[BlkConfig.capacity + 1], 0x80);
    assert.equal(v.size_max, 0x10_0000);
    assert.equal(v.seg_max, 126, "queue size − 2");
    assert.deepEqual([v.cylinders, v.heads, v.sectors], [0x1234, 16, 63]);
    assert.equal(v.blk_size, 4096);
    assert.deepEqual(
      [v.physical_block_exp, v.alignment_offset, v.min_io_size, v.opt_io_size],
      [1, 3, 2, 64],
    );
    assert.equal(v.writeback, 1);
    assert.equal(v.unused0, 0);
    assert.equal(v.num_queues, 4);
    assert.deepEqual(
      [v.max_discard_sectors, v.max_discard_seg, v.discard_sector_alignment],
      [0x8000, 8, 16],
    );
    assert.deepEqual(
      [v.max_write_zeroes_sectors, v.max_write_zeroes_seg, v.write_zeroes_may_unmap],
      [0x4000, 2, 0],
    );
    assert.deepEqual(v.unused1, [0, 0, 0]);
  });

  test("defaults: a real size_max, seg_max = queue size − 2, 512-byte blocks, one queue", () => {
    const v = fields(new BlkDeviceConfig({ capacityBytes: 1 << 20 }));
    assert.equal(v.capacity, 2048n);
    assert.ok(v.size_max >= 4096, "non-zero size_max (0 makes Linux clamp segments to 4 KiB)");
    assert.equal(v.seg_max, 254);
    assert.equal(v.blk_size, 512);
    assert.equal(v.num_queues, 1);
    assert.equal(v.max_discard_seg, 1);
    assert.equal(v.discard_sector_alignment, 1);
    assert.equal(v.max_discard_sectors, 0x3fffff);
    assert.equal(v.write_zeroes_may_unmap, 1);
    assert.equal(v.cylinders, 0, "no geometry unless given");
  });

  test("fields of features switched off read as zero", () => {
    const cfg = new BlkDeviceConfig({
      capacityBytes: 1 << 20,
      features: { SIZE_MAX: false, SEG_MAX: false, DISCARD: false, TOPOLOGY: false, MQ: false },
    });
    const v = fields(cfg);
    assert.equal(v.size_max, 0);
    assert.equal(v.seg_max, 0);
    assert.equal(v.max_discard_sectors, 0);
    assert.equal(v.num_queues, 0);
    assert.ok(v.max_write_zeroes_sectors > 0);
  });

  test("readConfig: any offset and length, bytes outside read as zero", () => {
    const cfg = new BlkDeviceConfig({ capacityBytes: 1 << 20 });
    const all = cfg.configBytes();
    const out = new Uint8Array(8);
    cfg.readConfig(56, out);
    assert.deepEqual([...out], [...all.subarray(56, 60), 0, 0, 0, 0]);
    for (const off of [-1, 60, 1e9, Number.NaN, 2 ** 53]) {
      const o = new Uint8Array(4).fill(9);
      cfg.readConfig(off, o);
      assert.deepEqual([...o], [0, 0, 0, 0], `offset ${off}`);
    }
  });

  test("resize changes capacity; bad sizes are RangeErrors", () => {
    const cfg = new BlkDeviceConfig({ capacityBytes: 1 << 20, logicalBlockSize: 4096 });
    cfg.resize(1 << 21);
    assert.equal(cfg.capacity, 4096);
    assert.equal(fields(cfg).capacity, 4096n);
    assert.throws(() => cfg.resize(1000), RangeError);
    assert.throws(() => cfg.resize(512), RangeError, "not a multiple of the logical block");
    assert.throws(() => cfg.resize(2 ** 53), RangeError);
  });
});

describe("features", () => {
  test("offers the set by default; RO only for read-only devices", () => {
    const cfg = new BlkDeviceConfig({ capacityBytes: 1 << 20 });
    for (const bit of [
      VIRTIO_F_VERSION_1,
      VIRTIO_RING_F_INDIRECT_DESC,
      VIRTIO_RING_F_EVENT_IDX,
      blk.VIRTIO_BLK_F_SEG_MAX,
      blk.VIRTIO_BLK_F_SIZE_MAX,
      blk.VIRTIO_BLK_F_BLK_SIZE,
      blk.VIRTIO_BLK_F_TOPOLOGY,
      blk.VIRTIO_BLK_F_FLUSH,
      blk.VIRTIO_BLK_F_CONFIG_WCE,
      blk.VIRTIO_BLK_F_MQ,
      blk.VIRTIO_BLK_F_DISCARD,
      blk.VIRTIO_BLK_F_WRITE_ZEROES,
    ])
      assert.ok(hasFeature(cfg.offeredFeatures, bit), `bit ${bit}`);
    for (const bit of [
      blk.VIRTIO_BLK_F_RO,
      blk.VIRTIO_BLK_F_GEOMETRY,
      blk.VIRTIO_BLK_F_LIFETIME,
      blk.VIRTIO_BLK_F_SECURE_ERASE,
    ])
      assert.ok(!hasFeature(cfg.offeredFeatures, bit), `bit ${bit}`);
    const ro = new BlkDeviceConfig({ capacityBytes: 1 << 20, readOnly: true });
    assert.ok(hasFeature(ro.offeredFeatures, blk.VIRTIO_BLK_F_RO));
    assert.equal(ro.readOnly, true);
  });

  test("each feature switchable; inconsistent switches are RangeErrors", () => {
    const cfg = new BlkDeviceConfig({
      capacityBytes: 1 << 20,
      features: { RING_EVENT_IDX: false, DISCARD: false },
    });
    assert.ok(!hasFeature(cfg.offeredFeatures, VIRTIO_RING_F_EVENT_IDX));
    assert.ok(!hasFeature(cfg.offeredFeatures, blk.VIRTIO_BLK_F_DISCARD));
    assert.ok(hasFeature(cfg.offeredFeatures, blk.VIRTIO_BLK_F_WRITE_ZEROES));
    const noFlush = new BlkDeviceConfig({ capacityBytes: 1 << 20, features: { FLUSH: false } });
    assert.ok(
      !hasFeature(noFlush.offeredFeatures, blk.VIRTIO_BLK_F_CONFIG_WCE),
      "WCE follows FLUSH",
    );
    const mk = (o: object) => () => new BlkDeviceConfig({ capacityBytes: 1 << 20, ...o });
    assert.throws(mk({ features: { FLUSH: false, CONFIG_WCE: true } }), RangeError);
    assert.throws(mk({ readOnly: true, features: { RO: false } }), RangeError);
    assert.throws(mk({ features: { GEOMETRY: true } }), RangeError);
    assert.throws(mk({ numQueues: 2, features: { MQ: false } }), RangeError);
    assert.throws(mk({ features: { NOPE: true } }), RangeError);
    assert.throws(mk({ queueSize: 128, segMax: 127 }), RangeError, "seg_max ≤ queue size − 2");
    assert.throws(mk({ sizeMax: 0 }), RangeError);
    assert.throws(mk({ logicalBlockSize: 768 }), RangeError);
    assert.throws(mk({ capacityBytes: 1000 }), RangeError);
    assert.throws(mk({ serial: "x".repeat(21) }), RangeError);
    assert.throws(mk({ serial: "é" }), RangeError);
    assert.throws(mk({ logicalBlockSize: 4096, discardSectorAlignment: 4 }), RangeError);
    assert.throws(mk({ logicalBlockSize: 4096, maxDiscardSectors: 12 }), RangeError);
  });

  test("negotiate keeps the offered subset; reset forgets it", () => {
    const cfg = new BlkDeviceConfig({ capacityBytes: 1 << 20, features: { DISCARD: false } });
    const got = cfg.negotiate(f(blk.VIRTIO_BLK_F_DISCARD) | f(blk.VIRTIO_BLK_F_FLUSH) | f(60));
    assert.equal(got, f(blk.VIRTIO_BLK_F_FLUSH));
    assert.equal(cfg.flushNegotiated, true);
    assert.equal(cfg.discardNegotiated, false);
    cfg.reset();
    assert.equal(cfg.negotiatedFeatures, 0n);
    assert.equal(cfg.flushNegotiated, false);
  });
});

describe("cache mode (writeback field)", () => {
  const WB = BlkConfig.writeback;
  const all = (cfg: BlkDeviceConfig) => cfg.offeredFeatures;

  test("the driver toggles writeback only when CONFIG_WCE was negotiated", () => {
    const cfg = new BlkDeviceConfig({ capacityBytes: 1 << 20 });
    cfg.negotiate(all(cfg) & ~f(blk.VIRTIO_BLK_F_CONFIG_WCE));
    assert.equal(cfg.writeConfig(WB, new Uint8Array([0])), false);
    assert.equal(cfg.writeback, true);
    cfg.negotiate(all(cfg));
    assert.equal(cfg.writeConfig(WB, new Uint8Array([0])), true);
    assert.equal(cfg.writeback, false);
    assert.equal(fields(cfg).writeback, 0);
    assert.equal(cfg.writeThrough, true);
    // A wider write covering the field; other bytes are read-only.
    const wide = cfg.configBytes().subarray(28, 40).slice();
    wide[WB - 28] = 1;
    wide[0] = 0xff;
    assert.equal(cfg.writeConfig(28, wide), true);
    assert.equal(cfg.writeback, true);
    assert.equal(fields(cfg).opt_io_size, 0, "opt_io_size unchanged");
    assert.equal(cfg.writeConfig(0, new Uint8Array(8)), false, "capacity is read-only");
    assert.equal(cfg.capacity, 2048);
    assert.equal(cfg.writeConfig(-5, new Uint8Array(4)), false);
    cfg.reset();
    assert.equal(cfg.writeback, true, "reset restores the initial mode");
  });

  test("CONFIG_WCE negotiated without FLUSH → writeback initialised to 0 (§5.2.5.2 MUST)", () => {
    const cfg = new BlkDeviceConfig({ capacityBytes: 1 << 20 });
    cfg.negotiate(all(cfg) & ~f(blk.VIRTIO_BLK_F_FLUSH));
    assert.equal(cfg.writeback, false);
    assert.equal(fields(cfg).writeback, 0);
    assert.equal(cfg.writeThrough, true);
  });

  test("writeThrough follows §5.2.6.2: stable on completion unless FLUSH lets the driver flush", () => {
    const cfg = new BlkDeviceConfig({ capacityBytes: 1 << 20 });
    const wce = f(blk.VIRTIO_BLK_F_CONFIG_WCE);
    const flush = f(blk.VIRTIO_BLK_F_FLUSH);
    cfg.negotiate(0n);
    assert.equal(cfg.writeThrough, true, "neither negotiated");
    cfg.negotiate(flush);
    assert.equal(cfg.writeThrough, false, "FLUSH without CONFIG_WCE: writeback cache");
    cfg.negotiate(flush | wce);
    assert.equal(cfg.writeThrough, false, "writeback = 1");
    const wt = new BlkDeviceConfig({ capacityBytes: 1 << 20, writeback: false });
    wt.negotiate(flush | wce);
    assert.equal(wt.writeThrough, true, "writeback = 0");
  });
});

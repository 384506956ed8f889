import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { ErrorCode, isVirtioError } from "../../errors.ts";
import { GuestMemory } from "../../memory/guest-memory.ts";
import { DescriptorChain } from "../../ring/chain.ts";
import * as blk from "../../spec/blk.ts";
import { BlkDeviceConfig } from "./config.ts";
import { BLK_STATUS_PENDING, BlkRequest, parseBlkRequest } from "./request.ts";

const MEM = 1 << 16;

function policy(readOnly: boolean, blockSize: number): BlkDeviceConfig {
  const cfg = new BlkDeviceConfig({
    capacityBytes: 1 << 20,
    readOnly,
    logicalBlockSize: blockSize,
    maxDiscardSeg: 4,
    maxWriteZeroesSeg: 4,
    maxDiscardSectors: 64,
    maxWriteZeroesSectors: 64,
  });
  cfg.negotiate(cfg.offeredFeatures);
  return cfg;
}

const headerArb = fc.record({
  type: fc.oneof(
    fc.constantFrom(0, 1, 4, 8, 10, 11, 13, 14, 0x80000000, 0x80000001),
    fc.nat(0xffffffff),
  ),
  sector: fc.oneof(fc.bigInt(0n, 4096n), fc.bigInt(0n, 2n ** 64n - 1n)),
});

const segArb = fc.record({ len: fc.integer({ min: 0, max: 3000 }), writable: fc.boolean() });

test("parsing any chain either breaks the device (missing headers) or yields a safe request", () => {
  fc.assert(
    fc.property(
      headerArb,
      fc.array(segArb, { maxLength: 8 }),
      fc.array(
        fc.record({ sector: fc.bigInt(0n, 2n ** 64n - 1n), num: fc.nat(), flags: fc.nat() }),
        {
          maxLength: 6,
        },
      ),
      fc.boolean(),
      fc.constantFrom(512, 4096),
      (hdr, segs, dwz, readOnly, bs) => {
        const mem = GuestMemory.createShared([{ guestPhysAddr: 0, size: MEM }]);
        // Readable stream: header, then segment records (as DISCARD/WZ would carry).
        const stream = new Uint8Array(16 + 16 * dwz.length);
        const dv = new DataView(stream.buffer);
        dv.setUint32(0, hdr.type, true);
        dv.setBigUint64(8, hdr.sector, true);
        dwz.forEach((s, i) => {
          dv.setBigUint64(16 + 16 * i, s.sector, true);
          dv.setUint32(24 + 16 * i, s.num >>> 0, true);
          dv.setUint32(28 + 16 * i, s.flags >>> 0, true);
        });
        mem.write(0, stream);
        const chain = new DescriptorChain(mem);
        chain.reset(0);
        // Readable segments first (the ring guarantees it), cut from the stream region.
        const sorted = [...segs].sort((a, b) => Number(a.writable) - Number(b.writable));
        let rd = 0;
        let wr = 0x8000;
        for (const s of sorted) {
          if (s.writable) {
            chain.pushSegment(wr, s.len, true);
            wr += s.len;
          } else {
            chain.pushSegment(rd, s.len, false);
            rd += s.len;
          }
        }
        const p = policy(readOnly, bs);
        const req = new BlkRequest();
        try {
          parseBlkRequest(chain, p, req);
        } catch (e) {
          assert.ok(isVirtioError(e, ErrorCode.BLK_MISSING_HEADERS), String(e));
          assert.ok(chain.readableBytes < 16 || chain.writableBytes === 0);
          return;
        }
        assert.ok(chain.readableBytes >= 16 && chain.writableBytes >= 1);
        assert.equal(req.statusOffset, chain.writableBytes - 1);
        assert.equal(req.type, (hdr.type & 0x7fffffff) >>> 0);
        if (req.status !== BLK_STATUS_PENDING) {
          assert.ok(
            [blk.VIRTIO_BLK_S_IOERR, blk.VIRTIO_BLK_S_UNSUPP].includes(req.status),
            `status ${req.status}`,
          );
          assert.notEqual(req.reason, "");
          return;
        }
        const cap = p.capacity * 512;
        switch (req.type) {
          case blk.VIRTIO_BLK_T_IN:
          case blk.VIRTIO_BLK_T_OUT:
            assert.ok(!(readOnly && req.type === blk.VIRTIO_BLK_T_OUT));
            assert.equal(req.length % bs, 0);
            assert.equal(req.offset % bs, 0);
            assert.ok(req.offset + req.length <= cap);
            assert.equal(BigInt(req.offset), hdr.sector * 512n);
            break;
          case blk.VIRTIO_BLK_T_DISCARD:
          case blk.VIRTIO_BLK_T_WRITE_ZEROES:
            assert.ok(!readOnly);
            assert.ok(req.segCount <= 4);
            for (let i = 0; i < req.segCount; i++) {
              assert.ok(req.segOffset[i]! + req.segLength[i]! <= cap);
              assert.ok(req.segLength[i]! <= 64 * 512);
              assert.equal(req.segOffset[i]! % bs, 0);
            }
            break;
          case blk.VIRTIO_BLK_T_GET_ID:
            assert.equal(req.length, Math.min(20, chain.writableBytes - 1));
            break;
          case blk.VIRTIO_BLK_T_FLUSH:
            break;
          default:
            assert.fail(`type ${req.type} should not be pending`);
        }
      },
    ),
    { numRuns: 3000 },
  );
});

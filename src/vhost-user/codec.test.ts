import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { isVirtioError, ErrorCode } from "../errors.ts";
import {
  VhostUserRequest as R,
  VHOST_USER_HDR_SIZE,
  VHOST_USER_INFLIGHT_SIZE,
} from "../spec/vhost-user.ts";
import {
  decodeConfig,
  decodeHeader,
  decodeInflight,
  decodeLog,
  decodeMemoryTable,
  decodeSingleMemRegion,
  decodeU64,
  decodeVringAddr,
  decodeVringFile,
  decodeVringState,
  encodeConfig,
  encodeHeader,
  encodeInflight,
  encodeLog,
  encodeMemoryTable,
  encodeReply,
  encodeSingleMemRegion,
  encodeU64,
  encodeVringAddr,
  encodeVringFile,
  encodeVringState,
} from "./codec.ts";

const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const u64 = fc.bigInt({ min: 0n, max: 0xffff_ffff_ffff_ffffn });
const region = fc.record({
  guestPhysAddr: u64,
  memorySize: u64,
  userspaceAddr: u64,
  mmapOffset: u64,
});
/** fast-check records have a null prototype; compare plain copies. */
const plain = <T extends object>(o: T): T => ({ ...o });
const isProtocol = (e: unknown) => isVirtioError(e, ErrorCode.VHOST_USER_PROTOCOL);

describe("codec: decode ∘ encode = id", () => {
  test("header", () => {
    fc.assert(
      fc.property(fc.record({ request: u32, flags: u32, size: u32 }), (h) => {
        assert.deepEqual(decodeHeader(encodeHeader(h)), plain(h));
      }),
    );
  });
  test("u64", () => {
    fc.assert(fc.property(u64, (v) => assert.equal(decodeU64(encodeU64(v)), v)));
  });
  test("vring state", () => {
    fc.assert(
      fc.property(fc.record({ index: u32, num: u32 }), (s) =>
        assert.deepEqual(decodeVringState(encodeVringState(s)), plain(s)),
      ),
    );
  });
  test("vring address", () => {
    const addr = fc.record({ index: u32, flags: u32, desc: u64, used: u64, avail: u64, log: u64 });
    fc.assert(
      fc.property(addr, (a) => assert.deepEqual(decodeVringAddr(encodeVringAddr(a)), plain(a))),
    );
  });
  test("vring file", () => {
    const file = fc.record({ index: fc.integer({ min: 0, max: 255 }), noFd: fc.boolean() });
    fc.assert(
      fc.property(file, (f) => assert.deepEqual(decodeVringFile(encodeVringFile(f)), plain(f))),
    );
  });
  test("memory table with 1..8 regions", () => {
    fc.assert(
      fc.property(fc.array(region, { minLength: 1, maxLength: 8 }), (rs) => {
        const bytes = encodeMemoryTable(rs);
        assert.equal(bytes.byteLength, 8 + 32 * rs.length);
        assert.deepEqual(decodeMemoryTable(bytes), rs.map(plain));
      }),
    );
  });
  test("single memory region", () => {
    fc.assert(
      fc.property(region, (r) =>
        assert.deepEqual(decodeSingleMemRegion(encodeSingleMemRegion(r)), plain(r)),
      ),
    );
  });
  test("log", () => {
    fc.assert(
      fc.property(fc.record({ mmapSize: u64, mmapOffset: u64 }), (l) =>
        assert.deepEqual(decodeLog(encodeLog(l)), plain(l)),
      ),
    );
  });
  test("config with 0..256 bytes", () => {
    const cfg = fc.record({
      offset: u32,
      flags: u32,
      data: fc.uint8Array({ minLength: 0, maxLength: 256 }),
    });
    fc.assert(fc.property(cfg, (c) => assert.deepEqual(decodeConfig(encodeConfig(c)), plain(c))));
  });
  test("inflight", () => {
    const d = fc.record({ mmapSize: u64, mmapOffset: u64, numQueues: u16, queueSize: u16 });
    fc.assert(fc.property(d, (x) => assert.deepEqual(decodeInflight(encodeInflight(x)), plain(x))));
  });
});

describe("codec: wire bytes", () => {
  test("a reply has flags exactly 0x5, the request id and the payload size", () => {
    const bytes = encodeReply(R.GET_FEATURES, encodeU64(0x1_7500_7e46n));
    assert.equal(bytes.byteLength, VHOST_USER_HDR_SIZE + 8);
    assert.deepEqual(decodeHeader(bytes), { request: 1, flags: 0x5, size: 8 });
    assert.deepEqual([...bytes.subarray(12)], [0x46, 0x7e, 0x00, 0x75, 0x01, 0x00, 0x00, 0x00]);
  });
  test("vring address fields are in the order desc, used, avail, log", () => {
    const bytes = encodeVringAddr({
      index: 1,
      flags: 0,
      desc: 0x10n,
      used: 0x20n,
      avail: 0x30n,
      log: 0x40n,
    });
    const dv = new DataView(bytes.buffer);
    assert.deepEqual(
      [8, 16, 24, 32].map((o) => dv.getBigUint64(o, true)),
      [0x10n, 0x20n, 0x30n, 0x40n],
    );
  });
  test("vring file: bits 0-7 index, bit 8 no-fd", () => {
    assert.deepEqual(decodeVringFile(encodeU64(0x105n)), { index: 5, noFd: true });
    assert.deepEqual(decodeVringFile(encodeU64(0x01n)), { index: 1, noFd: false });
  });
  test("inflight is 24 bytes (QEMU's unpacked struct)", () => {
    assert.equal(
      encodeInflight({ mmapSize: 4224n, mmapOffset: 0n, numQueues: 2, queueSize: 128 }).byteLength,
      VHOST_USER_INFLIGHT_SIZE,
    );
  });
});

describe("codec: malformed payloads are protocol errors", () => {
  test("wrong fixed sizes", () => {
    assert.throws(() => decodeU64(new Uint8Array(7)), isProtocol);
    assert.throws(() => decodeVringState(new Uint8Array(9)), isProtocol);
    assert.throws(() => decodeVringAddr(new Uint8Array(32)), isProtocol);
    assert.throws(() => decodeSingleMemRegion(new Uint8Array(32)), isProtocol);
    assert.throws(() => decodeInflight(new Uint8Array(20)), isProtocol);
  });
  test("vring file with bits above 8", () => {
    assert.throws(() => decodeVringFile(encodeU64(0x200n)), isProtocol);
  });
  test("memory table with 0, 9 or a mismatched number of regions", () => {
    const t = encodeMemoryTable([
      { guestPhysAddr: 0n, memorySize: 1n, userspaceAddr: 0n, mmapOffset: 0n },
    ]);
    const zero = t.slice(0, 8);
    new DataView(zero.buffer).setUint32(0, 0, true);
    assert.throws(() => decodeMemoryTable(zero), isProtocol);
    const nine = new Uint8Array(8 + 32 * 9);
    new DataView(nine.buffer).setUint32(0, 9, true);
    assert.throws(() => decodeMemoryTable(nine), isProtocol);
    const two = t.slice();
    new DataView(two.buffer).setUint32(0, 2, true);
    assert.throws(() => decodeMemoryTable(two), isProtocol);
    assert.throws(() => decodeMemoryTable(new Uint8Array(4)), isProtocol);
  });
  test("config larger than 256 bytes or not matching its size", () => {
    const big = new Uint8Array(12 + 257);
    new DataView(big.buffer).setUint32(4, 257, true);
    assert.throws(() => decodeConfig(big), isProtocol);
    const short = encodeConfig({ offset: 0, flags: 0, data: new Uint8Array(4) }).subarray(0, 15);
    assert.throws(() => decodeConfig(short), isProtocol);
  });
  test("encoders refuse values that do not fit (API misuse)", () => {
    assert.throws(() => encodeHeader({ request: -1, flags: 0, size: 0 }), RangeError);
    assert.throws(() => encodeU64(1n << 64n), RangeError);
    assert.throws(() => encodeMemoryTable([]), RangeError);
    assert.throws(() => encodeVringFile({ index: 256, noFd: false }), RangeError);
    assert.throws(
      () => encodeConfig({ offset: 0, flags: 0, data: new Uint8Array(257) }),
      RangeError,
    );
  });
});

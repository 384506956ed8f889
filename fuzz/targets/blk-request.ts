/**
 * Fuzz target: the virtio-blk request parser (src/devices/blk/request.ts).
 *
 * Feeds: device settings (read-only, 512 or 4096-byte blocks), a chain of up
 * to 8 segments (lengths and readable/writable from the input, laid out in
 * guest memory, readable first as the ring guarantees), and the bytes of
 * the readable part: the request header, then whatever the request type
 * reads (DISCARD / WRITE_ZEROES segments, data).
 *
 * Failure: an exception other than VirtioError `BLK_MISSING_HEADERS` (the
 * documented "nowhere to put a status" case); a status other than pending,
 * OK, IOERR or UNSUPP; a pending read or write beyond the capacity or larger
 * than the chain's data part; more DISCARD / WRITE_ZEROES segments than the
 * device allows, or one beyond the capacity.
 *
 * @module
 */
import { ErrorCode, type ErrorCodeValue } from "../../src/errors.ts";
import { GuestMemory } from "../../src/memory/guest-memory.ts";
import { DescriptorChain } from "../../src/ring/chain.ts";
import {
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
} from "../../src/spec/blk.ts";
import { BlkDeviceConfig } from "../../src/devices/blk/config.ts";
import { BLK_STATUS_PENDING, BlkRequest, parseBlkRequest } from "../../src/devices/blk/request.ts";
import { FuzzFailure, allowOnly, expect } from "../lib/check.ts";
import { FuzzInput } from "../lib/input.ts";

const MEM = 1 << 15;
const memory = new GuestMemory([{ guestPhysAddr: 0, size: MEM, buffer: new ArrayBuffer(MEM) }]);
const MISSING: ReadonlySet<ErrorCodeValue> = new Set([ErrorCode.BLK_MISSING_HEADERS]);
const configs = new Map<number, BlkDeviceConfig>();

function configFor(bits: number): BlkDeviceConfig {
  let cfg = configs.get(bits);
  if (cfg === undefined) {
    cfg = new BlkDeviceConfig({
      capacityBytes: 1 << 20,
      readOnly: (bits & 1) !== 0,
      logicalBlockSize: (bits & 2) !== 0 ? 4096 : 512,
      maxDiscardSeg: 4,
      maxWriteZeroesSeg: 4,
      maxDiscardSectors: 64,
      maxWriteZeroesSectors: 64,
    });
    cfg.negotiate(cfg.offeredFeatures);
    configs.set(bits, cfg);
  }
  return cfg;
}

/** Runs one input. */
export function fuzz(data: Uint8Array): void {
  const input = new FuzzInput(data);
  const cfg = configFor(input.u8() & 3);
  const segs = Array.from({ length: 1 + input.below(8) }, () => ({
    len: input.u16() % 3000,
    writable: input.bool(),
  }));
  segs.sort((a, b) => Number(a.writable) - Number(b.writable));
  const chain = new DescriptorChain(memory);
  chain.reset(0);
  let addr = 0;
  for (const s of segs) {
    chain.pushSegment(addr, s.len, s.writable);
    addr += s.len;
  }
  memory.fill(0, MEM);
  memory.write(0, input.bytes(chain.readableBytes));
  const req = new BlkRequest();
  try {
    parseBlkRequest(chain, cfg, req);
  } catch (e) {
    if (e instanceof FuzzFailure) throw e;
    allowOnly(e, MISSING);
    return;
  }
  const s = req.status;
  expect(
    s === BLK_STATUS_PENDING ||
      s === VIRTIO_BLK_S_OK ||
      s === VIRTIO_BLK_S_IOERR ||
      s === VIRTIO_BLK_S_UNSUPP,
    `status ${s}`,
  );
  if (s !== BLK_STATUS_PENDING) return;
  const diskBytes = cfg.capacity * 512;
  if (req.type === VIRTIO_BLK_T_IN || req.type === VIRTIO_BLK_T_OUT) {
    expect(
      req.offset + req.length <= diskBytes,
      `I/O [${req.offset}, +${req.length}) past the disk`,
    );
    const room = req.type === VIRTIO_BLK_T_IN ? chain.writableBytes - 1 : chain.readableBytes - 16;
    expect(req.length <= room, `I/O of ${req.length} bytes, the chain holds ${room}`);
  }
  expect(req.segCount <= 4, `${req.segCount} segments, at most 4`);
  for (let i = 0; i < req.segCount; i++) {
    const end = req.segOffset[i]! + req.segLength[i]!;
    expect(end <= diskBytes, `segment ${i} ends at ${end}, past the disk`);
  }
}

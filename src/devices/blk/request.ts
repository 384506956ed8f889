/**
 * Parse a virtio-blk request out of a descriptor chain. VIRTIO 1.2 §5.2.6
 * (Device Operation) and docs/conformance.md "virtio-blk requests".
 *
 * Parsing is pure: it reads the device-readable part of the chain through a
 * {@link ChainReader} and decides, without touching guest memory or the
 * backing store, either a final status (UNSUPP / IOERR) or what to execute.
 *
 * Request shape: device-readable part = 16-byte header (`le32 type, le32
 * reserved, le64 sector`, may span descriptors), then OUT data or DISCARD /
 * WRITE_ZEROES segments; device-writable part = IN data or the GET_ID buffer,
 * then the status byte, which is the last writable byte.
 *
 * Sectors are u64 in the protocol. They are held as doubles: every value that
 * can pass the capacity check is below 2^53 (capacity × 512 is a safe
 * integer), and every larger value, even rounded, still compares above the
 * capacity, so the range checks are exact without bigint.
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../../errors.ts";
import type { ChainReader, ChainWriter, DescriptorChain } from "../../ring/chain.ts";
import {
  VIRTIO_BLK_DWZ_SEG_SIZE,
  VIRTIO_BLK_ID_BYTES,
  VIRTIO_BLK_REQ_HDR_SIZE,
  VIRTIO_BLK_SECTOR_SIZE,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_BARRIER,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
} from "../../spec/blk.ts";

/**
 * What the parser needs to know about the device: its current geometry and
 * limits and the negotiated features. {@link BlkDeviceConfig} implements it.
 */
export interface BlkRequestPolicy {
  /** Current capacity in 512-byte sectors (< 2^44, so capacity × 512 is a safe integer). */
  readonly capacity: number;
  /** Logical block size / 512: IN/OUT and segments must be aligned to it (a power of two). */
  readonly blockSectors: number;
  /** VIRTIO_BLK_F_RO offered: every write-type request fails. */
  readonly readOnly: boolean;
  /** VIRTIO_BLK_F_FLUSH negotiated. */
  readonly flushNegotiated: boolean;
  /** VIRTIO_BLK_F_DISCARD negotiated. */
  readonly discardNegotiated: boolean;
  /** VIRTIO_BLK_F_WRITE_ZEROES negotiated. */
  readonly writeZeroesNegotiated: boolean;
  readonly maxDiscardSectors: number;
  readonly maxDiscardSeg: number;
  /** In 512-byte sectors; a multiple of {@link blockSectors}. */
  readonly discardSectorAlignment: number;
  readonly maxWriteZeroesSectors: number;
  readonly maxWriteZeroesSeg: number;
  /** The device ID for GET_ID: exactly 20 bytes, NUL-padded. */
  readonly id: Uint8Array;
}

/** {@link BlkRequest.status} while the request still has to be executed. */
export const BLK_STATUS_PENDING = -1;

/**
 * One request as parsed from a chain. Objects are reused from a pool (one
 * per in-flight slot): {@link parseBlkRequest} overwrites every field.
 */
export class BlkRequest {
  /** The chain this request came from; valid until it is completed with `addUsed`. */
  chain: DescriptorChain | null = null;
  /** Cursor over the device-readable part, positioned after what was parsed. */
  reader: ChainReader | null = null;
  /** Cursor over the device-writable part (data, then status). */
  writer: ChainWriter | null = null;
  /** Request type with the legacy BARRIER bit masked off. */
  type = 0;
  /** Header `sector` (exact whenever it is within capacity). */
  sector = 0;
  /** Final status, or {@link BLK_STATUS_PENDING} when the request must be executed. */
  status = BLK_STATUS_PENDING;
  /** Why the parser decided a non-OK status (a static string, for logs), else "". */
  reason = "";
  /** IN/OUT: byte offset on the disk. */
  offset = 0;
  /** IN/OUT: data bytes; GET_ID: bytes of the ID to write. */
  length = 0;
  /** Scatter-gather views of the IN/OUT data (filled when the request is submitted). */
  readonly iov: Uint8Array[] = [];
  /** DISCARD / WRITE_ZEROES: number of validated segments. */
  segCount = 0;
  /** Byte offset of each segment. */
  readonly segOffset: number[] = [];
  /** Byte length of each segment. */
  readonly segLength: number[] = [];
  /** WRITE_ZEROES: the segment's UNMAP flag. */
  readonly segUnmap: boolean[] = [];
  /** Bytes the device wrote into the writable part, status included (the used `len`). */
  usedLen = 0;
  /** Backing-store error that turned this request into IOERR, for logs. */
  error: unknown = undefined;
  /** Watchdog tick at which the request was submitted to the backing store. */
  submittedTick = 0;
  /** Completed with IOERR before its backing I/O settled (shutdown): the late result is dropped. */
  aborted = false;
  /** The watchdog has logged this request as stalled. */
  stallLogged = false;

  /** Byte offset of the status byte in the writable part. */
  get statusOffset(): number {
    return this.chain === null ? 0 : this.chain.writableBytes - 1;
  }

  /** Drops references into guest memory once the request is completed. */
  release(): void {
    this.chain = null;
    this.reader = null;
    this.writer = null;
    this.iov.length = 0;
    this.error = undefined;
    this.aborted = false;
    this.stallLogged = false;
  }
}

// Scratch for the header and for one segment: parsing is synchronous, so one buffer serves every request.
const scratch = new Uint8Array(VIRTIO_BLK_REQ_HDR_SIZE);
const scratchView = new DataView(scratch.buffer);
const TWO_32 = 0x1_0000_0000;

/** Reads a le64 from the scratch buffer as a double (exact below 2^53, larger values stay larger). */
function scratchU64(off: number): number {
  return scratchView.getUint32(off, true) + scratchView.getUint32(off + 4, true) * TWO_32;
}

function finish(req: BlkRequest, status: number, reason: string): void {
  req.status = status;
  req.reason = reason;
}

/**
 * True if `nSectors` sectors from `sector` lie inside the device and are
 * aligned to `align` sectors. Written so that a rounded huge `sector` fails.
 */
function rangeOk(sector: number, nSectors: number, capacity: number, align: number): boolean {
  if (!(sector <= capacity && nSectors <= capacity - sector)) return false;
  return sector % align === 0 && nSectors % align === 0;
}

/** Validates IN/OUT data of `bytes` at the header sector; sets offset/length or a final IOERR. */
function dataRange(req: BlkRequest, bytes: number, p: BlkRequestPolicy): void {
  const blockBytes = p.blockSectors * VIRTIO_BLK_SECTOR_SIZE;
  // §5.2.6.1: the driver MUST use data in multiples of 512 bytes; the logical block size is stricter.
  if (bytes % blockBytes !== 0) return finish(req, VIRTIO_BLK_S_IOERR, "data length");
  if (!rangeOk(req.sector, bytes / VIRTIO_BLK_SECTOR_SIZE, p.capacity, p.blockSectors))
    return finish(req, VIRTIO_BLK_S_IOERR, "sector range");
  req.offset = req.sector * VIRTIO_BLK_SECTOR_SIZE;
  req.length = bytes;
}

type Handler = (req: BlkRequest, chain: DescriptorChain, p: BlkRequestPolicy) => void;

const handleIn: Handler = (req, chain, p) => {
  if (chain.readableBytes !== VIRTIO_BLK_REQ_HDR_SIZE)
    return finish(req, VIRTIO_BLK_S_IOERR, "IN data is device-readable");
  dataRange(req, chain.writableBytes - 1, p);
};

const handleOut: Handler = (req, chain, p) => {
  // §5.2.6.2: "A device MUST set the status byte to VIRTIO_BLK_S_IOERR for a write request if the
  // VIRTIO_BLK_F_RO feature if offered, and MUST NOT write any data."
  if (p.readOnly) return finish(req, VIRTIO_BLK_S_IOERR, "read-only device");
  if (chain.writableBytes !== 1)
    return finish(req, VIRTIO_BLK_S_IOERR, "OUT data is device-writable");
  dataRange(req, chain.readableBytes - VIRTIO_BLK_REQ_HDR_SIZE, p);
};

const handleFlush: Handler = (req, _chain, p) => {
  // The sector of a FLUSH is ignored (docs/conformance.md: accepted whatever it is).
  if (!p.flushNegotiated) finish(req, VIRTIO_BLK_S_UNSUPP, "FLUSH not negotiated");
};

const handleGetId: Handler = (req, chain) => {
  req.length = Math.min(chain.writableBytes - 1, VIRTIO_BLK_ID_BYTES);
};

/** DISCARD / WRITE_ZEROES: reads and validates every segment before anything is executed. */
function handleSegments(req: BlkRequest, chain: DescriptorChain, p: BlkRequestPolicy): void {
  const discard = req.type === VIRTIO_BLK_T_DISCARD;
  if (!(discard ? p.discardNegotiated : p.writeZeroesNegotiated))
    return finish(req, VIRTIO_BLK_S_UNSUPP, "feature not negotiated");
  if (p.readOnly) return finish(req, VIRTIO_BLK_S_IOERR, "read-only device");
  const payload = chain.readableBytes - VIRTIO_BLK_REQ_HDR_SIZE;
  if (payload % VIRTIO_BLK_DWZ_SEG_SIZE !== 0)
    return finish(req, VIRTIO_BLK_S_IOERR, "segment payload length");
  const count = payload / VIRTIO_BLK_DWZ_SEG_SIZE;
  const maxSeg = discard ? p.maxDiscardSeg : p.maxWriteZeroesSeg;
  if (count > maxSeg) return finish(req, VIRTIO_BLK_S_UNSUPP, "too many segments");
  const maxSectors = discard ? p.maxDiscardSectors : p.maxWriteZeroesSectors;
  const align = discard ? p.discardSectorAlignment : p.blockSectors;
  const reader = req.reader!;
  // Bounded by maxSeg (checked above).
  for (let i = 0; i < count; i++) {
    reader.read(scratch);
    const sector = scratchU64(0);
    const num = scratchView.getUint32(8, true);
    const flags = scratchView.getUint32(12, true);
    // §5.2.6.2: "The device MUST set the status byte to VIRTIO_BLK_S_UNSUPP for discard, secure
    // erase and write zeroes commands if any unknown flag is set. Furthermore, the device MUST set
    // the status byte to VIRTIO_BLK_S_UNSUPP for discard commands if the unmap flag is set."
    if ((flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0)
      return finish(req, VIRTIO_BLK_S_UNSUPP, "unknown segment flags");
    const unmap = (flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0;
    if (discard && unmap) return finish(req, VIRTIO_BLK_S_UNSUPP, "UNMAP on DISCARD");
    if (num > maxSectors) return finish(req, VIRTIO_BLK_S_IOERR, "segment too long");
    if (!rangeOk(sector, num, p.capacity, align))
      return finish(req, VIRTIO_BLK_S_IOERR, "segment range");
    req.segOffset[i] = sector * VIRTIO_BLK_SECTOR_SIZE;
    req.segLength[i] = num * VIRTIO_BLK_SECTOR_SIZE;
    req.segUnmap[i] = unmap;
  }
  req.segCount = count;
}

const unsupported: Handler = (req) => finish(req, VIRTIO_BLK_S_UNSUPP, "unsupported type");

/** Request type → handler. Types not listed (GET_LIFETIME, SECURE_ERASE, …) are UNSUPP. */
const HANDLERS: readonly Handler[] = (() => {
  const t: Handler[] = [];
  t[VIRTIO_BLK_T_IN] = handleIn;
  t[VIRTIO_BLK_T_OUT] = handleOut;
  t[VIRTIO_BLK_T_FLUSH] = handleFlush;
  t[VIRTIO_BLK_T_GET_ID] = handleGetId;
  t[VIRTIO_BLK_T_DISCARD] = handleSegments;
  t[VIRTIO_BLK_T_WRITE_ZEROES] = handleSegments;
  for (let i = 0; i < t.length; i++) t[i] ??= unsupported;
  return t;
})();

/**
 * Parses `chain` into `req` (overwriting it). On return `req.status` is either
 * a final status decided by validation or {@link BLK_STATUS_PENDING}.
 *
 * @throws VirtioError `BLK_MISSING_HEADERS` when the chain has fewer than 16
 *   device-readable bytes or no device-writable byte: there is nowhere to put
 *   a status, so the device becomes broken.
 */
export function parseBlkRequest(
  chain: DescriptorChain,
  policy: BlkRequestPolicy,
  req: BlkRequest,
): void {
  if (chain.readableBytes < VIRTIO_BLK_REQ_HDR_SIZE || chain.writableBytes < 1) {
    throw new VirtioError(
      ErrorCode.BLK_MISSING_HEADERS,
      `virtio-blk request ${chain.head} has ${chain.readableBytes} readable bytes (header needs ${VIRTIO_BLK_REQ_HDR_SIZE}) and ${chain.writableBytes} writable (status needs 1)`,
      { head: chain.head, readable: chain.readableBytes, writable: chain.writableBytes },
    );
  }
  req.chain = chain;
  req.reader = chain.reader();
  req.writer = chain.writer();
  req.iov.length = 0;
  req.error = undefined;
  req.reader.read(scratch);
  // Linux may set the legacy BARRIER bit; it is masked off (docs/conformance.md).
  req.type = (scratchView.getUint32(0, true) & ~VIRTIO_BLK_T_BARRIER) >>> 0;
  req.sector = scratchU64(8);
  req.status = BLK_STATUS_PENDING;
  req.reason = "";
  req.offset = 0;
  req.length = 0;
  req.segCount = 0;
  req.usedLen = 0;
  const handler = req.type < HANDLERS.length ? HANDLERS[req.type]! : unsupported;
  handler(req, chain, policy);
}

/**
 * Checks of the virtio-blk driver's API calls before anything is queued:
 * requests the driver refuses itself, and byte ranges, buffers and segments
 * a caller passes. VIRTIO 1.2 §5.2.6.1 ("A driver MUST NOT submit a request
 * which would cause a read or write beyond capacity"; data lengths are
 * multiples of 512), §5.2.6.2 (a read-only device answers every write with
 * IOERR).
 *
 * - Writes (OUT, DISCARD, WRITE_ZEROES) to a device that offers
 *   VIRTIO_BLK_F_RO are refused without sending (BlkIoError IOERR,
 *   `local`); DISCARD / WRITE_ZEROES without their feature likewise
 *   (UNSUPP, `local`).
 * - API misuse (unaligned or negative numbers, ranges beyond capacity, bad
 *   segments) throws RangeError / TypeError.
 * - Segments and ranges are copied after checking: later changes by the
 *   caller cannot reach the ring.
 *
 * @module
 */
import type { GuestMemory } from "../../memory/guest-memory.ts";
import {
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
} from "../../spec/blk.ts";
import type { BlkDriverConfig } from "./driver-config.ts";
import { rangeLimitsOf, type BlkDriverLimits } from "./driver-limits.ts";
import type { BlkDriverArenaMap } from "./driver-memory.ts";
import {
  nextDataPieces,
  pieceScratch,
  rangesLeft,
  type BlkRange,
  type BlkSegment,
  type PieceScratch,
} from "./driver-plan.ts";
import { readOnlyError, unsupportedError, type BlkOp } from "./driver-request.ts";

/** True for a non-negative safe integer. */
const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

/**
 * Throws the answer the device would give to a request of `type` it cannot
 * serve: IOERR for writes to a read-only device, UNSUPP for a feature that
 * was not negotiated.
 */
export function checkAllowed(type: number, cfg: BlkDriverConfig): void {
  const writes =
    type === VIRTIO_BLK_T_OUT ||
    type === VIRTIO_BLK_T_DISCARD ||
    type === VIRTIO_BLK_T_WRITE_ZEROES;
  // §5.2.6.2: the device answers IOERR to any write when VIRTIO_BLK_F_RO is offered; refused here.
  if (writes && cfg.readOnly) throw readOnlyError(type);
  if (type === VIRTIO_BLK_T_DISCARD && !cfg.discard)
    throw unsupportedError(type, "VIRTIO_BLK_F_DISCARD");
  if (type === VIRTIO_BLK_T_WRITE_ZEROES && !cfg.writeZeroes)
    throw unsupportedError(type, "VIRTIO_BLK_F_WRITE_ZEROES");
}

/** Checks an IN/OUT byte range. */
function checkData(cfg: BlkDriverConfig, offset: number, length: number): void {
  const bs = cfg.blockSize;
  if (!isCount(offset) || offset % bs !== 0)
    throw new RangeError(`offset ${offset} must be a non-negative multiple of ${bs}`);
  // §5.2.6.1 "The length of data MUST be a multiple of 512 bytes for VIRTIO_BLK_T_IN and
  // VIRTIO_BLK_T_OUT requests" (the block size is a multiple of 512).
  if (length % bs !== 0)
    throw new RangeError(`length ${length} must be a multiple of the ${bs}-byte block size`);
  // §5.2.6.1 "A driver MUST NOT submit a request which would cause a read or write beyond capacity."
  if (offset + length > cfg.capacityBytes)
    throw new RangeError(
      `[${offset}, +${length}) is beyond the capacity of ${cfg.capacityBytes} bytes`,
    );
}

/**
 * Checks the arguments of a call and fills its operation. Each method
 * returns true when there is nothing to send (the call resolves at once).
 */
export class BlkCallChecks {
  readonly #memory: GuestMemory;
  readonly #arenaStart: number;
  readonly #arenaEnd: number;
  readonly #limits: BlkDriverLimits;
  /** For the dry run of a zero-copy split (may run while a submission is in progress). */
  readonly #dryPieces: PieceScratch;

  constructor(memory: GuestMemory, arena: BlkDriverArenaMap, limits: BlkDriverLimits) {
    this.#memory = memory;
    this.#arenaStart = arena.start;
    this.#arenaEnd = arena.end;
    this.#limits = limits;
    this.#dryPieces = pieceScratch(limits.data.maxSegs);
  }

  /** The copy path: the caller's buffer. */
  copy(op: BlkOp, cfg: BlkDriverConfig, offset: number, buffer: Uint8Array): boolean {
    if (!(buffer instanceof Uint8Array)) throw new TypeError("buffer must be a Uint8Array");
    checkData(cfg, offset, buffer.length);
    op.user = buffer;
    op.offset = offset;
    op.length = buffer.length;
    return buffer.length === 0;
  }

  /** The zero-copy path: the caller's guest segments. */
  segments(
    op: BlkOp,
    cfg: BlkDriverConfig,
    offset: number,
    segments: readonly BlkSegment[],
  ): boolean {
    if (!Array.isArray(segments)) throw new TypeError("segments must be an array");
    // A validated private copy: later changes by the caller cannot reach the ring.
    const segs: BlkSegment[] = [];
    let total = 0;
    for (const s of segments as readonly unknown[]) {
      const seg = this.#segment(s);
      segs.push(seg);
      total += seg.len;
    }
    checkData(cfg, offset, total);
    this.#dryRun(segs);
    op.segs = segs;
    op.offset = offset;
    op.length = total;
    return total === 0;
  }

  /** DISCARD / WRITE_ZEROES ranges (`op.type` says which limits apply). */
  ranges(op: BlkOp, cfg: BlkDriverConfig, ranges: readonly BlkRange[]): boolean {
    if (!Array.isArray(ranges)) throw new TypeError("ranges must be an array");
    const copy: BlkRange[] = [];
    for (const r of ranges as readonly unknown[]) {
      if (typeof r !== "object" || r === null) throw new TypeError("a range must be an object");
      const { offset, length } = r as Record<string, unknown>;
      if (!isCount(offset) || !isCount(length))
        throw new RangeError("range offset and length must be non-negative safe integers");
      checkData(cfg, offset, length);
      copy.push({ offset, length });
    }
    op.ranges = copy;
    return !rangesLeft(copy, op.cur, rangeLimitsOf(this.#limits, op.type).align);
  }

  /** One zero-copy segment, checked and copied. */
  #segment(s: unknown): BlkSegment {
    if (typeof s !== "object" || s === null) throw new TypeError("a segment must be an object");
    const { addr, len } = s as Record<string, unknown>;
    if (!isCount(len) || len === 0 || len > 0xffff_ffff)
      throw new RangeError(`segment length ${String(len)} must be an integer in 1..2^32-1`);
    if (!isCount(addr) || !this.#memory.isValidRange(addr, len))
      throw new RangeError(`segment [${String(addr)}, +${len}) is not inside guest memory`);
    if (addr < this.#arenaEnd && addr + len > this.#arenaStart)
      throw new RangeError(`segment [${addr}, +${len}) overlaps the driver's arena`);
    return { addr, len };
  }

  /** Dry run of the split: every request must hold at least one block. */
  #dryRun(segs: readonly BlkSegment[]): void {
    const data = this.#limits.data;
    const cur = { index: 0, off: 0 };
    while (cur.index < segs.length) {
      if (nextDataPieces(segs, cur, data, this.#dryPieces) === 0)
        throw new RangeError(
          `segments too fragmented: ${data.maxSegs} consecutive segments (size_max ${data.sizeMax}) hold less than one ${data.blockSize}-byte block`,
        );
    }
  }
}

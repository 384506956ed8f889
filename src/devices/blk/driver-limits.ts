/**
 * The virtio-blk driver's request limits: checks of the queues it is given
 * and the largest request each kind may be, derived from the device's
 * configuration, the queues and the options. VIRTIO 1.2 §5.2.4 (`seg_max`,
 * `size_max`, `max_discard_*`, `max_write_zeroes_*`,
 * `discard_sector_alignment`), §5.2.6.1 (requests MUST NOT exceed them),
 * §2.7.5.2 (a chain is at most 2^32 − 1 bytes), §2.7.5.3 (indirect tables).
 *
 * A request has at most `seg_max` data segments, never more than the
 * queue size − 2 nor the indirect table size − 2 (header and status take
 * two descriptors), each at most `size_max` bytes, at most
 * `maxRequestBytes` in all, a whole number of blocks. DISCARD /
 * WRITE_ZEROES ranges are cut at `max_*_sectors` and grouped by
 * `max_*_seg`.
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../../errors.ts";
import {
  VIRTIO_BLK_DWZ_SEG_SIZE,
  VIRTIO_BLK_REQ_HDR_SIZE,
  VIRTIO_BLK_SECTOR_SIZE,
  VIRTIO_BLK_T_DISCARD,
} from "../../spec/blk.ts";
import type { BlkDriverConfig } from "./driver-config.ts";
import type { DataLimits, RangeLimits } from "./driver-plan.ts";
import type { DriverRing } from "../../ring/driver-ring.ts";

/** §2.7.5.2: a chain is at most 2^32 − 1 bytes; header and status take 17. */
const MAX_CHAIN_DATA = 0xffff_ffff - VIRTIO_BLK_REQ_HDR_SIZE - 1;
/** Cap on DISCARD / WRITE_ZEROES segments per request (keeps the payload and scratch small). */
const MAX_DWZ_SEGS = 1024;

/** What one request may carry, fixed when the driver is built. */
export interface BlkDriverLimits {
  /** Descriptors per indirect table; 0 when no queue uses indirect descriptors. */
  readonly indirectEntries: number;
  /** IN / OUT data part (the zero-copy path). */
  readonly data: DataLimits;
  /** Most data bytes per copy-path request (also fits the bounce pool). */
  readonly copyChunk: number;
  readonly discard: RangeLimits;
  readonly writeZeroes: RangeLimits;
}

/** The queues as the limits see them. */
export interface BlkQueueShape {
  /** The smallest queue size. */
  readonly minSize: number;
  /** Descriptors per indirect table; 0 when no queue uses indirect descriptors. */
  readonly indirectEntries: number;
}

/** Array.isArray without narrowing readonly arrays to any[]. */
function isArray(v: unknown): boolean {
  return Array.isArray(v);
}

/**
 * Checks the queues given to the driver against the device's queue count (`cfg.numQueues`).
 *
 * @throws {RangeError} no queues, more than `numQueues`, a queue smaller
 *   than 4, or indirect queues without `indirectEntries`.
 */
export function checkBlkDriverQueues(
  queues: readonly DriverRing<number>[],
  cfg: BlkDriverConfig,
  indirectEntries: number | undefined,
): BlkQueueShape {
  if (!isArray(queues) || queues.length === 0)
    throw new RangeError("a virtio-blk driver needs at least one queue");
  if (queues.length > cfg.numQueues)
    throw new RangeError(`${queues.length} queues given, the device has ${cfg.numQueues}`);
  let minSize = Infinity;
  let anyIndirect = false;
  for (const ring of queues) {
    // A request is at least header + data + status: three descriptors in one chain.
    if (ring.size < 4) throw new RangeError(`queue size ${ring.size} is below 4`);
    minSize = Math.min(minSize, ring.size);
    anyIndirect ||= ring.indirect;
  }
  const entries = indirectEntries ?? 0;
  if (anyIndirect && (!Number.isInteger(entries) || entries < 2))
    throw new RangeError("indirectEntries (the indirect tables' entriesPerChain) is required");
  return { minSize, indirectEntries: anyIndirect ? entries : 0 };
}

/**
 * Request slots of each queue: `slotsPerQueue` (default, and at most, the queue size).
 *
 * @throws {RangeError} for a `slotsPerQueue` that is not a positive integer.
 */
export function blkSlotsPerQueue(
  queues: readonly DriverRing<number>[],
  slotsPerQueue: number | undefined,
): number[] {
  const perQueue = queues.map((ring) => Math.min(slotsPerQueue ?? ring.size, ring.size));
  if (perQueue.some((n) => !Number.isInteger(n) || n < 1))
    throw new RangeError(`slotsPerQueue ${slotsPerQueue} must be a positive integer`);
  return perQueue;
}

/**
 * The limits of every request kind (see the module header).
 *
 * @throws {RangeError} for a `maxRequestBytes` below the block size, or a
 *   bounce pool that holds no block.
 * @throws {VirtioError} `BLK_BAD_CONFIG` if the device's limits allow no
 *   request of one block.
 */
export function blkDriverLimits(
  cfg: BlkDriverConfig,
  queues: BlkQueueShape,
  maxRequestBytes: number | undefined,
  bounceBytes: number,
): BlkDriverLimits {
  const bs = cfg.blockSize;
  const data = dataLimits(cfg, queues, maxRequestBytes);
  const copyChunk = floorTo(Math.min(data.maxBytes, bounceBytes), bs);
  if (copyChunk < bs)
    throw new RangeError(`the bounce pool (${bounceBytes} bytes) holds no ${bs}-byte block`);
  const segCap = Math.min(
    MAX_DWZ_SEGS,
    Math.floor(cfg.sizeMax / VIRTIO_BLK_DWZ_SEG_SIZE),
    Math.floor(bounceBytes / VIRTIO_BLK_DWZ_SEG_SIZE),
  );
  const blockSectors = bs / VIRTIO_BLK_SECTOR_SIZE;
  return {
    indirectEntries: queues.indirectEntries,
    data,
    copyChunk,
    discard: rangeLimits(
      cfg.maxDiscardSeg,
      cfg.maxDiscardSectors,
      cfg.discardSectorAlignment,
      bs,
      segCap,
    ),
    writeZeroes: rangeLimits(
      cfg.maxWriteZeroesSeg,
      cfg.maxWriteZeroesSectors,
      blockSectors,
      bs,
      segCap,
    ),
  };
}

/** The IN / OUT data limits (segments, segment size, request bytes). */
function dataLimits(
  cfg: BlkDriverConfig,
  queues: BlkQueueShape,
  maxRequestBytes: number | undefined,
): DataLimits {
  const bs = cfg.blockSize;
  let maxSegs = Math.min(cfg.segMax, queues.minSize - 2);
  if (queues.indirectEntries >= 3) maxSegs = Math.min(maxSegs, queues.indirectEntries - 2);
  const wanted = maxRequestBytes ?? 1 << 20;
  if (!Number.isSafeInteger(wanted) || wanted < bs)
    throw new RangeError(`maxRequestBytes ${wanted} must be at least the ${bs}-byte block size`);
  const maxBytes = floorTo(Math.min(wanted, maxSegs * cfg.sizeMax, MAX_CHAIN_DATA), bs);
  if (maxBytes < bs)
    throw new VirtioError(
      ErrorCode.BLK_BAD_CONFIG,
      `virtio-blk config: ${maxSegs} segments of at most ${cfg.sizeMax} bytes cannot hold one ${bs}-byte block`,
      { maxSegs, sizeMax: cfg.sizeMax, blockSize: bs },
    );
  return { maxSegs, sizeMax: cfg.sizeMax, maxBytes, blockSize: bs };
}

/** The DISCARD or WRITE_ZEROES limits, by request type. */
export function rangeLimitsOf(limits: BlkDriverLimits, type: number): RangeLimits {
  return type === VIRTIO_BLK_T_DISCARD ? limits.discard : limits.writeZeroes;
}

/** Most pieces one request of any kind carries (the size of the planning scratch). */
export function maxPieces(limits: BlkDriverLimits): number {
  return Math.max(limits.data.maxSegs, limits.discard.maxSeg, limits.writeZeroes.maxSeg, 1);
}

/** Largest multiple of `unit` ≤ v. */
function floorTo(v: number, unit: number): number {
  return Math.floor(v / unit) * unit;
}

/** DISCARD / WRITE_ZEROES limits in bytes from the config's sector numbers. */
function rangeLimits(
  maxSeg: number,
  maxSectors: number,
  alignSectors: number,
  blockSize: number,
  segCap: number,
): RangeLimits {
  const blockSectors = blockSize / VIRTIO_BLK_SECTOR_SIZE;
  let align = Math.max(alignSectors, blockSectors);
  if (align % blockSectors !== 0) align = blockSectors;
  let pieceSectors = floorTo(maxSectors, align);
  if (pieceSectors === 0) {
    // The device's maximum is below its own alignment: send aligned-to-block pieces it may refuse.
    align = blockSectors;
    pieceSectors = Math.max(blockSectors, floorTo(maxSectors, blockSectors));
  }
  return {
    // §5.2.6.1 "VIRTIO_BLK_T_DISCARD requests MUST NOT contain more than max_discard_seg" segments
    // (likewise max_write_zeroes_seg).
    maxSeg: Math.max(1, Math.min(maxSeg, segCap)),
    maxBytes: pieceSectors * VIRTIO_BLK_SECTOR_SIZE,
    align: align * VIRTIO_BLK_SECTOR_SIZE,
  };
}

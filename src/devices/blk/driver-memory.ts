/**
 * Where a virtio-blk driver's rings and buffers go in guest memory. VIRTIO
 * 1.2 §2.7 (split virtqueue parts and their alignment), §2.8 / §2.8.10.1
 * (packed virtqueue parts; "The Queue Size value does not have to be a
 * power of 2"), §2.7.5.3 / §2.8.7 (indirect descriptor tables), §5.2.6
 * (each request: a 16-byte header the device reads and a status byte it
 * writes). Rings are placed for the negotiated layout (`placeRing`).
 *
 * The driver owns one *arena* of guest memory besides the rings:
 *
 * ```
 * arena.addr → [ request slots: 32 bytes each (header 16 | status 1 | pad) ]
 *              [ pad to the bounce page size                              ]
 *              [ bounce pool: payload pages (copied data, segment tables) ]
 * ```
 *
 * Each request slot is reused for one request at a time, so submitting a
 * request allocates no guest memory. {@link mapBlkDriverArena} checks an
 * arena and maps its two parts for the driver.
 *
 * @module
 */
import type { GuestMemory, GuestSlice } from "../../memory/guest-memory.ts";
import type { IndirectArena } from "../../ring/driver-queue.ts";
import { indirectArenaBytes } from "../../ring/driver-queue.ts";
import { placeRing, type RingLayout, type RingLayoutKind } from "../../ring/ring-layout.ts";
import { BouncePool } from "./driver-bounce.ts";

/** Bytes of one request slot: header (16), status (1), padding. */
export const BLK_DRIVER_SLOT_BYTES = 32;
/** Offset of the status byte in a slot. */
export const BLK_DRIVER_SLOT_STATUS = 16;
/** Default bounce page size. */
export const BLK_DRIVER_PAGE_SIZE = 4096;

/** A window of guest memory the driver owns: `bytes` at guest-physical `addr`. */
export interface BlkDriverArena {
  readonly addr: number;
  readonly bytes: number;
}

/** The two parts of an arena (see the module header). */
export interface BlkDriverArenaParts {
  readonly slotsAddr: number;
  readonly bounceAddr: number;
  readonly bounceBytes: number;
}

const alignUp = (v: number, a: number): number => Math.ceil(v / a) * a;

/** Arena bytes for `slots` request slots and a bounce pool of `bounceBytes` (page padding included). */
export function blkDriverArenaBytes(
  slots: number,
  bounceBytes: number,
  pageSize = BLK_DRIVER_PAGE_SIZE,
): number {
  return slots * BLK_DRIVER_SLOT_BYTES + pageSize + bounceBytes;
}

/**
 * Splits an arena into the slot area (`slots` slots from `arena.addr`) and
 * the bounce pool (the rest, starting on a `pageSize` boundary).
 *
 * @throws {RangeError} if the slots and at least one page do not fit.
 */
export function splitBlkDriverArena(
  arena: BlkDriverArena,
  slots: number,
  pageSize = BLK_DRIVER_PAGE_SIZE,
): BlkDriverArenaParts {
  const end = arena.addr + arena.bytes;
  const bounceAddr = alignUp(arena.addr + slots * BLK_DRIVER_SLOT_BYTES, pageSize);
  const bounceBytes = Math.floor((end - bounceAddr) / pageSize) * pageSize;
  if (bounceBytes < pageSize)
    throw new RangeError(
      `arena [0x${arena.addr.toString(16)}, +${arena.bytes}) is too small for ${slots} request slots and one ${pageSize}-byte bounce page`,
    );
  return { slotsAddr: arena.addr, bounceAddr, bounceBytes };
}

/** An arena as the driver uses it: the slot area and the bounce pool, mapped. */
export interface BlkDriverArenaMap {
  /** Guest address of the first request slot. */
  readonly slotsAddr: number;
  /** The request slots (header + status of each). */
  readonly slotArea: GuestSlice;
  /** Page allocator over the bounce window. */
  readonly bounce: BouncePool;
  /** The bounce window (offset 0 = `bounce.addr`). */
  readonly bounceArea: GuestSlice;
  /** The whole arena, [start, end): zero-copy buffers must stay out of it. */
  readonly start: number;
  readonly end: number;
}

/** True for a non-negative safe integer. */
const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

/**
 * Checks `arena` for `slots` request slots and maps it (see {@link splitBlkDriverArena}).
 *
 * @throws {RangeError} if the arena's numbers are not non-negative safe
 *   integers, it is too small, it is not inside one guest memory region, or
 *   `pageSize` is not a power of two ≥ 16.
 */
export function mapBlkDriverArena(
  memory: GuestMemory,
  arena: BlkDriverArena,
  slots: number,
  pageSize: number,
): BlkDriverArenaMap {
  if (!isCount(arena.addr) || !isCount(arena.bytes))
    throw new RangeError("arena addr and bytes must be non-negative safe integers");
  const parts = splitBlkDriverArena(arena, slots, pageSize);
  const slotBytes = slots * BLK_DRIVER_SLOT_BYTES;
  if (
    !memory.isInOneRegion(parts.slotsAddr, slotBytes) ||
    !memory.isInOneRegion(parts.bounceAddr, parts.bounceBytes)
  )
    throw new RangeError("the driver arena must lie inside one guest memory region");
  const slotArea = memory.slice(parts.slotsAddr, slotBytes);
  const bounce = new BouncePool(parts.bounceAddr, parts.bounceBytes, pageSize);
  return {
    slotsAddr: parts.slotsAddr,
    slotArea,
    bounce,
    bounceArea: memory.slice(parts.bounceAddr, bounce.bytes),
    start: arena.addr,
    end: arena.addr + arena.bytes,
  };
}

/** Options of {@link planBlkDriverMemory}. */
export interface BlkDriverMemoryOptions {
  /** Guest address to start at (16-aligned). */
  readonly base: number;
  readonly numQueues: number;
  /** Size of every queue (split: a power of two; packed: any of 1..32768). */
  readonly queueSize: number;
  /** The rings' layout, as negotiated (`ringLayoutOf(features)`; default "split"). */
  readonly layout?: RingLayoutKind;
  /** Descriptors per indirect table (2..queueSize); 0 = no indirect tables (default min(queueSize, 128)). */
  readonly indirectEntries?: number;
  /** Request slots per queue (default queueSize). */
  readonly slotsPerQueue?: number;
  /** Bounce pool bytes (default 1 MiB). */
  readonly bounceBytes?: number;
  /** Bounce page size (default 4096). */
  readonly pageSize?: number;
}

/** Addresses for every part a {@link BlkDriver} and its queues need. */
export interface BlkDriverMemoryPlan {
  /** One ring per queue, each on a 4096-byte boundary, in the planned layout. */
  readonly rings: readonly RingLayout[];
  /** One indirect arena per queue (empty when `indirectEntries` is 0). */
  readonly indirectArenas: readonly IndirectArena[];
  readonly indirectEntries: number;
  /** The driver's arena (request slots and bounce pool). */
  readonly arena: BlkDriverArena;
  readonly slotsPerQueue: number;
  readonly pageSize: number;
  /** First address after everything. */
  readonly end: number;
}

/**
 * Lays out rings, indirect arenas and the driver arena one after another
 * from `base`, each part on a 4096-byte boundary.
 *
 * @throws {RangeError} for bad numbers (placeRing's checks included: a
 *   split ring's size must be a power of two).
 */
export function planBlkDriverMemory(o: BlkDriverMemoryOptions): BlkDriverMemoryPlan {
  const { numQueues, queueSize } = o;
  if (!Number.isInteger(numQueues) || numQueues < 1 || numQueues > 0xffff)
    throw new RangeError(`numQueues ${numQueues} must be in 1..65535`);
  const entries = o.indirectEntries ?? Math.min(queueSize, 128);
  if (!Number.isInteger(entries) || (entries !== 0 && (entries < 2 || entries > queueSize)))
    throw new RangeError(`indirectEntries ${entries} must be 0 or in 2..${queueSize}`);
  const slotsPerQueue = o.slotsPerQueue ?? queueSize;
  const pageSize = o.pageSize ?? BLK_DRIVER_PAGE_SIZE;
  const bounceBytes = o.bounceBytes ?? 1 << 20;
  let at = alignUp(o.base, 4096);
  const layout = o.layout ?? "split";
  const rings: RingLayout[] = [];
  const indirectArenas: IndirectArena[] = [];
  for (let i = 0; i < numQueues; i++) {
    const ring = placeRing(layout, queueSize, at);
    rings.push(ring);
    at = alignUp(at + ring.totalBytes, 4096);
    if (entries > 0) {
      indirectArenas.push({ addr: at, entriesPerChain: entries });
      at = alignUp(at + indirectArenaBytes(queueSize, entries), 4096);
    }
  }
  const arenaBytes = blkDriverArenaBytes(numQueues * slotsPerQueue, bounceBytes, pageSize);
  const arena = { addr: at, bytes: arenaBytes };
  return {
    rings,
    indirectArenas,
    indirectEntries: entries,
    arena,
    slotsPerQueue,
    pageSize,
    end: at + arenaBytes,
  };
}

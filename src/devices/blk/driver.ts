/**
 * A virtio-blk driver, transport-neutral. VIRTIO 1.2 §5.2 (Block Device:
 * §5.2.6 requests and §5.2.6.1 driver requirements), §2.7.13 (supplying
 * buffers), §2.7.14 (receiving used buffers), §2.7.10 / §2.7.7
 * (notification suppression, through DriverQueue).
 *
 * **Transport.** The driver owns one {@link DriverQueue} per request queue
 * (already set up by the transport) and reaches the device only through
 * {@link BlkDriverTransport}: `notify(i)` ("kick queue i", called only when
 * `kickNeeded()` said the device wants one), or `kick(i)` for a transport
 * that asks the ring itself (`InprocDriverTransport` fits as it is). The
 * transport tells the driver about used-buffer notifications with
 * {@link BlkDriver.processUsed}, about DEVICE_NEEDS_RESET with
 * {@link BlkDriver.markDeviceBroken}, and about a completed device reset
 * with {@link BlkDriver.reset}. So the same driver
 * runs over the in-process transport, over a vhost-user front-end with
 * eventfds, or wired straight to a device in tests.
 *
 * **Buffers.** The device sees guest memory only. Two paths:
 * - *copy* ({@link BlkDriver.read} / {@link BlkDriver.write}): the caller's
 *   `Uint8Array` is copied through the driver's bounce pool (a bounded
 *   window of guest memory the driver owns). When the pool is exhausted,
 *   requests wait (first come, first served, across queues).
 * - *zero-copy* ({@link BlkDriver.readSegments} / {@link BlkDriver.writeSegments}):
 *   the caller passes guest addresses; the device reads or writes them
 *   directly. They must stay untouched until the promise settles.
 *
 * Each queue has a fixed set of request slots (16-byte header + status byte
 * in the driver's arena): no guest memory is allocated per request.
 *
 * **Units.** Offsets and lengths are in bytes and must be multiples of the
 * logical block size (`config.blockSize`, 512 without VIRTIO_BLK_F_BLK_SIZE);
 * the driver converts to the protocol's 512-byte sectors.
 *
 * **Splitting.** A transfer larger than one request may carry is cut into
 * several requests: at most `seg_max` data segments (and never more than the
 * queue size − 2, or the indirect table size − 2), each at most `size_max`
 * bytes, at most {@link BlkDriver.maxRequestBytes} in all, each request a
 * whole number of blocks. DISCARD / WRITE_ZEROES ranges are cut at
 * `max_*_sectors` and grouped by `max_*_seg`. An operation settles once
 * every request of it completed; after the first failure no further
 * request of it is submitted and it rejects with that failure once the ones
 * in flight are back (so a settled promise never has the device still
 * writing into the caller's buffers).
 *
 * **Answers.** Status OK resolves; IOERR / UNSUPP reject with
 * {@link BlkIoError} (code `BLK_IOERR` / `BLK_UNSUPP`). The used length is
 * checked (the device is untrusted): 0 (no status byte) is `BLK_USED_LEN`;
 * an OK read whose used length is shorter than its data + 1 is
 * `BLK_USED_LEN` (the buffer was not filled); other lengths up to the
 * writable size (DriverQueue caps them) are accepted, as QEMU reports the
 * whole writable size and this project's device reports bytes written. A
 * status byte other than 0/1/2 (the driver presets 0xff) is `BLK_BAD_STATUS`.
 *
 * **Local decisions.** Writes (OUT, DISCARD, WRITE_ZEROES) to a device
 * that offers VIRTIO_BLK_F_RO are refused without sending (BlkIoError
 * IOERR, `local`); DISCARD / WRITE_ZEROES without their feature likewise
 * (UNSUPP, `local`). FLUSH without VIRTIO_BLK_F_FLUSH resolves at once
 * (§5.2.5.1: the driver MAY deduce a writethrough cache). API misuse —
 * unaligned or negative numbers, ranges beyond capacity (§5.2.6.1 "A driver
 * MUST NOT submit a request which would cause a read or write beyond
 * capacity"), bad segments — rejects with RangeError / TypeError.
 * DISCARD is advisory, so each range is trimmed to its part aligned to
 * `discard_sector_alignment` (possibly nothing); WRITE_ZEROES is exact.
 *
 * **Failure.** A queue the device breaks (a bad used entry: DriverQueue
 * turns *broken*) rejects everything on it with `QUEUE_BROKEN` (cause: the
 * ring's error); other queues go on. {@link BlkDriver.markDeviceBroken}
 * (DEVICE_NEEDS_RESET) rejects everything with `DEVICE_BROKEN`;
 * {@link BlkDriver.reset} (after the device reset completed) first takes
 * the completions the device made, then rejects the rest with
 * `DEVICE_RESET` and returns the rings to their initial state. No promise
 * settles twice; none is left pending by a failure.
 *
 * **Completions** are taken in batches: disable callbacks → drain the used
 * ring → enable callbacks → drain again if more arrived (§2.7.10's race).
 * Requests submitted in the same turn are staged and published together
 * with one `kickNeeded()` check (unless `batchKicks` is false).
 *
 * Threading: one thread. Re-entrant calls from transport callbacks (a
 * device that completes synchronously inside `notify`) are queued and run
 * when the outer call returns.
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../../errors.ts";
import type { GuestMemory, GuestSlice } from "../../memory/guest-memory.ts";
import type { DriverQueue, Segment } from "../../ring/driver-queue.ts";
import {
  VIRTIO_BLK_DWZ_SEG_SIZE,
  VIRTIO_BLK_ID_BYTES,
  VIRTIO_BLK_REQ_HDR_SIZE,
  VIRTIO_BLK_SECTOR_SIZE,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
} from "../../spec/blk.ts";
import { BouncePool } from "./driver-bounce.ts";
import type { BlkDriverConfig } from "./driver-config.ts";
import {
  BLK_DRIVER_PAGE_SIZE,
  BLK_DRIVER_SLOT_BYTES,
  BLK_DRIVER_SLOT_STATUS,
  splitBlkDriverArena,
  type BlkDriverArena,
} from "./driver-memory.ts";
import {
  alignedRange,
  nextDataPieces,
  nextRangePieces,
  pieceScratch,
  type BlkRange,
  type BlkSegment,
  type DataLimits,
  type PieceScratch,
  type PlanCursor,
  type RangeLimits,
} from "./driver-plan.ts";
import {
  BlkIoError,
  BlkOp,
  BlkSlot,
  blkRequestName,
  readOnlyError,
  unsupportedError,
} from "./driver-request.ts";

/**
 * What the driver needs from a transport: a way to notify the device, in
 * one of two forms (give exactly one). Used-buffer notifications go the
 * other way: the transport calls {@link BlkDriver.processUsed}.
 *
 * Either may call back into the driver synchronously. A throw makes the
 * device broken (`DEVICE_BROKEN`).
 */
export interface BlkDriverTransport {
  /**
   * Sends an available-buffer notification (a kick) for queue
   * `queueIndex`, unconditionally: the driver calls it only after the ring's
   * `kickNeeded()` returned true (an eventfd write, a doorbell register).
   */
  notify?(queueIndex: number): void;
  /**
   * Publishes queue `queueIndex` and notifies the device if the ring says
   * so (asking `kickNeeded()` itself); returns true if it notified. For
   * transports that own that decision, e.g. `InprocDriverTransport.kick`.
   */
  kick?(queueIndex: number): boolean;
}

/** Options of {@link BlkDriver}. */
export interface BlkDriverOptions {
  /** Guest memory holding the rings, the arena and zero-copy buffers. */
  readonly memory: GuestMemory;
  /** The request queues, set up (index i = virtqueue i); at most `config.numQueues`. */
  readonly queues: readonly DriverQueue<number>[];
  readonly transport: BlkDriverTransport;
  /** The device configuration, parsed under the negotiated features ({@link parseBlkConfig}). */
  readonly config: BlkDriverConfig;
  /** Guest memory the driver owns: request slots, then the bounce pool (see driver-memory.ts). */
  readonly arena: BlkDriverArena;
  /** Request slots per queue (default, and at most, the queue size). */
  readonly slotsPerQueue?: number;
  /** Bounce page size, a power of two (default 4096). */
  readonly pageSize?: number;
  /** Most data bytes per request (default 1 MiB; also capped by the device's limits and the bounce pool). */
  readonly maxRequestBytes?: number;
  /**
   * Descriptors per indirect table of the queues (their `indirectArena.entriesPerChain`).
   * Required when a queue uses indirect descriptors: requests are sized to fit one table.
   */
  readonly indirectEntries?: number;
  /** Publish and kick once per event-loop turn (microtask) instead of after every submission (default true). */
  readonly batchKicks?: boolean;
  /** Called once when a queue becomes broken, with the ring's error (e.g. to reset the device). */
  readonly onQueueBroken?: (queueIndex: number, err: VirtioError) => void;
}

/** Per-call options. */
export interface BlkRequestOptions {
  /** Queue to use (default: round robin over the queues that are not broken). */
  readonly queue?: number;
}

/** Options of {@link BlkDriver.writeZeroes}. */
export interface BlkWriteZeroesOptions extends BlkRequestOptions {
  /** Set VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP: the device may deallocate the ranges (default false). */
  readonly unmap?: boolean;
}

/** Counters (cumulative). */
export interface BlkDriverStats {
  /** API calls accepted (not refused locally). */
  operations: number;
  /** virtio-blk requests submitted (descriptor chains). */
  requests: number;
  /** Requests completed by the device. */
  completions: number;
  /** Kicks sent (the ring asked for a notification). */
  kicks: number;
  /** Kick checks where the ring said no notification was needed. */
  kicksSuppressed: number;
  /** Times a submission waited for a free request slot, bounce memory, descriptors. */
  slotWaits: number;
  bounceWaits: number;
  descriptorWaits: number;
}

/** Driver state: serving, broken (DEVICE_NEEDS_RESET or a transport failure), or reset (final). */
export type BlkDriverState = "live" | "broken" | "reset";

const STARTED = 0;
const BLOCKED = 1;
const DROPPED = 2;

/** Preset in the status byte so that a status the device never wrote is seen. */
const STATUS_UNSET = 0xff;
/** §2.7.5.2: a chain is at most 2^32 − 1 bytes; header and status take 17. */
const MAX_CHAIN_DATA = 0xffff_ffff - VIRTIO_BLK_REQ_HDR_SIZE - 1;
/** Cap on DISCARD / WRITE_ZEROES segments per request (keeps the payload and scratch small). */
const MAX_DWZ_SEGS = 1024;

/** A FIFO of operations (array + head index: no O(n) shift). */
class OpFifo {
  #items: BlkOp[] = [];
  #head = 0;
  get length(): number {
    return this.#items.length - this.#head;
  }
  peek(): BlkOp | undefined {
    return this.#items[this.#head];
  }
  push(op: BlkOp): void {
    this.#items.push(op);
  }
  shift(): void {
    this.#items[this.#head++] = undefined as unknown as BlkOp;
    if (this.#head === this.#items.length) {
      this.#items.length = 0;
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
  }
  /** Removes and returns everything. */
  drain(): BlkOp[] {
    const all = this.#items.slice(this.#head);
    this.#items = [];
    this.#head = 0;
    return all;
  }
}

/** One request queue's driver state. */
class QueueState {
  readonly index: number;
  readonly dq: DriverQueue<number>;
  readonly slots: BlkSlot[] = [];
  /** Stack of free slot indexes. */
  readonly freeSlots: number[] = [];
  readonly waiting = new OpFifo();
  broken: VirtioError | null = null;
  // Deferred work for the driver's work loop.
  usedPending = false;
  pumpPending = false;
  kickDue = false;
  kickScheduled = false;
  waitingForBounce = false;
  readonly kickTask: () => void;

  constructor(index: number, dq: DriverQueue<number>, kickTask: (q: QueueState) => void) {
    this.index = index;
    this.dq = dq;
    this.kickTask = () => kickTask(this);
  }
}

/** Array.isArray without narrowing readonly arrays to any[]. */
function isArray(v: unknown): boolean {
  return Array.isArray(v);
}

/** True for a non-negative safe integer. */
const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

/**
 * The driver of one virtio-blk device.
 *
 * @example
 * ```ts
 * const features = selectBlkFeatures(offered);            // negotiate these (FEATURES_OK)
 * const config = parseBlkConfig(configBytes, features);   // read after FEATURES_OK
 * const plan = planBlkDriverMemory({ base, numQueues: 1, queueSize: 128 });
 * // ... the transport sets up DriverQueues at plan.rings / plan.indirectArenas, DRIVER_OK ...
 * const blk = new BlkDriver({ memory, queues, config, arena: plan.arena,
 *   indirectEntries: plan.indirectEntries, transport: { notify: (i) => kick(i) } });
 * onCall((i) => blk.processUsed(i));
 * await blk.write(0, data);
 * await blk.read(0, buf);
 * ```
 */
export class BlkDriver {
  readonly memory: GuestMemory;
  readonly stats: BlkDriverStats = {
    operations: 0,
    requests: 0,
    completions: 0,
    kicks: 0,
    kicksSuppressed: 0,
    slotWaits: 0,
    bounceWaits: 0,
    descriptorWaits: 0,
  };
  readonly #queues: QueueState[];
  readonly #transport: BlkDriverTransport;
  readonly #onQueueBroken: ((i: number, err: VirtioError) => void) | undefined;
  readonly #batchKicks: boolean;
  #config: BlkDriverConfig;
  #state: BlkDriverState = "live";
  #stateError: VirtioError | null = null;
  #rr = 0;
  #busy = false;
  #pendingOps = 0;

  // Guest memory the driver owns.
  readonly #slotArea: GuestSlice;
  readonly #bounceArea: GuestSlice;
  readonly #bounce: BouncePool;
  readonly #arenaStart: number;
  readonly #arenaEnd: number;
  /** Queues waiting for bounce memory, first come first served. */
  readonly #bounceWaiters: number[] = [];
  #bounceServing = -1;
  #bounceFreed = false;

  // Limits.
  readonly #indirectEntries: number;
  readonly #data: DataLimits;
  readonly #copyChunk: number;
  readonly #discard: RangeLimits;
  readonly #writeZeroes: RangeLimits;

  // Scratch (no allocation per request).
  readonly #pieces: PieceScratch;
  /** For the dry run in #prepareSegments (which may run while a submission is in progress). */
  readonly #dryPieces: PieceScratch;
  readonly #cur: PlanCursor = { index: 0, off: 0 };
  readonly #segPool: { addr: number; len: number }[];
  readonly #rd: Segment[] = [];
  readonly #wr: Segment[] = [];

  /**
   * @throws {RangeError} for bad options: no queues, more queues than the
   *   device has, a queue smaller than 4, an arena outside guest memory or
   *   too small, missing `indirectEntries` for indirect queues.
   * @throws {VirtioError} `BLK_BAD_CONFIG` if the device's limits allow no
   *   request of one block.
   */
  constructor(o: BlkDriverOptions) {
    this.memory = o.memory;
    this.#transport = o.transport;
    if ((typeof o.transport?.notify === "function") === (typeof o.transport?.kick === "function"))
      throw new TypeError("the transport must have exactly one of notify(queue) and kick(queue)");
    this.#onQueueBroken = o.onQueueBroken;
    this.#batchKicks = o.batchKicks ?? true;
    this.#config = o.config;
    const cfg = o.config;
    if (!isArray(o.queues) || o.queues.length === 0)
      throw new RangeError("a virtio-blk driver needs at least one queue");
    if (o.queues.length > cfg.numQueues)
      throw new RangeError(`${o.queues.length} queues given, the device has ${cfg.numQueues}`);
    let minSize = Infinity;
    let anyIndirect = false;
    for (const dq of o.queues) {
      // A request is at least header + data + status: three descriptors in one chain.
      if (dq.size < 4) throw new RangeError(`queue size ${dq.size} is below 4`);
      minSize = Math.min(minSize, dq.size);
      anyIndirect ||= dq.indirect;
    }
    const entries = o.indirectEntries ?? 0;
    if (anyIndirect && (!Number.isInteger(entries) || entries < 2))
      throw new RangeError("indirectEntries (the indirect tables' entriesPerChain) is required");
    this.#indirectEntries = anyIndirect ? entries : 0;

    // Request slots and the bounce pool.
    const pageSize = o.pageSize ?? BLK_DRIVER_PAGE_SIZE;
    const perQueue = o.queues.map((dq) => Math.min(o.slotsPerQueue ?? dq.size, dq.size));
    if (perQueue.some((n) => !Number.isInteger(n) || n < 1))
      throw new RangeError(`slotsPerQueue ${o.slotsPerQueue} must be a positive integer`);
    const totalSlots = perQueue.reduce((a, b) => a + b, 0);
    if (!isCount(o.arena.addr) || !isCount(o.arena.bytes))
      throw new RangeError("arena addr and bytes must be non-negative safe integers");
    const parts = splitBlkDriverArena(o.arena, totalSlots, pageSize);
    const slotBytes = totalSlots * BLK_DRIVER_SLOT_BYTES;
    if (
      !o.memory.isInOneRegion(parts.slotsAddr, slotBytes) ||
      !o.memory.isInOneRegion(parts.bounceAddr, parts.bounceBytes)
    )
      throw new RangeError("the driver arena must lie inside one guest memory region");
    this.#arenaStart = o.arena.addr;
    this.#arenaEnd = o.arena.addr + o.arena.bytes;
    this.#slotArea = o.memory.slice(parts.slotsAddr, slotBytes);
    this.#bounce = new BouncePool(parts.bounceAddr, parts.bounceBytes, pageSize);
    this.#bounceArea = o.memory.slice(parts.bounceAddr, this.#bounce.bytes);
    this.#queues = [];
    let slotIndex = 0;
    o.queues.forEach((dq, i) => {
      const q = new QueueState(i, dq, (qs) => this.#kickTask(qs));
      for (let s = 0; s < perQueue[i]!; s++, slotIndex++) {
        const off = slotIndex * BLK_DRIVER_SLOT_BYTES;
        q.slots.push(new BlkSlot(s, parts.slotsAddr + off, off));
      }
      for (let s = perQueue[i]! - 1; s >= 0; s--) q.freeSlots.push(s);
      this.#queues.push(q);
    });

    // Request limits.
    const bs = cfg.blockSize;
    let maxSegs = Math.min(cfg.segMax, minSize - 2);
    if (this.#indirectEntries >= 3) maxSegs = Math.min(maxSegs, this.#indirectEntries - 2);
    const wanted = o.maxRequestBytes ?? 1 << 20;
    if (!Number.isSafeInteger(wanted) || wanted < bs)
      throw new RangeError(`maxRequestBytes ${wanted} must be at least the ${bs}-byte block size`);
    const maxBytes = floorTo(Math.min(wanted, maxSegs * cfg.sizeMax, MAX_CHAIN_DATA), bs);
    if (maxBytes < bs)
      throw new VirtioError(
        ErrorCode.BLK_BAD_CONFIG,
        `virtio-blk config: ${maxSegs} segments of at most ${cfg.sizeMax} bytes cannot hold one ${bs}-byte block`,
        { maxSegs, sizeMax: cfg.sizeMax, blockSize: bs },
      );
    this.#data = { maxSegs, sizeMax: cfg.sizeMax, maxBytes, blockSize: bs };
    this.#copyChunk = floorTo(Math.min(maxBytes, this.#bounce.bytes), bs);
    if (this.#copyChunk < bs)
      throw new RangeError(
        `the bounce pool (${this.#bounce.bytes} bytes) holds no ${bs}-byte block`,
      );
    const segCap = Math.min(
      MAX_DWZ_SEGS,
      Math.floor(cfg.sizeMax / VIRTIO_BLK_DWZ_SEG_SIZE),
      Math.floor(this.#bounce.bytes / VIRTIO_BLK_DWZ_SEG_SIZE),
    );
    this.#discard = rangeLimits(
      cfg.maxDiscardSeg,
      cfg.maxDiscardSectors,
      cfg.discardSectorAlignment,
      bs,
      segCap,
    );
    this.#writeZeroes = rangeLimits(
      cfg.maxWriteZeroesSeg,
      cfg.maxWriteZeroesSectors,
      bs / VIRTIO_BLK_SECTOR_SIZE,
      bs,
      segCap,
    );
    this.#pieces = pieceScratch(
      Math.max(maxSegs, this.#discard.maxSeg, this.#writeZeroes.maxSeg, 1),
    );
    this.#dryPieces = pieceScratch(maxSegs);
    this.#segPool = Array.from({ length: maxSegs + 2 }, () => ({ addr: 0, len: 0 }));
  }

  // ---- state ----

  /** The device configuration in use. */
  get config(): BlkDriverConfig {
    return this.#config;
  }

  get state(): BlkDriverState {
    return this.#state;
  }

  get numQueues(): number {
    return this.#queues.length;
  }

  /** Most data bytes one request carries (zero-copy path; the copy path also fits the bounce pool). */
  get maxRequestBytes(): number {
    return this.#data.maxBytes;
  }

  /** Most data segments one request carries. */
  get maxSegments(): number {
    return this.#data.maxSegs;
  }

  /** API calls not settled yet. */
  get pending(): number {
    return this.#pendingOps;
  }

  /** Bounce pool bytes free right now. */
  get bounceFreeBytes(): number {
    return this.#bounce.freeBytes;
  }

  /** The error that broke queue `index`, or null. */
  queueBroken(index: number): VirtioError | null {
    return this.#queueAt(index).broken;
  }

  /**
   * Takes the fields a device may change at run time from a freshly parsed
   * configuration (after a configuration change notification, §5.2.6.1 "The
   * driver SHOULD check if the content of the capacity field has changed"):
   * capacity, writeback, write_zeroes_may_unmap. Requests already accepted
   * keep the range they were checked against.
   */
  updateConfig(config: BlkDriverConfig): void {
    this.#config = {
      ...this.#config,
      capacity: config.capacity,
      capacityBytes: config.capacityBytes,
      writeback: config.writeback,
      writeZeroesMayUnmap: config.writeZeroesMayUnmap,
    };
  }

  // ---- API ----

  /**
   * Reads `buffer.length` bytes at byte `offset` into `buffer` (copied
   * through the bounce pool).
   */
  read(offset: number, buffer: Uint8Array, options?: BlkRequestOptions): Promise<void> {
    return this.#run(VIRTIO_BLK_T_IN, options, (op) => this.#prepareCopy(op, offset, buffer));
  }

  /** Writes `data` at byte `offset` (copied through the bounce pool). */
  write(offset: number, data: Uint8Array, options?: BlkRequestOptions): Promise<void> {
    return this.#run(VIRTIO_BLK_T_OUT, options, (op) => this.#prepareCopy(op, offset, data));
  }

  /**
   * Zero-copy read: the device writes the disk bytes at `offset` straight
   * into `segments` (guest memory, in order; their total length is the
   * transfer size). The segments must not overlap the driver's arena and
   * must not be touched until the promise settles.
   */
  readSegments(
    offset: number,
    segments: readonly BlkSegment[],
    options?: BlkRequestOptions,
  ): Promise<void> {
    return this.#run(VIRTIO_BLK_T_IN, options, (op) => this.#prepareSegments(op, offset, segments));
  }

  /** Zero-copy write: the device reads `segments` (guest memory) and writes them at `offset`. */
  writeSegments(
    offset: number,
    segments: readonly BlkSegment[],
    options?: BlkRequestOptions,
  ): Promise<void> {
    return this.#run(VIRTIO_BLK_T_OUT, options, (op) =>
      this.#prepareSegments(op, offset, segments),
    );
  }

  /**
   * Makes every write completed before this call stable (VIRTIO_BLK_T_FLUSH,
   * §5.2.6.2 case 3). Resolves at once without VIRTIO_BLK_F_FLUSH.
   */
  flush(options?: BlkRequestOptions): Promise<void> {
    return this.#run(VIRTIO_BLK_T_FLUSH, options, () => !this.#config.flush);
  }

  /**
   * Tells the device it may deallocate `ranges` (VIRTIO_BLK_T_DISCARD).
   * Ranges are byte offsets and lengths in blocks within capacity; each is
   * trimmed to its part aligned to `discard_sector_alignment`. Later reads of
   * discarded bytes return old data or zeroes (§5.2.6.1: the driver "MUST NOT
   * assume anything about the data returned by read requests after a range
   * of sectors has been discarded").
   */
  discard(ranges: readonly BlkRange[], options?: BlkRequestOptions): Promise<void> {
    return this.#run(VIRTIO_BLK_T_DISCARD, options, (op) => this.#prepareRanges(op, ranges));
  }

  /** Makes `ranges` read back as zeroes (VIRTIO_BLK_T_WRITE_ZEROES). */
  writeZeroes(ranges: readonly BlkRange[], options?: BlkWriteZeroesOptions): Promise<void> {
    return this.#run(VIRTIO_BLK_T_WRITE_ZEROES, options, (op) => {
      op.unmap = options?.unmap === true;
      return this.#prepareRanges(op, ranges);
    });
  }

  /** The device ID string (VIRTIO_BLK_T_GET_ID): up to 20 ASCII characters, NUL padding removed. */
  getId(options?: BlkRequestOptions): Promise<string> {
    return this.#run(VIRTIO_BLK_T_GET_ID, options, () => false);
  }

  // ---- transport side ----

  /**
   * A used-buffer notification for queue `index` arrived (spurious calls
   * are harmless): takes every completed request, then submits waiting
   * ones into the room that freed up.
   *
   * @throws {RangeError} for a queue index the driver does not have.
   */
  processUsed(index: number): void {
    this.#queueAt(index).usedPending = true;
    this.#work();
  }

  /**
   * The device is broken (DEVICE_NEEDS_RESET seen in the status, or the
   * transport failed): every pending operation rejects with
   * `DEVICE_BROKEN` (`cause` set to `cause`), later calls too, until the
   * embedder resets the device and calls {@link reset}.
   */
  markDeviceBroken(cause?: Error): void {
    if (this.#state !== "live") return;
    const err = new VirtioError(
      ErrorCode.DEVICE_BROKEN,
      `virtio-blk device is broken and needs a reset${cause === undefined ? "" : `: ${cause.message}`}`,
    );
    if (cause !== undefined) err.cause = cause;
    this.#state = "broken";
    this.#stateError = err;
    for (const q of this.#queues) this.#failQueue(q, err, true);
  }

  /**
   * The device was reset (its status read back 0): it no longer uses the
   * rings. Takes the completions it made before the reset (those requests
   * resolve or reject as usual), rejects everything else with
   * `DEVICE_RESET`, and returns every ring to its initial state
   * (`detachAll`) and every slot and bounce page to the driver. The driver
   * is finished: later calls reject with `DEVICE_RESET`; after
   * re-initializing the device, build a new BlkDriver (the DriverQueues can
   * be reused).
   */
  reset(): void {
    if (this.#state === "reset") return;
    if (this.#state === "live" && !this.#busy)
      for (const q of this.#queues) if (q.broken === null) this.#drain(q);
    const err = new VirtioError(
      ErrorCode.DEVICE_RESET,
      "virtio-blk device was reset before the request completed",
    );
    this.#state = "reset";
    this.#stateError = err;
    for (const q of this.#queues) {
      this.#failQueue(q, err, false);
      q.dq.detachAll();
      q.freeSlots.length = 0;
      for (let s = q.slots.length - 1; s >= 0; s--) {
        q.slots[s]!.held = false;
        q.freeSlots.push(s);
      }
    }
    this.#bounceWaiters.length = 0;
  }

  // ---- operations ----

  /**
   * Creates an operation, lets `prepare` validate and fill it (true = nothing
   * to send: resolve at once), and queues it.
   */
  #run<R extends string | void>(
    type: number,
    options: BlkRequestOptions | undefined,
    prepare: (op: BlkOp) => boolean,
  ): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      if (this.#stateError !== null) throw this.#stateError;
      const cfg = this.#config;
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
      const q = this.#pickQueue(options);
      const op = new BlkOp(type, q.index, resolve as (v: string | undefined) => void, reject);
      if (prepare(op)) {
        resolve((type === VIRTIO_BLK_T_GET_ID ? "" : undefined) as R);
        return;
      }
      this.stats.operations++;
      this.#pendingOps++;
      q.waiting.push(op);
      q.pumpPending = true;
      this.#work();
    });
  }

  #queueAt(index: number): QueueState {
    const q = this.#queues[index];
    if (!Number.isInteger(index) || q === undefined)
      throw new RangeError(`queue ${index} is not in 0..${this.#queues.length - 1}`);
    return q;
  }

  /** The caller's queue, or the next live one round robin; a broken queue's error if none is usable. */
  #pickQueue(options: BlkRequestOptions | undefined): QueueState {
    if (options?.queue !== undefined) {
      const q = this.#queueAt(options.queue);
      if (q.broken !== null) throw q.broken;
      return q;
    }
    const n = this.#queues.length;
    for (let k = 0; k < n; k++) {
      const q = this.#queues[(this.#rr + k) % n]!;
      if (q.broken === null) {
        this.#rr = (q.index + 1) % n;
        return q;
      }
    }
    throw this.#queues[0]!.broken!;
  }

  /** Checks an IN/OUT byte range. */
  #checkData(offset: number, length: number): void {
    const bs = this.#config.blockSize;
    if (!isCount(offset) || offset % bs !== 0)
      throw new RangeError(`offset ${offset} must be a non-negative multiple of ${bs}`);
    // §5.2.6.1 "The length of data MUST be a multiple of 512 bytes for VIRTIO_BLK_T_IN and
    // VIRTIO_BLK_T_OUT requests" (the block size is a multiple of 512).
    if (length % bs !== 0)
      throw new RangeError(`length ${length} must be a multiple of the ${bs}-byte block size`);
    // §5.2.6.1 "A driver MUST NOT submit a request which would cause a read or write beyond capacity."
    if (offset + length > this.#config.capacityBytes)
      throw new RangeError(
        `[${offset}, +${length}) is beyond the capacity of ${this.#config.capacityBytes} bytes`,
      );
  }

  #prepareCopy(op: BlkOp, offset: number, buffer: Uint8Array): boolean {
    if (!(buffer instanceof Uint8Array)) throw new TypeError("buffer must be a Uint8Array");
    this.#checkData(offset, buffer.length);
    op.user = buffer;
    op.offset = offset;
    op.length = buffer.length;
    return buffer.length === 0;
  }

  #prepareSegments(op: BlkOp, offset: number, segments: readonly BlkSegment[]): boolean {
    if (!Array.isArray(segments)) throw new TypeError("segments must be an array");
    // A validated private copy: later changes by the caller cannot reach the ring.
    const segs: BlkSegment[] = [];
    let total = 0;
    for (const s of segments as readonly unknown[]) {
      if (typeof s !== "object" || s === null) throw new TypeError("a segment must be an object");
      const { addr, len } = s as Record<string, unknown>;
      if (!isCount(len) || len === 0 || len > 0xffff_ffff)
        throw new RangeError(`segment length ${String(len)} must be an integer in 1..2^32-1`);
      if (!isCount(addr) || !this.memory.isValidRange(addr, len))
        throw new RangeError(`segment [${String(addr)}, +${len}) is not inside guest memory`);
      if (addr < this.#arenaEnd && addr + len > this.#arenaStart)
        throw new RangeError(`segment [${addr}, +${len}) overlaps the driver's arena`);
      segs.push({ addr, len });
      total += len;
    }
    this.#checkData(offset, total);
    // Dry run of the split: every request must hold at least one block.
    const cur = { index: 0, off: 0 };
    while (cur.index < segs.length) {
      if (nextDataPieces(segs, cur, this.#data, this.#dryPieces) === 0)
        throw new RangeError(
          `segments too fragmented: ${this.#data.maxSegs} consecutive segments (size_max ${this.#data.sizeMax}) hold less than one ${this.#data.blockSize}-byte block`,
        );
    }
    op.segs = segs;
    op.offset = offset;
    op.length = total;
    return total === 0;
  }

  #prepareRanges(op: BlkOp, ranges: readonly BlkRange[]): boolean {
    if (!Array.isArray(ranges)) throw new TypeError("ranges must be an array");
    const copy: BlkRange[] = [];
    for (const r of ranges as readonly unknown[]) {
      if (typeof r !== "object" || r === null) throw new TypeError("a range must be an object");
      const { offset, length } = r as Record<string, unknown>;
      if (!isCount(offset) || !isCount(length))
        throw new RangeError("range offset and length must be non-negative safe integers");
      this.#checkData(offset, length);
      copy.push({ offset, length });
    }
    op.ranges = copy;
    return !this.#rangesLeft(op);
  }

  /** Skips ranges with nothing (aligned) left; true if some remain. */
  #rangesLeft(op: BlkOp): boolean {
    const ranges = op.ranges!;
    const align = this.#rangeLimits(op).align;
    const cur = op.cur;
    // Bounded by the number of ranges.
    while (cur.index < ranges.length) {
      const { start, end } = alignedRange(ranges[cur.index]!, align);
      if (start + cur.off < end) return true;
      cur.index++;
      cur.off = 0;
    }
    return false;
  }

  #rangeLimits(op: BlkOp): RangeLimits {
    return op.type === VIRTIO_BLK_T_DISCARD ? this.#discard : this.#writeZeroes;
  }

  // ---- the work loop ----

  /**
   * Runs deferred work until none is left: used buffers to take, waiting
   * operations to submit, kicks to send, bounce waiters to serve. Re-entrant
   * calls (from transport callbacks) only leave work for the outer loop.
   */
  #work(): void {
    if (this.#busy) return;
    this.#busy = true;
    try {
      for (;;) {
        let any = false;
        for (const q of this.#queues) {
          if (q.usedPending) {
            q.usedPending = false;
            any = true;
            this.#drain(q);
          }
          if (q.pumpPending) {
            q.pumpPending = false;
            any = true;
            this.#pump(q);
          }
          if (q.kickDue) {
            q.kickDue = false;
            any = true;
            this.#kick(q);
          }
        }
        if (this.#bounceFreed) {
          this.#bounceFreed = false;
          any = true;
          this.#serveBounceWaiters();
        }
        if (!any) break;
      }
    } finally {
      this.#busy = false;
    }
  }

  #kickTask(q: QueueState): void {
    q.kickScheduled = false;
    q.kickDue = true;
    this.#work();
  }

  #kickSoon(q: QueueState): void {
    if (!this.#batchKicks) {
      q.kickDue = true;
      return;
    }
    if (q.kickScheduled) return;
    q.kickScheduled = true;
    queueMicrotask(q.kickTask);
  }

  /** Publishes what was staged and notifies the device if the ring asks for it. */
  #kick(q: QueueState): void {
    if (this.#state !== "live" || q.broken !== null) return;
    const t = this.#transport;
    try {
      let rang: boolean;
      if (t.kick !== undefined) rang = t.kick(q.index);
      else if ((rang = q.dq.kickNeeded())) t.notify!(q.index);
      if (rang) this.stats.kicks++;
      else this.stats.kicksSuppressed++;
    } catch (e) {
      this.markDeviceBroken(e instanceof Error ? e : new Error(String(e)));
    }
  }

  /** Submits waiting operations of `q` until one has to wait. */
  #pump(q: QueueState): void {
    let staged = 0;
    // Bounded: each round submits a request or drops a finished operation, else stops.
    while (this.#state === "live" && q.broken === null) {
      const op = q.waiting.peek();
      if (op === undefined) break;
      if (op.settled || op.error !== null || op.allSubmitted) {
        q.waiting.shift();
        continue;
      }
      const r = this.#submit(q, op);
      if (r === BLOCKED) break;
      if (r === STARTED) staged++;
    }
    if (staged > 0) this.#kickSoon(q);
  }

  /**
   * Builds and stages the next request of `op` on `q`. Every resource is
   * checked before anything is taken, so a request either starts or leaves
   * no trace (BLOCKED); DROPPED when staging found the queue broken.
   */
  #submit(q: QueueState, op: BlkOp): number {
    if (q.freeSlots.length === 0) {
      this.stats.slotWaits++;
      return BLOCKED;
    }
    const slot = q.slots[q.freeSlots[q.freeSlots.length - 1]!]!;
    const pieces = this.#pieces;
    const cur = this.#cur;
    cur.index = op.cur.index;
    cur.off = op.cur.off;
    let dataLen = 0;
    let bounceBytes = 0;
    let dataSegs = 0;
    let sector = 0;
    switch (op.type) {
      case VIRTIO_BLK_T_IN:
      case VIRTIO_BLK_T_OUT:
        sector = (op.offset + op.pos) / VIRTIO_BLK_SECTOR_SIZE;
        if (op.user !== null) {
          dataLen = Math.min(op.length - op.pos, this.#copyChunk);
          bounceBytes = dataLen;
          dataSegs = Math.ceil(dataLen / this.#data.sizeMax);
        } else {
          dataLen = nextDataPieces(op.segs!, cur, this.#data, pieces);
          dataSegs = pieces.count;
        }
        break;
      case VIRTIO_BLK_T_GET_ID:
        // §5.2.6.1 "The length of data MUST be 20 bytes for VIRTIO_BLK_T_GET_ID requests."
        bounceBytes = VIRTIO_BLK_ID_BYTES;
        dataSegs = 1;
        break;
      case VIRTIO_BLK_T_DISCARD:
      case VIRTIO_BLK_T_WRITE_ZEROES:
        bounceBytes =
          VIRTIO_BLK_DWZ_SEG_SIZE * nextRangePieces(op.ranges!, cur, this.#rangeLimits(op), pieces);
        dataSegs = 1;
        break;
      default: // FLUSH: §5.2.6.1 "A driver MUST set sector to 0 for a VIRTIO_BLK_T_FLUSH request."
        break;
    }
    const total = dataSegs + 2;
    const needed = q.dq.indirect && total <= this.#indirectEntries ? 1 : total;
    if (q.dq.numFree < needed) {
      this.stats.descriptorWaits++;
      return BLOCKED;
    }
    let bounceAddr = -1;
    if (bounceBytes > 0) {
      bounceAddr = this.#allocBounce(q, bounceBytes);
      if (bounceAddr < 0) return BLOCKED;
    }
    this.#fillRequest(op, slot, sector, bounceAddr, dataLen);
    let ok: boolean;
    try {
      ok = q.dq.stage(this.#rd, this.#wr, slot.index);
    } catch (e) {
      this.#undoBounce(bounceAddr, bounceBytes);
      if (e instanceof VirtioError && q.dq.broken !== null) {
        this.#breakQueue(q, q.dq.broken);
        return DROPPED;
      }
      throw e;
    }
    if (!ok) {
      // Not expected (descriptors were counted above); leave no trace and wait.
      this.#undoBounce(bounceAddr, bounceBytes);
      this.stats.descriptorWaits++;
      return BLOCKED;
    }
    // Committed: the request is on the ring.
    q.freeSlots.pop();
    slot.op = op;
    slot.type = op.type;
    slot.offset = sector * VIRTIO_BLK_SECTOR_SIZE;
    slot.dataLen = dataLen;
    slot.userPos = op.pos;
    slot.bounceAddr = bounceAddr;
    slot.bounceBytes = bounceBytes;
    op.inFlight++;
    op.pos += dataLen;
    op.cur.index = cur.index;
    op.cur.off = cur.off;
    op.allSubmitted = this.#lastRequest(op);
    this.stats.requests++;
    return STARTED;
  }

  /** True if `op` has no more requests to submit (cursors already advanced). */
  #lastRequest(op: BlkOp): boolean {
    switch (op.type) {
      case VIRTIO_BLK_T_IN:
      case VIRTIO_BLK_T_OUT:
        return op.pos >= op.length;
      case VIRTIO_BLK_T_DISCARD:
      case VIRTIO_BLK_T_WRITE_ZEROES:
        return !this.#rangesLeft(op);
      default:
        return true;
    }
  }

  /**
   * Writes the header, the status preset and the payload into guest memory
   * and builds the descriptor lists in #rd / #wr. Plain writes: the
   * avail.idx store in publish() orders them before the device sees the
   * request (§2.7.13.3.1).
   */
  #fillRequest(
    op: BlkOp,
    slot: BlkSlot,
    sector: number,
    bounceAddr: number,
    dataLen: number,
  ): void {
    const hdr = this.#slotArea;
    const rd = this.#rd;
    const wr = this.#wr;
    rd.length = 0;
    wr.length = 0;
    hdr.writeU32(slot.off, op.type);
    hdr.writeU32(slot.off + 4, 0);
    hdr.writeU64(slot.off + 8, sector);
    hdr.writeU8(slot.off + BLK_DRIVER_SLOT_STATUS, STATUS_UNSET);
    let k = 0;
    rd.push(this.#seg(k++, slot.addr, VIRTIO_BLK_REQ_HDR_SIZE));
    const out = op.type !== VIRTIO_BLK_T_IN && op.type !== VIRTIO_BLK_T_GET_ID;
    const list = out ? rd : wr;
    const boff = bounceAddr - this.#bounce.addr;
    switch (op.type) {
      case VIRTIO_BLK_T_IN:
      case VIRTIO_BLK_T_OUT:
        if (op.user !== null) {
          if (out) this.#bounceArea.writeBytes(boff, op.user.subarray(op.pos, op.pos + dataLen));
          const sizeMax = this.#data.sizeMax;
          for (let at = 0; at < dataLen; at += sizeMax)
            list.push(this.#seg(k++, bounceAddr + at, Math.min(sizeMax, dataLen - at)));
        } else {
          const p = this.#pieces;
          for (let i = 0; i < p.count; i++) list.push(this.#seg(k++, p.a[i]!, p.len[i]!));
        }
        break;
      case VIRTIO_BLK_T_GET_ID:
        wr.push(this.#seg(k++, bounceAddr, VIRTIO_BLK_ID_BYTES));
        break;
      case VIRTIO_BLK_T_DISCARD:
      case VIRTIO_BLK_T_WRITE_ZEROES: {
        const p = this.#pieces;
        // §5.2.6.1 "The unmap bit MUST be zero for discard commands."
        const flags = op.type === VIRTIO_BLK_T_WRITE_ZEROES && op.unmap ? 1 : 0;
        for (let i = 0; i < p.count; i++) {
          const at = boff + i * VIRTIO_BLK_DWZ_SEG_SIZE;
          this.#bounceArea.writeU64(at, p.a[i]! / VIRTIO_BLK_SECTOR_SIZE);
          this.#bounceArea.writeU32(at + 8, p.len[i]! / VIRTIO_BLK_SECTOR_SIZE);
          this.#bounceArea.writeU32(at + 12, flags === 1 ? VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP : 0);
        }
        rd.push(this.#seg(k++, bounceAddr, p.count * VIRTIO_BLK_DWZ_SEG_SIZE));
        break;
      }
      default:
        break;
    }
    wr.push(this.#seg(k, slot.addr + BLK_DRIVER_SLOT_STATUS, 1));
  }

  #seg(i: number, addr: number, len: number): Segment {
    const s = this.#segPool[i]!;
    s.addr = addr;
    s.len = len;
    return s;
  }

  // ---- bounce pool ----

  /**
   * Bounce memory for `q`, first come first served across queues: a queue
   * may take memory only when no other queue waits before it. -1 = wait
   * (the queue is then on the waiter list).
   */
  #allocBounce(q: QueueState, bytes: number): number {
    const waiters = this.#bounceWaiters;
    const mayTake =
      waiters.length === 0 || this.#bounceServing === q.index || waiters[0] === q.index;
    const addr = mayTake ? this.#bounce.alloc(bytes) : -1;
    if (addr >= 0) {
      if (waiters[0] === q.index) {
        waiters.shift();
        q.waitingForBounce = false;
      }
      return addr;
    }
    this.stats.bounceWaits++;
    if (!q.waitingForBounce) {
      q.waitingForBounce = true;
      waiters.push(q.index);
    }
    return -1;
  }

  /** Returns a run taken for a request that did not start; queues waiting behind it get a turn. */
  #undoBounce(addr: number, bytes: number): void {
    if (addr < 0) return;
    this.#bounce.free(addr, bytes);
    if (this.#bounceWaiters.length > 0) this.#bounceFreed = true;
  }

  /** Lets waiting queues retry in order, stopping at the first that still does not fit. */
  #serveBounceWaiters(): void {
    const waiters = this.#bounceWaiters;
    // Bounded by the number of queues: each round removes a waiter or stops.
    for (let n = waiters.length; n > 0 && waiters.length > 0; n--) {
      const qi = waiters.shift()!;
      const q = this.#queues[qi]!;
      q.waitingForBounce = false;
      this.#bounceServing = qi;
      try {
        this.#pump(q);
      } finally {
        this.#bounceServing = -1;
      }
      if (q.waitingForBounce) {
        // Still does not fit: back to the head of the line.
        waiters.splice(waiters.indexOf(qi), 1);
        waiters.unshift(qi);
        break;
      }
    }
  }

  // ---- completions ----

  /** disable callbacks → take every used buffer → enable callbacks → again if more arrived. */
  #drain(q: QueueState): void {
    if (this.#state !== "live" || q.broken !== null) return;
    const dq = q.dq;
    let taken = 0;
    dq.disableCallbacks();
    for (;;) {
      // Bounded by the requests outstanding (DriverQueue refuses more used entries than that).
      while (dq.nextUsed()) {
        taken++;
        this.#complete(q, dq.usedToken, dq.usedLen);
      }
      if (dq.broken !== null) {
        this.#breakQueue(q, dq.broken);
        return;
      }
      // §2.7.10 race: a buffer used between the last nextUsed and re-enabling raised no notification.
      if (dq.enableCallbacks()) break;
    }
    if (taken > 0) q.pumpPending = true;
  }

  #complete(q: QueueState, token: number, usedLen: number): void {
    const slot = q.slots[token];
    const op = slot?.op;
    if (slot === undefined || op === null || op === undefined) return;
    this.stats.completions++;
    const err = this.#result(slot, op, usedLen);
    this.#releaseSlot(q, slot, false);
    this.#requestDone(op, err);
  }

  /** Checks the status byte and used length; on success copies IN data / the ID out. */
  #result(slot: BlkSlot, op: BlkOp, usedLen: number): Error | null {
    const name = blkRequestName(slot.type);
    if (usedLen < 1)
      return new VirtioError(
        ErrorCode.BLK_USED_LEN,
        `${name} at byte ${slot.offset}: used length 0, the device wrote no status byte`,
        { type: slot.type, usedLen },
      );
    const status = this.#slotArea.readU8(slot.off + BLK_DRIVER_SLOT_STATUS);
    if (status === VIRTIO_BLK_S_IOERR || status === VIRTIO_BLK_S_UNSUPP)
      return new BlkIoError(
        status,
        slot.type,
        `${name} at byte ${slot.offset} (${slot.dataLen} bytes) failed: ${status === VIRTIO_BLK_S_IOERR ? "VIRTIO_BLK_S_IOERR" : "VIRTIO_BLK_S_UNSUPP"}`,
      );
    if (status !== VIRTIO_BLK_S_OK)
      return new VirtioError(
        ErrorCode.BLK_BAD_STATUS,
        `${name} at byte ${slot.offset}: the device wrote status ${status}, not 0, 1 or 2`,
        { type: slot.type, status },
      );
    if (slot.type === VIRTIO_BLK_T_IN) {
      if (usedLen < slot.dataLen + 1)
        return new VirtioError(
          ErrorCode.BLK_USED_LEN,
          `${name} of ${slot.dataLen} bytes completed OK with used length ${usedLen}: data not filled`,
          { type: slot.type, usedLen, dataLen: slot.dataLen },
        );
      if (op.user !== null && op.error === null)
        this.#bounceArea.readBytes(
          slot.bounceAddr - this.#bounce.addr,
          op.user.subarray(slot.userPos, slot.userPos + slot.dataLen),
        );
    } else if (slot.type === VIRTIO_BLK_T_GET_ID) {
      op.result = this.#readId(slot.bounceAddr - this.#bounce.addr, usedLen - 1);
    }
    return null;
  }

  /** The NUL-padded ASCII ID (§5.2.6: "If the string is 20 bytes long then there is no NUL terminator"). */
  #readId(off: number, written: number): string {
    let s = "";
    const n = Math.min(VIRTIO_BLK_ID_BYTES, written);
    for (let i = 0; i < n; i++) {
      const c = this.#bounceArea.readU8(off + i);
      if (c === 0) break;
      s += String.fromCharCode(c);
    }
    return s;
  }

  /** Frees a slot's bounce run; the slot returns to the free stack, or stays held (broken ring). */
  #releaseSlot(q: QueueState, slot: BlkSlot, hold: boolean): void {
    if (slot.bounceAddr >= 0) {
      this.#bounce.free(slot.bounceAddr, slot.bounceBytes);
      this.#bounceFreed = true;
      slot.bounceAddr = -1;
      slot.bounceBytes = 0;
    }
    slot.op = null;
    if (hold) slot.held = true;
    else q.freeSlots.push(slot.index);
  }

  #requestDone(op: BlkOp, err: Error | null): void {
    op.inFlight--;
    if (err !== null && op.error === null) op.error = err;
    this.#maybeSettle(op);
  }

  #maybeSettle(op: BlkOp): void {
    if (op.settled || op.inFlight > 0 || (!op.allSubmitted && op.error === null)) return;
    op.settled = true;
    this.#pendingOps--;
    if (op.error !== null) op.reject(op.error);
    else op.resolve(op.type === VIRTIO_BLK_T_GET_ID ? op.result : undefined);
  }

  // ---- failure ----

  #breakQueue(q: QueueState, ringErr: VirtioError): void {
    if (q.broken !== null) return;
    const err = new VirtioError(
      ErrorCode.QUEUE_BROKEN,
      `virtio-blk queue ${q.index} is broken (${ringErr.code}): ${ringErr.message}`,
      { queue: q.index, reason: ringErr.code },
    );
    err.cause = ringErr;
    q.broken = err;
    this.#failQueue(q, err, true);
    try {
      this.#onQueueBroken?.(q.index, ringErr);
    } catch {
      // The embedder's callback must not disturb the driver.
    }
  }

  /**
   * Rejects everything on `q` with `err`: requests in the ring (their slots
   * stay held while the ring may still hold them) and waiting operations.
   * Bounce memory goes back to the pool at once.
   */
  #failQueue(q: QueueState, err: VirtioError, hold: boolean): void {
    const i = this.#bounceWaiters.indexOf(q.index);
    if (i >= 0) {
      this.#bounceWaiters.splice(i, 1);
      // The queues behind it may fit now.
      this.#bounceFreed = true;
    }
    q.waitingForBounce = false;
    const ops: BlkOp[] = [];
    for (const slot of q.slots) {
      const op = slot.op;
      if (op === null) continue;
      this.#releaseSlot(q, slot, hold);
      op.inFlight--;
      op.error ??= err;
      ops.push(op);
    }
    for (const op of q.waiting.drain()) {
      op.error ??= err;
      ops.push(op);
    }
    for (const op of ops) this.#maybeSettle(op);
    if (this.#bounceFreed && !this.#busy) this.#work();
  }
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

/**
 * A virtio-blk driver, transport-neutral and ring-layout-neutral. VIRTIO 1.2
 * §5.2 (Block Device: §5.2.6 requests and §5.2.6.1 driver requirements),
 * §2.7.13 / §2.8.21 (supplying buffers), §2.7.14 / §2.8.22 (receiving used
 * buffers), §2.7.10 / §2.7.7 / §2.8.10 (notification suppression, through
 * the ring).
 *
 * **Rings.** The driver owns one {@link DriverRing} per request queue
 * (already set up by the transport with `openDriverRing`): a split ring
 * (§2.7), or a packed ring (§2.8) when VIRTIO_F_RING_PACKED was negotiated
 * ({@link selectBlkFeatures} accepts it when offered). Nothing in the
 * driver depends on the layout.
 *
 * **Transport.** The driver reaches the device only through
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
 * writable size (the ring caps them) are accepted, as QEMU reports the
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
 * **Failure.** A queue the device breaks (a bad used entry: the ring
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
 * **Files.** The public types are in driver-types.ts; call checks in
 * driver-validate.ts; request limits in driver-limits.ts; request encoding
 * in driver-submit.ts; the bounce pool in driver-bounce.ts; answers in
 * driver-result.ts; the work loop, completions and failure in
 * driver-engine.ts; per-queue state in driver-queues.ts, over the
 * DriverRing of ../../ring/driver-ring.ts.
 *
 * @module
 */
import type { VirtioError } from "../../errors.ts";
import type { GuestMemory } from "../../memory/guest-memory.ts";
import {
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
} from "../../spec/blk.ts";
import { FairBounce } from "./driver-bounce.ts";
import type { BlkDriverConfig } from "./driver-config.ts";
import { BlkDriverEngine } from "./driver-engine.ts";
import {
  blkDriverLimits,
  blkSlotsPerQueue,
  checkBlkDriverQueues,
  type BlkDriverLimits,
} from "./driver-limits.ts";
import { BLK_DRIVER_PAGE_SIZE, mapBlkDriverArena } from "./driver-memory.ts";
import type { BlkRange, BlkSegment } from "./driver-plan.ts";
import { BlkOp } from "./driver-request.ts";
import { BlkResultReader } from "./driver-result.ts";
import { BlkSubmitter } from "./driver-submit.ts";
import {
  newBlkDriverStats,
  type BlkDriverOptions,
  type BlkDriverState,
  type BlkDriverStats,
  type BlkRequestOptions,
  type BlkWriteZeroesOptions,
} from "./driver-types.ts";
import { BlkCallChecks, checkAllowed } from "./driver-validate.ts";

export type {
  BlkDriverOptions,
  BlkDriverState,
  BlkDriverStats,
  BlkDriverTransport,
  BlkRequestOptions,
  BlkWriteZeroesOptions,
} from "./driver-types.ts";

/**
 * The driver of one virtio-blk device.
 *
 * @example
 * ```ts
 * const features = selectBlkFeatures(offered);            // negotiate these (FEATURES_OK)
 * const config = parseBlkConfig(configBytes, features);   // read after FEATURES_OK
 * const plan = planBlkDriverMemory({ base, numQueues: 1, queueSize: 128, layout: ringLayoutOf(features) });
 * // ... the transport sets up rings (openDriverRing) at plan.rings / plan.indirectArenas, DRIVER_OK ...
 * const blk = new BlkDriver({ memory, queues, config, arena: plan.arena,
 *   indirectEntries: plan.indirectEntries, transport: { notify: (i) => kick(i) } });
 * onCall((i) => blk.processUsed(i));
 * await blk.write(0, data);
 * await blk.read(0, buf);
 * ```
 */
export class BlkDriver {
  readonly memory: GuestMemory;
  readonly stats: BlkDriverStats = newBlkDriverStats();
  readonly #engine: BlkDriverEngine;
  readonly #checks: BlkCallChecks;
  readonly #limits: BlkDriverLimits;
  readonly #bounce: FairBounce;
  #config: BlkDriverConfig;

  /**
   * @throws {RangeError} for bad options: no queues, more queues than the
   *   device has, a queue smaller than 4, an arena outside guest memory or
   *   too small, missing `indirectEntries` for indirect queues.
   * @throws {VirtioError} `BLK_BAD_CONFIG` if the device's limits allow no
   *   request of one block.
   */
  constructor(o: BlkDriverOptions) {
    this.memory = o.memory;
    if ((typeof o.transport?.notify === "function") === (typeof o.transport?.kick === "function"))
      throw new TypeError("the transport must have exactly one of notify(queue) and kick(queue)");
    this.#config = o.config;
    const shape = checkBlkDriverQueues(o.queues, o.config, o.indirectEntries);
    const perQueue = blkSlotsPerQueue(o.queues, o.slotsPerQueue);
    const totalSlots = perQueue.reduce((a, b) => a + b, 0);
    const pageSize = o.pageSize ?? BLK_DRIVER_PAGE_SIZE;
    const arena = mapBlkDriverArena(o.memory, o.arena, totalSlots, pageSize);
    const limits = blkDriverLimits(o.config, shape, o.maxRequestBytes, arena.bounce.bytes);
    const bounce = new FairBounce(arena.bounce);
    this.#limits = limits;
    this.#bounce = bounce;
    this.#checks = new BlkCallChecks(o.memory, arena, limits);
    this.#engine = new BlkDriverEngine({
      rings: o.queues,
      slotsPerQueue: perQueue,
      slotsAddr: arena.slotsAddr,
      transport: o.transport,
      batchKicks: o.batchKicks ?? true,
      onQueueBroken: o.onQueueBroken,
      stats: this.stats,
      bounce,
      submitter: new BlkSubmitter(limits, arena, bounce, this.stats),
      results: new BlkResultReader(arena.slotArea, arena.bounceArea, arena.bounce.addr),
    });
  }

  // ---- state ----

  /** The device configuration in use. */
  get config(): BlkDriverConfig {
    return this.#config;
  }

  get state(): BlkDriverState {
    return this.#engine.state;
  }

  get numQueues(): number {
    return this.#engine.queues.length;
  }

  /** Most data bytes one request carries (zero-copy path; the copy path also fits the bounce pool). */
  get maxRequestBytes(): number {
    return this.#limits.data.maxBytes;
  }

  /** Most data segments one request carries. */
  get maxSegments(): number {
    return this.#limits.data.maxSegs;
  }

  /** API calls not settled yet. */
  get pending(): number {
    return this.#engine.pending;
  }

  /** Bounce pool bytes free right now. */
  get bounceFreeBytes(): number {
    return this.#bounce.pool.freeBytes;
  }

  /** The error that broke queue `index`, or null. */
  queueBroken(index: number): VirtioError | null {
    return this.#engine.queueAt(index).broken;
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
    return this.#run(VIRTIO_BLK_T_IN, options, (op) =>
      this.#checks.copy(op, this.#config, offset, buffer),
    );
  }

  /** Writes `data` at byte `offset` (copied through the bounce pool). */
  write(offset: number, data: Uint8Array, options?: BlkRequestOptions): Promise<void> {
    return this.#run(VIRTIO_BLK_T_OUT, options, (op) =>
      this.#checks.copy(op, this.#config, offset, data),
    );
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
    return this.#run(VIRTIO_BLK_T_IN, options, (op) =>
      this.#checks.segments(op, this.#config, offset, segments),
    );
  }

  /** Zero-copy write: the device reads `segments` (guest memory) and writes them at `offset`. */
  writeSegments(
    offset: number,
    segments: readonly BlkSegment[],
    options?: BlkRequestOptions,
  ): Promise<void> {
    return this.#run(VIRTIO_BLK_T_OUT, options, (op) =>
      this.#checks.segments(op, this.#config, offset, segments),
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
    return this.#run(VIRTIO_BLK_T_DISCARD, options, (op) =>
      this.#checks.ranges(op, this.#config, ranges),
    );
  }

  /** Makes `ranges` read back as zeroes (VIRTIO_BLK_T_WRITE_ZEROES). */
  writeZeroes(ranges: readonly BlkRange[], options?: BlkWriteZeroesOptions): Promise<void> {
    return this.#run(VIRTIO_BLK_T_WRITE_ZEROES, options, (op) => {
      op.unmap = options?.unmap === true;
      return this.#checks.ranges(op, this.#config, ranges);
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
    this.#engine.processUsed(index);
  }

  /**
   * The device is broken (DEVICE_NEEDS_RESET seen in the status, or the
   * transport failed): every pending operation rejects with
   * `DEVICE_BROKEN` (`cause` set to `cause`), later calls too, until the
   * embedder resets the device and calls {@link reset}.
   */
  markDeviceBroken(cause?: Error): void {
    this.#engine.markDeviceBroken(cause);
  }

  /**
   * The device was reset (its status read back 0): it no longer uses the
   * rings. Takes the completions it made before the reset (those requests
   * resolve or reject as usual), rejects everything else with
   * `DEVICE_RESET`, and returns every ring to its initial state
   * (`detachAll`) and every slot and bounce page to the driver. The driver
   * is finished: later calls reject with `DEVICE_RESET`; after
   * re-initializing the device, build a new BlkDriver (the rings can
   * be reused).
   */
  reset(): void {
    this.#engine.reset();
  }

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
      const engine = this.#engine;
      engine.checkAccepting();
      checkAllowed(type, this.#config);
      const q = engine.pickQueue(options);
      const op = new BlkOp(type, q.index, resolve as (v: string | undefined) => void, reject);
      if (prepare(op)) {
        resolve((type === VIRTIO_BLK_T_GET_ID ? "" : undefined) as R);
        return;
      }
      engine.start(q, op);
    });
  }
}

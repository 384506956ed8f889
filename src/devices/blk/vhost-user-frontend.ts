/**
 * A virtio-blk disk served by any vhost-user-blk back-end, driven from this
 * process: the device-neutral vhost-user front-end
 * (../../vhost-user/frontend.ts) carries the control messages and
 * notifications, the project's virtio-blk driver (./driver.ts) builds and
 * completes the requests. VIRTIO 1.2
 * §5.2 (block device), §3.1.1 (driver initialization: features, then config,
 * then queues); qemu/qemu docs/interop/vhost-user.rst "Starting and stopping
 * rings"; docs/vhost-user.md.
 *
 * Setup: connect and negotiate (the driver's feature selection; VERSION_1
 * required; packed rings, §2.8, when the back-end offers
 * VIRTIO_F_RING_PACKED and `reconnectMs` is not set, else split rings,
 * §2.7), read the 60-byte `struct virtio_blk_config`, lay out rings,
 * indirect tables, request slots and the bounce pool in one memfd region
 * (../../vhost-user/frontend-memory.ts; the pieces are
 * ./vhost-user-frontend-setup.ts), share it, start one ring per queue. Every
 * request queue's call eventfd is watched on this thread's loop and drained
 * by the driver; a kick is an eventfd write.
 *
 * Failure: if the connection closes under the driver (back-end gone, or a
 * malformed reply), every pending operation rejects with `DEVICE_BROKEN`
 * whose `cause` is the vhost-user error — unless `reconnectMs` is set: the
 * disk then waits that long for a back-end to listen at the same path
 * again and re-attaches to it (./vhost-user-frontend-attach.ts), and the
 * new back-end resubmits from the inflight buffer what the old one left
 * unfinished, so pending operations complete, none lost or repeated. {@link VhostUserBlk.close} waits for
 * the operations in flight, stops the rings (GET_VRING_BASE), hangs up and
 * unmaps.
 *
 * Node-only.
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../../errors.ts";
import { VHOST_USER_F_PROTOCOL_FEATURES } from "../../spec/virtio.ts";
import type {
  BlkDriver,
  BlkDriverStats,
  BlkRequestOptions,
  BlkWriteZeroesOptions,
} from "./driver.ts";
import { parseBlkConfig, type BlkDriverConfig } from "./driver-config.ts";
import type { BlkRange, BlkSegment } from "./driver-plan.ts";
import {
  checkSizes,
  connectFrontend,
  newDriver,
  planMemory,
  queueCount,
  type VhostUserBlkConnectOptions,
} from "./vhost-user-frontend-setup.ts";
import {
  attach,
  checkSuccessor,
  dropInflight,
  getInflight,
  type BlkAttachment,
  type KeptInflight,
} from "./vhost-user-frontend-attach.ts";
import type { RingLayout } from "../../ring/ring-layout.ts";
import type { VhostUserFrontend } from "../../vhost-user/frontend.ts";
import { FRONTEND_MEMORY_BASE, SharedGuestMemory } from "../../vhost-user/frontend-memory.ts";

export type { VhostUserBlkConnectOptions } from "./vhost-user-frontend-setup.ts";

/** A zero-copy buffer in shared guest memory (see {@link VhostUserBlk.allocBuffer}). */
export interface GuestBuffer {
  /** Guest-physical address, for {@link VhostUserBlk.readSegments} / {@link VhostUserBlk.writeSegments}. */
  readonly addr: number;
  readonly len: number;
  /** The bytes, a view of the shared mapping (detached once the disk is closed). */
  readonly bytes: Uint8Array;
}

const PAGE = 4096;

/** How a disk reaches its back-end again (see `reconnectMs`). */
interface Reach {
  readonly path: string;
  readonly options: VhostUserBlkConnectOptions;
  readonly reconnectMs: number;
  readonly features: bigint;
  readonly rings: readonly RingLayout[];
}

/**
 * A block device behind a vhost-user-blk back-end.
 *
 * @example
 * ```ts
 * const disk = await VhostUserBlk.connect("/run/qsd.sock", { numQueues: 2 });
 * await disk.write(0, new Uint8Array(4096).fill(7));
 * const back = new Uint8Array(4096);
 * await disk.read(0, back);
 * await disk.flush();
 * console.log(await disk.getId(), disk.config.capacityBytes);
 * await disk.close();
 * ```
 */
export class VhostUserBlk {
  /** The virtio-blk driver (stats, limits, per-queue state). */
  readonly driver: BlkDriver;
  readonly #memory: SharedGuestMemory;
  readonly #reach: Reach;
  #att: BlkAttachment;
  #inflight: KeptInflight | null = null;
  #reconnects = 0;
  #reconnecting: Promise<void> | undefined;
  #closing: Promise<void> | undefined;
  #drained: (() => void) | undefined;
  #settleGone!: (why: VirtioError) => void;
  readonly #gone = new Promise<VirtioError>((resolve) => {
    this.#settleGone = resolve;
  });

  private constructor(
    frontend: VhostUserFrontend,
    memory: SharedGuestMemory,
    reach: Reach,
    newDriverFor: (notify: (i: number) => void) => BlkDriver,
  ) {
    this.#att = { frontend, rings: [] };
    this.#memory = memory;
    this.#reach = reach;
    // A kick while no back-end holds the rings goes nowhere; the re-attach kicks every ring.
    this.driver = newDriverFor((i) => this.#att.rings[i]?.kick());
  }

  /**
   * Connects to the vhost-user-blk back-end listening at `path` and sets
   * the disk up. Rejects (with nothing left open) with
   * `VIRTIO_ERR_VHOST_USER_INCOMPATIBLE` if the back-end lacks VERSION_1,
   * protocol features or queues, `BLK_BAD_CONFIG` for an unusable config
   * space, or the front-end's errors (see {@link VhostUserFrontend.connect}).
   */
  static async connect(
    path: string,
    options: VhostUserBlkConnectOptions = {},
  ): Promise<VhostUserBlk> {
    const { queueSize, bufferBytes, reconnectMs } = checkSizes(options);
    const frontend = await connectFrontend(path, options);
    let memory: SharedGuestMemory | undefined;
    let inflight: KeptInflight | null = null;
    try {
      const features = frontend.features & ~(1n << BigInt(VHOST_USER_F_PROTOCOL_FEATURES));
      const config = parseBlkConfig(frontend.config, features);
      const numQueues = queueCount(options, config.numQueues, frontend.maxQueues);
      const plan = planMemory(features, numQueues, queueSize, options);
      const planned = plan.end - FRONTEND_MEMORY_BASE;
      memory = SharedGuestMemory.create({
        size: Math.ceil(planned / PAGE) * PAGE + bufferBytes,
        name: "virtio-ts-blk",
      });
      memory.alloc(planned, PAGE); // the plan's part, from the base
      const reach = { path, options, reconnectMs, features: frontend.features, rings: plan.rings };
      const mem = memory;
      const disk = new VhostUserBlk(frontend, mem, reach, (notify) =>
        newDriver(mem, plan, config, options, notify),
      );
      inflight = await getInflight(frontend, numQueues, queueSize);
      disk.#inflight = inflight;
      disk.#att = await attach(frontend, mem, plan.rings, inflight, false, (i) => disk.#onCall(i));
      disk.#watch(frontend);
      return disk;
    } catch (e) {
      await frontend.close();
      memory?.close();
      dropInflight(inflight);
      throw e;
    }
  }

  /** The vhost-user connection in use (features, protocol features, limits); a new one after each reconnect. */
  get frontend(): VhostUserFrontend {
    return this.#att.frontend;
  }

  /** Times the disk re-attached to a restarted back-end. */
  get reconnects(): number {
    return this.#reconnects;
  }

  /** The device configuration (capacity, block size, limits, queues). */
  get config(): BlkDriverConfig {
    return this.driver.config;
  }

  /** Request queues in use. */
  get numQueues(): number {
    return this.driver.numQueues;
  }

  /** Driver counters: operations, requests, kicks sent and suppressed, waits. */
  get stats(): Readonly<BlkDriverStats> {
    return this.driver.stats;
  }

  /**
   * Resolves with the reason once the disk has no back-end for good: closed,
   * or its connection dropped and no restarted back-end took over in time.
   */
  get closed(): Promise<VirtioError> {
    return this.#gone;
  }

  /**
   * Reserves a zero-copy buffer of `len` bytes (page-aligned) in the shared
   * memory set aside with `bufferBytes`. Buffers live as long as the disk.
   *
   * @throws {RangeError} when the buffer memory is exhausted.
   */
  allocBuffer(len: number): GuestBuffer {
    const addr = this.#memory.alloc(len, PAGE);
    const views: Uint8Array[] = [];
    this.#memory.memory.views(addr, len, views);
    return { addr, len, bytes: views[0]! };
  }

  /** Reads `buffer.length` bytes at byte `offset` (copied through the bounce pool). */
  read(offset: number, buffer: Uint8Array, options?: BlkRequestOptions): Promise<void> {
    return this.#closing ? this.#refuse() : this.driver.read(offset, buffer, options);
  }

  /** Writes `data` at byte `offset` (copied through the bounce pool). */
  write(offset: number, data: Uint8Array, options?: BlkRequestOptions): Promise<void> {
    return this.#closing ? this.#refuse() : this.driver.write(offset, data, options);
  }

  /** Zero-copy read into guest buffers (e.g. from {@link allocBuffer}). */
  readSegments(
    offset: number,
    segments: readonly BlkSegment[],
    options?: BlkRequestOptions,
  ): Promise<void> {
    return this.#closing ? this.#refuse() : this.driver.readSegments(offset, segments, options);
  }

  /** Zero-copy write from guest buffers. */
  writeSegments(
    offset: number,
    segments: readonly BlkSegment[],
    options?: BlkRequestOptions,
  ): Promise<void> {
    return this.#closing ? this.#refuse() : this.driver.writeSegments(offset, segments, options);
  }

  /** Makes completed writes stable (VIRTIO_BLK_T_FLUSH). */
  flush(options?: BlkRequestOptions): Promise<void> {
    return this.#closing ? this.#refuse() : this.driver.flush(options);
  }

  /** VIRTIO_BLK_T_DISCARD of byte ranges (advisory; see BlkDriver.discard). */
  discard(ranges: readonly BlkRange[], options?: BlkRequestOptions): Promise<void> {
    return this.#closing ? this.#refuse() : this.driver.discard(ranges, options);
  }

  /** VIRTIO_BLK_T_WRITE_ZEROES of byte ranges. */
  writeZeroes(ranges: readonly BlkRange[], options?: BlkWriteZeroesOptions): Promise<void> {
    return this.#closing ? this.#refuse() : this.driver.writeZeroes(ranges, options);
  }

  /** The device ID string (VIRTIO_BLK_T_GET_ID). */
  getId(options?: BlkRequestOptions): Promise<string> {
    return this.#closing ? this.#refuse() : this.driver.getId(options);
  }

  /**
   * Waits for every operation in flight to settle, stops the rings
   * (GET_VRING_BASE), closes the connection and unmaps the memory
   * (idempotent). Operations started after close() reject with
   * `VIRTIO_ERR_VHOST_USER_DISCONNECTED`. A back-end that never completes
   * what it was given keeps close() waiting until its connection fails.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  /**
   * Tears the disk down at once: closes the connection without waiting
   * (every pending operation rejects with `DEVICE_BROKEN`), then releases
   * everything as {@link close} does. For shutdown paths that must not wait
   * on the back-end.
   */
  destroy(): Promise<void> {
    this.frontend.destroy();
    return this.close();
  }

  async #close(): Promise<void> {
    await this.#reconnecting;
    if (this.driver.pending > 0 && this.frontend.error === undefined)
      await new Promise<void>((resolve) => {
        this.#drained = resolve;
      });
    await this.frontend.close();
    // The back-end stopped the rings: take what it completed, fail nothing that is still pending.
    this.driver.reset();
    this.#memory.close();
    dropInflight(this.#inflight);
  }

  #refuse<T>(): Promise<T> {
    return Promise.reject(
      new VirtioError(ErrorCode.VHOST_USER_DISCONNECTED, "the vhost-user-blk disk is closing"),
    );
  }

  #onCall(i: number): void {
    this.driver.processUsed(i);
    this.#checkDrained();
  }

  #checkDrained(): void {
    if (this.#drained !== undefined && this.driver.pending === 0) {
      const done = this.#drained;
      this.#drained = undefined;
      done();
    }
  }

  #watch(frontend: VhostUserFrontend): void {
    void frontend.closed.then((err) => this.#onConnectionClosed(frontend, err));
  }

  #onConnectionClosed(frontend: VhostUserFrontend, err: VirtioError): void {
    if (frontend !== this.#att.frontend) return;
    // Without an inflight buffer only an idle disk can resume exactly (used.idx = avail.idx).
    const resumable = this.#inflight !== null || this.driver.pending === 0;
    if (this.#closing === undefined && this.#reach.reconnectMs > 0 && resumable) {
      this.#reconnecting = this.#reconnect(err);
      return;
    }
    this.#fail(err);
  }

  /** Closed under the driver (not by close() after draining): fail what is pending. */
  #fail(err: VirtioError): void {
    this.driver.markDeviceBroken(err);
    this.#checkDrained();
    this.#settleGone(err);
  }

  /** Tries a restarted back-end with backoff until `reconnectMs` has passed. */
  async #reconnect(cause: VirtioError): Promise<void> {
    const deadline = Date.now() + this.#reach.reconnectMs;
    for (let delay = 20; this.#closing === undefined; delay = Math.min(2 * delay, 500)) {
      const att = await this.#reattach().catch(() => null);
      if (att !== null) {
        this.#resumeOn(att);
        return;
      }
      if (Date.now() + delay > deadline) break;
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
    this.#fail(cause);
  }

  async #reattach(): Promise<BlkAttachment> {
    const { path, options, features, rings } = this.#reach;
    const fe = await connectFrontend(path, options);
    try {
      checkSuccessor(fe, features, this.#inflight);
      return await attach(fe, this.#memory, rings, this.#inflight, true, (i) => this.#onCall(i));
    } catch (e) {
      await fe.close();
      throw e;
    }
  }

  /** Takes what the old back-end published, then wakes the new one on every ring. */
  #resumeOn(att: BlkAttachment): void {
    this.#att = att;
    this.#reconnects++;
    this.#watch(att.frontend);
    for (const [i, ring] of att.rings.entries()) {
      this.driver.processUsed(i);
      ring.kick();
    }
    this.#checkDrained();
  }
}

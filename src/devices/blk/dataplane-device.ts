/**
 * virtio-blk with its queues on dataplane runtimes: the device-framework
 * adapter on the control side. VIRTIO 1.2 §5.2 (Block Device), §2.4
 * (reset), §2.5 (config space; a capacity change is a config change) and
 * docs/conformance.md "Lifecycle" and "Ring violations".
 *
 * The control side keeps what the driver reads and negotiates
 * ({@link BlkDeviceCore} under a VirtioDevice); the runtimes do all queue
 * processing (../../dataplane/runtime.ts with ./runtime-device.ts):
 *
 * - activate (DRIVER_OK): guest memory is described to every runtime, then
 *   each ready queue is started on its runtime;
 * - kicks go from the driver straight to the runtime (the binding's
 *   doorbells); `queueNotify` on this side has nothing to do;
 * - quiesce (reset): every started queue is stopped; a runtime stops
 *   popping, completes its in-flight requests into the used ring and only
 *   then acknowledges, after which it writes nothing to guest memory;
 * - a ring violation in a runtime halts the device's queues everywhere and
 *   makes the device broken here (DEVICE_NEEDS_RESET, config change);
 * - the cache mode is the core's shared word, stored before a config write
 *   is acknowledged (./cache-mode.ts).
 *
 * The control side must keep its event loop turning (the in-process device
 * loop in `wait: "async"` mode): runtime reports arrive as messages.
 *
 * @module
 */
import type { ActivationContext, VirtioDeviceBackend } from "../../device/backend.ts";
import type { ConfigSpace } from "../../device/config-space.ts";
import type { DataplaneDeviceHandle, DeviceEvent } from "../../dataplane/device-handle.ts";
import { DataplanePool } from "../../dataplane/pool.ts";
import type { QueueStats, StopResult } from "../../dataplane/protocol.ts";
import type { DataplaneBinding } from "../../dataplane/seams.ts";
import { ErrorCode, VirtioError } from "../../errors.ts";
import { consoleLogger, errorText, type Logger } from "../../log.ts";
import type { BlkDeviceConfig } from "./config.ts";
import type { BlkDeviceCore } from "./core.ts";
import { type BlkDataplaneDeviceOptions, splitOptions, workerCount } from "./dataplane-options.ts";
import { VIRTIO_ID_BLOCK } from "./device.ts";
import { openBlk } from "./open.ts";
import { engineLimits } from "./runtime-device.ts";

/** How a queue stopped at the last quiesce. */
export interface QueueStop extends StopResult {
  readonly queue: number;
}

/** Counters of every running queue, from its runtime. */
export interface BlkDataplaneStats {
  readonly queues: readonly QueueStats[];
}

/**
 * A virtio-blk device for {@link virtio-ts!VirtioDevice | VirtioDevice}
 * whose queues run on dataplane runtimes. Create it with
 * {@link BlkDataplaneDevice.create}.
 *
 * @example
 * ```ts
 * const blk = await BlkDataplaneDevice.create({
 *   backing: { kind: "file", path: "disk.img" }, numQueues: 2,
 *   threads: nodeThreadHost(), workerModule: DATAPLANE_WORKER,
 *   binding: inprocDataplaneBinding(shared.registers),
 * });
 * const device = new VirtioDevice(blk, { memory });
 * await new InprocDeviceTransport(shared.registers, device).run({ wait: "async" });
 * await blk.dispose();
 * ```
 */
export class BlkDataplaneDevice implements VirtioDeviceBackend {
  readonly name = "virtio-blk";
  readonly deviceId = VIRTIO_ID_BLOCK;
  readonly queueMaxSizes: readonly number[];
  readonly features: bigint;
  readonly config: ConfigSpace;
  readonly core: BlkDeviceCore;
  readonly #handle: DataplaneDeviceHandle;
  /** The pool this device started (and ends), or null for a shared one. */
  readonly #ownPool: DataplanePool | null;
  readonly #binding: DataplaneBinding;
  readonly #log: Logger;
  #activation = 0;
  #ctx: ActivationContext | null = null;
  /** Queues started by the current activation. */
  #started: number[] = [];
  #lastStops: readonly QueueStop[] = [];
  #disposed: Promise<void> | null = null;

  private constructor(
    core: BlkDeviceCore,
    handle: DataplaneDeviceHandle,
    ownPool: DataplanePool | null,
    o: BlkDataplaneDeviceOptions,
  ) {
    this.core = core;
    this.features = core.features;
    this.config = core.config;
    this.queueMaxSizes = Array.from({ length: core.numQueues }, () => o.queueSize ?? 256);
    this.#handle = handle;
    this.#ownPool = ownPool;
    this.#binding = o.binding;
    this.#log = o.logger ?? consoleLogger;
  }

  /**
   * Opens the disk in every runtime the device's queues are placed on
   * (starting the runtimes first unless a pool is given). Resolves once all
   * are ready.
   *
   * @throws {RangeError} / {TypeError} for bad options (at once).
   * @throws the first open error, e.g. VirtioError `BLK_IMAGE` (image
   *   missing, size not a multiple of the block size, read-only file opened
   *   for writing); runtimes started for the device are ended then.
   */
  static async create(o: BlkDataplaneDeviceOptions): Promise<BlkDataplaneDevice> {
    const { parts, config } = splitOptions(o);
    const runtimes = workerCount(parts, config);
    const logger = parts.logger ?? consoleLogger;
    const ownPool =
      parts.pool === undefined
        ? await DataplanePool.start({
            host: parts.threads!,
            module: parts.workerModule!,
            runtimes,
            ...(parts.timeoutMs === undefined ? {} : { timeoutMs: parts.timeoutMs }),
            trace: parts.trace === true,
            logger,
          })
        : null;
    let device: BlkDataplaneDevice | null = null;
    const early: DeviceEvent[] = [];
    const onEvent = (ev: DeviceEvent): void => {
      if (device === null) early.push(ev);
      else device.#onEvent(ev);
    };
    try {
      const { handle, core } = await openBlk({
        pool: parts.pool ?? ownPool!,
        backing: parts.backing,
        config,
        logger,
        onEvent,
        ...engineLimits(parts),
      });
      device = new BlkDataplaneDevice(core, handle, ownPool, o);
    } catch (e) {
      await ownPool?.close();
      throw e;
    }
    for (const ev of early) device.#onEvent(ev);
    return device;
  }

  /** The blk view of the configuration and negotiated state (control side). */
  get blkConfig(): BlkDeviceConfig {
    return this.core.blkConfig;
  }

  /** The queues the last quiesce stopped: next available index and requests drained. */
  get lastStops(): readonly QueueStop[] {
    return this.#lastStops;
  }

  /** Number of runtimes the device's queues run on. */
  get workerCount(): number {
    return this.#handle.runtimes.length;
  }

  /** The runtime that runs queue `index`. */
  workerOf(index: number): number {
    return this.#handle.runtimeOf(index);
  }

  /** FEATURES_OK: record the features (the driver may read `writeback` from now on). */
  validateFeatures(features: bigint): boolean {
    this.core.negotiate(features);
    return true;
  }

  /** `writeback` only (with CONFIG_WCE); the new mode is shared before this returns. */
  writeConfig(offset: number, data: Uint8Array, config: ConfigSpace): void {
    this.core.writeConfig(offset, data, config);
  }

  /** DRIVER_OK: memory to every runtime, then each ready queue started on its runtime. */
  async activate(ctx: ActivationContext): Promise<void> {
    const activation = ++this.#activation;
    this.#ctx = ctx;
    this.core.negotiate(ctx.features);
    await this.#handle.setMemory(this.#binding.exportMemory(ctx.memory));
    const starts = ctx.queues.flatMap((q, queue) => {
      if (q === null) return [];
      this.#started.push(queue);
      const ring = { ...pick(q), features: ctx.features, base: q.vringBase };
      const bells = this.#binding.queueDoorbells(queue);
      return [this.#handle.startQueue(queue, activation, ring, bells)];
    });
    try {
      await Promise.all(starts);
    } catch (e) {
      // The framework makes the device broken; the queues that did start must stop consuming too.
      this.#handle.halt();
      throw e;
    }
  }

  /**
   * Reset: stops every started queue; resolves once each runtime completed
   * its in-flight requests into the used ring and acknowledged.
   */
  async quiesce(): Promise<void> {
    const queues = this.#started.splice(0);
    const results = await Promise.allSettled(queues.map((q) => this.#handle.stopQueue(q)));
    this.#lastStops = results.flatMap((r, i) =>
      r.status === "fulfilled" ? [{ queue: queues[i]!, ...r.value }] : [],
    );
    results.forEach((r, i) => {
      if (r.status === "fulfilled") return;
      // A queue whose start failed is not running: nothing to stop. Anything else: the runtime is unusable.
      if (r.reason instanceof RangeError) return;
      const q = queues[i]!;
      this.#log.error(`virtio-blk vq ${q}: stop failed: ${errorText(r.reason)}`, { queue: q });
      void this.#handle.terminateRuntimeOf(q);
    });
  }

  /** Forget the activation; the cache mode returns to its initial value. */
  reset(): void {
    this.#ctx = null;
    this.core.reset();
  }

  /**
   * Changes the disk size: every runtime resizes its disk (the first one
   * truncates the file), then the capacity; the framework bumps the config
   * generation and notifies.
   *
   * @throws {RangeError} for a size that is not a multiple of the block size.
   * @throws {TypeError} if the disk cannot be resized (e.g. shared memory, read-only).
   */
  async resize(capacityBytes: number): Promise<void> {
    this.core.blkConfig.checkCapacity(capacityBytes);
    await this.#handle.control("resize", capacityBytes);
    this.core.resized(capacityBytes);
  }

  /** Counters of every running queue. */
  async stats(): Promise<BlkDataplaneStats> {
    return { queues: await this.#handle.stats() };
  }

  /**
   * Stops every queue, closes the disks and ends the runtimes it started
   * (bounded). Call after the device is reset or no longer served. Idempotent.
   */
  dispose(): Promise<void> {
    this.#disposed ??= this.#dispose();
    return this.#disposed;
  }

  async #dispose(): Promise<void> {
    this.#ctx = null;
    await this.quiesce();
    await this.#handle.close().catch(() => {});
    await this.#ownPool?.close();
  }

  #onEvent(ev: DeviceEvent): void {
    if (ev.type === "broken") {
      if (ev.activation !== this.#activation) return;
      this.#broken(toVirtioError(ev.error));
      return;
    }
    this.#log.error(`virtio-blk dataplane worker ${ev.runtime} failed: ${errorText(ev.error)}`);
    this.#broken(
      new VirtioError(
        ErrorCode.DEVICE_BROKEN,
        `dataplane worker ${ev.runtime} failed: ${ev.error.message}`,
        { worker: ev.runtime },
      ),
    );
  }

  /** A runtime found the device broken: halt the others, tell the framework (NEEDS_RESET, config change). */
  #broken(err: VirtioError): void {
    const ctx = this.#ctx;
    if (ctx === null) return;
    this.#handle.halt();
    ctx.markBroken(err);
  }
}

/** The ring fields of a ready queue. */
function pick(q: { size: number; descAddr: number; availAddr: number; usedAddr: number }) {
  return { size: q.size, descAddr: q.descAddr, availAddr: q.availAddr, usedAddr: q.usedAddr };
}

function toVirtioError(e: Error): VirtioError {
  return e instanceof VirtioError ? e : new VirtioError(ErrorCode.DEVICE_BROKEN, e.message);
}

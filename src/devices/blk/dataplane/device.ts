/**
 * virtio-blk with its queues on dataplane workers: the device-framework
 * adapter on the control thread. VIRTIO 1.2 §5.2 (Block Device), §2.4
 * (reset), §2.5 (config space; a capacity change is a config change) and
 * docs/conformance.md "Lifecycle" and "Ring violations".
 *
 * The control thread keeps what the driver reads and negotiates (features,
 * config space, status: {@link BlkDeviceConfig} under a VirtioDevice); the
 * workers do all queue processing, never this thread:
 *
 * - activate (DRIVER_OK): guest memory is described to every worker, then
 *   each ready queue is started on its worker (one worker per queue, or
 *   `ioThreads` workers with queue q on worker q mod n);
 * - kicks go from the driver straight to the worker (the binding's
 *   doorbells); `queueNotify` on this thread has nothing to do;
 * - quiesce (reset): every started queue is stopped; a worker stops popping,
 *   completes its in-flight requests into the used ring and only then
 *   acknowledges, after which it writes nothing to guest memory;
 * - a ring violation in a worker halts every worker and makes the device
 *   broken here (DEVICE_NEEDS_RESET and a configuration change notification);
 * - the cache mode (`writeback`, written by the driver) is a shared word
 *   stored before the config write is acknowledged (./cache-mode.ts).
 *
 * The control thread must keep its event loop turning (the in-process
 * device loop in `wait: "async"` mode): worker reports arrive as messages.
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../../../errors.ts";
import type { ActivationContext, VirtioDeviceBackend } from "../../../device/backend.ts";
import { ConfigSpace } from "../../../device/config-space.ts";
import { BlkConfig, VIRTIO_BLK_F_CONFIG_WCE } from "../../../spec/blk.ts";
import { hasFeature } from "../../../spec/virtio.ts";
import { BlkDeviceConfig } from "../config.ts";
import { VIRTIO_ID_BLOCK } from "../device.ts";
import { type BlkLogger, consoleBlkLogger, errorText } from "../log.ts";
import { CacheModeWriter, createCacheModeBuffer } from "./cache-mode.ts";
import {
  type BlkDataplaneDeviceOptions,
  initMessage,
  splitOptions,
  workerCount,
} from "./device-options.ts";
import { type DataplaneQueueStats, type StopResult, fromWireError } from "./protocol.ts";
import type { DataplaneBinding } from "./seams.ts";
import { DataplaneWorkerHandle, type WorkerEvent } from "./worker-handle.ts";

/** How a queue stopped at the last quiesce. */
export interface QueueStop extends StopResult {
  readonly queue: number;
}

/** Counters of every running queue, from its worker. */
export interface BlkDataplaneStats {
  readonly queues: readonly DataplaneQueueStats[];
}

/**
 * A virtio-blk device for {@link VirtioDevice} whose queues run on
 * dataplane workers. Create it with {@link BlkDataplaneDevice.create}.
 *
 * @example
 * ```ts
 * const blk = await BlkDataplaneDevice.create({
 *   backing: { kind: "file", path: "disk.img" }, numQueues: 2,
 *   threads: nodeThreadHost(), workerModule: BLK_DATAPLANE_WORKER,
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
  /** The blk view of the configuration and negotiated state (control thread). */
  readonly blkConfig: BlkDeviceConfig;
  readonly #workers: DataplaneWorkerHandle[];
  readonly #binding: DataplaneBinding;
  readonly #cacheMode: CacheModeWriter;
  readonly #log: BlkLogger;
  #activation = 0;
  #ctx: ActivationContext | null = null;
  /** Queues started by the current activation. */
  #started: number[] = [];
  #lastStops: readonly QueueStop[] = [];
  #disposed: Promise<void> | null = null;

  private constructor(
    config: BlkDeviceConfig,
    workers: DataplaneWorkerHandle[],
    binding: DataplaneBinding,
    cacheMode: SharedArrayBuffer,
    log: BlkLogger,
    queueSize: number,
  ) {
    this.blkConfig = config;
    this.features = config.offeredFeatures;
    this.config = new ConfigSpace(config.configBytes());
    this.queueMaxSizes = Array.from({ length: config.numQueues }, () => queueSize);
    this.#workers = workers;
    this.#binding = binding;
    this.#cacheMode = new CacheModeWriter(cacheMode);
    this.#log = log;
    this.#syncCacheMode();
  }

  /**
   * Starts the workers; each opens the disk. Resolves once all are ready.
   *
   * @throws {RangeError} / {TypeError} for bad options (at once).
   * @throws the first worker's open error, e.g. VirtioError `BLK_IMAGE`
   *   (image missing, size not a multiple of the block size, read-only file
   *   opened for writing); every worker is terminated then.
   */
  static async create(o: BlkDataplaneDeviceOptions): Promise<BlkDataplaneDevice> {
    const { parts, config } = splitOptions(o);
    const nWorkers = workerCount(parts, config);
    const log = parts.logger ?? consoleBlkLogger;
    const cacheMode = createCacheModeBuffer();
    let device: BlkDataplaneDevice | null = null;
    const early: WorkerEvent[] = [];
    const onEvent = (index: number, ev: WorkerEvent): void => {
      if (device !== null) device.#onEvent(index, ev);
      else if (ev.type === "log") forwardLog(log, ev);
      else early.push(ev);
    };
    const spawned = await Promise.allSettled(
      Array.from({ length: nWorkers }, (_, worker) =>
        DataplaneWorkerHandle.spawn({
          host: parts.threads,
          module: parts.workerModule,
          init: initMessage(worker, parts, config, cacheMode),
          timeoutMs: parts.timeoutMs ?? 30_000,
          onEvent,
        }),
      ),
    );
    const failure = spawned.find((s) => s.status === "rejected");
    const ok = spawned.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
    if (failure !== undefined) {
      await Promise.all(ok.map((s) => s.handle.terminate()));
      throw failure.reason;
    }
    const first = ok[0]!.ready;
    if (ok.some((s) => s.ready.size !== first.size || s.ready.readOnly !== first.readOnly)) {
      await Promise.all(ok.map((s) => s.handle.terminate()));
      throw new Error("dataplane workers opened disks of different sizes or modes");
    }
    const blkConfig = new BlkDeviceConfig({
      ...config,
      capacityBytes: first.size,
      readOnly: first.readOnly,
    });
    device = new BlkDataplaneDevice(
      blkConfig,
      ok.map((s) => s.handle),
      parts.binding,
      cacheMode,
      log,
      config.queueSize ?? 256,
    );
    for (const ev of early) device.#onEvent(0, ev);
    return device;
  }

  /** The queues the last quiesce stopped: next available index and requests drained. */
  get lastStops(): readonly QueueStop[] {
    return this.#lastStops;
  }

  /** Number of dataplane workers. */
  get workerCount(): number {
    return this.#workers.length;
  }

  /** The worker that runs queue `index`. */
  workerOf(index: number): number {
    return index % this.#workers.length;
  }

  #worker(index: number): DataplaneWorkerHandle {
    return this.#workers[this.workerOf(index)]!;
  }

  /** FEATURES_OK: record the features (the driver may read `writeback` from now on). */
  validateFeatures(features: bigint): boolean {
    this.blkConfig.negotiate(features);
    this.#storeWriteback(this.config);
    this.#syncCacheMode();
    return true;
  }

  /** `writeback` only (with CONFIG_WCE); the new mode is shared before this returns. */
  writeConfig(offset: number, data: Uint8Array, config: ConfigSpace): void {
    if (!this.blkConfig.writeConfig(offset, data)) return;
    this.#storeWriteback(config);
    this.#syncCacheMode();
  }

  /** DRIVER_OK: memory to every worker, then each ready queue started on its worker. */
  async activate(ctx: ActivationContext): Promise<void> {
    const activation = ++this.#activation;
    this.#ctx = ctx;
    this.blkConfig.negotiate(ctx.features);
    this.#storeWriteback(this.config);
    this.#syncCacheMode();
    const memory = this.#binding.exportMemory(ctx.memory);
    await Promise.all(this.#workers.map((w) => w.request({ type: "memory", memory })));
    const starts: Promise<unknown>[] = [];
    ctx.queues.forEach((q, queue) => {
      if (q === null) return;
      this.#started.push(queue);
      starts.push(
        this.#worker(queue).request({
          type: "start",
          activation,
          queue,
          ring: {
            size: q.size,
            descAddr: q.descAddr,
            availAddr: q.availAddr,
            usedAddr: q.usedAddr,
            nextAvail: q.nextAvail,
          },
          features: ctx.features,
          doorbells: this.#binding.queueDoorbells(queue),
        }),
      );
    });
    try {
      await Promise.all(starts);
    } catch (e) {
      // The framework makes the device broken; the queues that did start must stop consuming too.
      for (const w of this.#workers) w.post({ type: "halt" });
      throw e;
    }
  }

  /**
   * Reset: stops every started queue; resolves once each worker completed
   * its in-flight requests into the used ring and acknowledged.
   */
  async quiesce(): Promise<void> {
    const queues = this.#started.splice(0);
    const results = await Promise.allSettled(
      queues.map((q) => this.#worker(q).request<StopResult>({ type: "stop", queue: q })),
    );
    this.#lastStops = results.flatMap((r, i) =>
      r.status === "fulfilled" ? [{ queue: queues[i]!, ...r.value }] : [],
    );
    results.forEach((r, i) => {
      if (r.status === "fulfilled") return;
      const q = queues[i]!;
      const w = this.#worker(q);
      // A queue whose start failed is not running: nothing to stop. Anything else: the worker is unusable.
      if (w.failed === null && r.reason instanceof RangeError) return;
      this.#log.error(`virtio-blk vq ${q}: stop failed: ${errorText(r.reason)}`);
      void w.terminate();
    });
  }

  /** Forget the activation; the cache mode returns to its initial value. */
  reset(): void {
    this.#ctx = null;
    this.blkConfig.reset();
    this.#storeWriteback(this.config);
    this.#syncCacheMode();
  }

  /**
   * Changes the disk size: every worker resizes its disk (the first one
   * truncates the file), then the capacity; the framework bumps the config
   * generation and notifies.
   *
   * @throws {RangeError} for a size that is not a multiple of the block size.
   * @throws {TypeError} if the disk cannot be resized (e.g. shared memory, read-only).
   */
  async resize(capacityBytes: number): Promise<void> {
    this.blkConfig.checkCapacity(capacityBytes);
    const [first, ...rest] = this.#workers;
    await first!.request({ type: "resize", bytes: capacityBytes });
    await Promise.all(rest.map((w) => w.request({ type: "resize", bytes: capacityBytes })));
    this.blkConfig.resize(capacityBytes);
    const capacity = BigInt(this.blkConfig.capacity);
    this.config.update((dv) => dv.setBigUint64(BlkConfig.capacity, capacity, true));
  }

  /** Counters of every running queue. */
  async stats(): Promise<BlkDataplaneStats> {
    const per = await Promise.all(
      this.#workers.map((w) => w.request<DataplaneQueueStats[]>({ type: "stats" })),
    );
    return { queues: per.flat().sort((a, b) => a.queue - b.queue) };
  }

  /**
   * Stops every queue, closes the disks and ends the workers (bounded).
   * Call after the device is reset or no longer served. Idempotent.
   */
  dispose(): Promise<void> {
    this.#disposed ??= this.#dispose();
    return this.#disposed;
  }

  async #dispose(): Promise<void> {
    this.#ctx = null;
    await this.quiesce();
    await Promise.allSettled(
      this.#workers.filter((w) => w.failed === null).map((w) => w.request({ type: "shutdown" })),
    );
    await Promise.all(this.#workers.map((w) => w.terminate()));
  }

  #onEvent(index: number, ev: WorkerEvent): void {
    switch (ev.type) {
      case "log":
        forwardLog(this.#log, ev);
        return;
      case "broken":
        if (ev.activation !== this.#activation) return;
        this.#broken(toVirtioError(fromWireError(ev.error)));
        return;
      case "failed":
        this.#log.error(`virtio-blk dataplane worker ${index} failed: ${errorText(ev.error)}`);
        this.#broken(
          new VirtioError(
            ErrorCode.DEVICE_BROKEN,
            `dataplane worker ${index} failed: ${ev.error.message}`,
            { worker: index },
          ),
        );
        return;
    }
  }

  /** A worker found the device broken: halt the others, tell the framework (NEEDS_RESET, config change). */
  #broken(err: VirtioError): void {
    const ctx = this.#ctx;
    if (ctx === null) return;
    for (const w of this.#workers) w.post({ type: "halt" });
    ctx.markBroken(err);
  }

  #storeWriteback(config: ConfigSpace): void {
    if (!hasFeature(this.features, VIRTIO_BLK_F_CONFIG_WCE)) return;
    config.store(BlkConfig.writeback, Uint8Array.of(this.blkConfig.writeback ? 1 : 0));
  }

  #syncCacheMode(): void {
    this.#cacheMode.store(this.blkConfig.writeThrough);
  }
}

function forwardLog(log: BlkLogger, ev: Extract<WorkerEvent, { type: "log" }>): void {
  if (ev.level === "trace") log.trace?.(ev.message);
  else log[ev.level](ev.message);
}

function toVirtioError(e: Error): VirtioError {
  return e instanceof VirtioError ? e : new VirtioError(ErrorCode.DEVICE_BROKEN, e.message);
}

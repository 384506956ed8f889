/**
 * virtio-blk as a device type of the device framework, with its queues on
 * the framework's own thread: {@link BlkDeviceCore} for features and config
 * space, {@link BlkRuntimeDevice} for one engine per ready queue. VIRTIO 1.2
 * §5.2 (Block Device), §2.4 (reset), §2.5 (config space; a capacity change
 * sends a configuration change notification). Queues on dataplane runtimes
 * instead: ./dataplane-device.ts.
 *
 * @module
 */
import { nextTask } from "../../dataplane/schedule.ts";
import type { ActivationContext, VirtioDeviceBackend } from "../../device/backend.ts";
import type { ConfigSpace } from "../../device/config-space.ts";
import { consoleLogger, type Logger } from "../../log.ts";
import type { BlkBacking } from "./backing.ts";
import type { BlkDeviceConfig, BlkDeviceOptions } from "./config.ts";
import type { BlkDeviceCore } from "./core.ts";
import type { BlkQueueEngine } from "./queue-engine.ts";
import { type BlkRuntimeDevice, blkOnBacking } from "./runtime-device.ts";

/** §5.2.1: the block device's id. */
export const VIRTIO_ID_BLOCK = 2;

/** Options for {@link BlkDevice}: the config options (capacity comes from the backing store) and the engine's. */
export interface BlkDeviceBackendOptions extends Omit<BlkDeviceOptions, "capacityBytes"> {
  readonly backing: BlkBacking;
  /** Per queue (default 32). */
  readonly maxInFlight?: number;
  readonly logger?: Logger;
}

/**
 * A virtio-blk device for {@link virtio-ts!VirtioDevice | VirtioDevice}.
 *
 * @example
 * ```ts
 * const blk = new BlkDevice({ backing: new MemoryBacking(64 << 20), serial: "disk0" });
 * const dev = new VirtioDevice(blk, { memory, notifier });
 * ```
 */
export class BlkDevice implements VirtioDeviceBackend {
  readonly name = "virtio-blk";
  readonly deviceId = VIRTIO_ID_BLOCK;
  readonly queueMaxSizes: readonly number[];
  readonly features: bigint;
  readonly config: ConfigSpace;
  readonly core: BlkDeviceCore;
  readonly backing: BlkBacking;
  readonly #queues: BlkRuntimeDevice;
  readonly #log: Logger;
  #engines: (BlkQueueEngine | null)[] = [];

  constructor(o: BlkDeviceBackendOptions) {
    const { logger, ...rest } = o;
    const { core, device } = blkOnBacking(rest);
    this.core = core;
    this.backing = o.backing;
    this.features = core.features;
    this.config = core.config;
    this.queueMaxSizes = Array.from({ length: core.numQueues }, () => o.queueSize ?? 256);
    this.#log = logger ?? consoleLogger;
    this.#queues = device;
  }

  /** The blk view of the configuration and negotiated state. */
  get blkConfig(): BlkDeviceConfig {
    return this.core.blkConfig;
  }

  /** The queue engines of the current activation (null for queues not ready). */
  get engines(): readonly (BlkQueueEngine | null)[] {
    return this.#engines;
  }

  /** FEATURES_OK: record the features (the driver may read `writeback` from now on). */
  validateFeatures(features: bigint): boolean {
    this.core.negotiate(features);
    return true;
  }

  writeConfig(offset: number, data: Uint8Array, config: ConfigSpace): void {
    this.core.writeConfig(offset, data, config);
  }

  activate(ctx: ActivationContext): void {
    this.core.negotiate(ctx.features);
    const onBroken = (err: Parameters<ActivationContext["markBroken"]>[0]): void => {
      for (const e of this.#engines) e?.halt();
      ctx.markBroken(err);
    };
    this.#engines = ctx.queues.map((queue, index) =>
      queue === null
        ? null
        : (this.#queues.startQueue({
            index,
            queue,
            memory: ctx.memory,
            features: ctx.features,
            logger: this.#log,
            schedule: nextTask,
            notify: () => void ctx.signalUsed(index),
            signalUsed: () => ctx.signalUsed(index),
            markBroken: onBroken,
            memoryFault: () => null, // in-process memory cannot be pulled away
          }) as BlkQueueEngine),
    );
    // Requests made available before DRIVER_OK (an early kick) are picked up now.
    for (const e of this.#engines) e?.kick();
  }

  queueNotify(index: number): void {
    this.#engines[index]?.kick();
  }

  /**
   * Reset: stop popping, complete in-flight I/O into the used rings. Nothing
   * in flight: done at once (no promise), so the reset completes before the
   * status write returns.
   */
  quiesce(): void | Promise<void> {
    const stops = this.#engines.flatMap((e) => (e === null ? [] : [e.stop()]));
    if (this.#engines.every((e) => e === null || e.stopped)) return;
    return Promise.all(stops).then(() => {});
  }

  reset(): void {
    this.#engines = [];
    this.core.reset();
  }

  /**
   * Changes the disk size: resizes the backing store (if it can), then the
   * capacity; the framework bumps the config generation and notifies.
   */
  async resize(capacityBytes: number): Promise<void> {
    this.core.blkConfig.checkCapacity(capacityBytes);
    await this.#queues.control("resize", capacityBytes);
    this.core.resized(capacityBytes);
  }
}

/**
 * virtio-blk as a device type of the device framework: config space, feature
 * checks, one {@link BlkQueueEngine} per ready queue, quiesce for reset.
 * VIRTIO 1.2 §5.2 (Block Device), §2.4 (reset), §2.5 (config space, a
 * capacity change sends a configuration change notification).
 *
 * This runs the queues on the thread that owns the VirtioDevice. A
 * dataplane worker would run the same engines in a worker instead.
 *
 * @module
 */
import type { VirtioError } from "../../errors.ts";
import type { ActivationContext, VirtioDeviceBackend } from "../../device/backend.ts";
import { ConfigSpace } from "../../device/config-space.ts";
import { BlkConfig, VIRTIO_BLK_F_CONFIG_WCE } from "../../spec/blk.ts";
import { hasFeature } from "../../spec/virtio.ts";
import type { BlkBacking } from "./backing.ts";
import { BlkDeviceConfig, type BlkDeviceOptions } from "./config.ts";
import { type BlkLogger, consoleBlkLogger } from "./log.ts";
import { BlkQueueEngine } from "./queue-engine.ts";

/** §5.2.1: the block device's id. */
export const VIRTIO_ID_BLOCK = 2;

/** Options for {@link BlkDevice}: the config options (capacity comes from the backing store) and the engine's. */
export interface BlkDeviceBackendOptions extends Omit<BlkDeviceOptions, "capacityBytes"> {
  readonly backing: BlkBacking;
  /** Per queue (default 32). */
  readonly maxInFlight?: number;
  readonly logger?: BlkLogger;
}

/**
 * A virtio-blk device for {@link VirtioDevice}.
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
  /** The blk view of the configuration and negotiated state. */
  readonly blkConfig: BlkDeviceConfig;
  readonly backing: BlkBacking;
  readonly #maxInFlight: number | undefined;
  readonly #log: BlkLogger;
  #engines: (BlkQueueEngine | null)[] = [];

  constructor(o: BlkDeviceBackendOptions) {
    this.backing = o.backing;
    this.blkConfig = new BlkDeviceConfig({
      ...o,
      capacityBytes: o.backing.size,
      readOnly: o.readOnly ?? o.backing.readOnly,
    });
    if (o.backing.readOnly && !this.blkConfig.readOnly)
      throw new RangeError("a read-only backing store needs a read-only device");
    this.features = this.blkConfig.offeredFeatures;
    this.config = new ConfigSpace(this.blkConfig.configBytes());
    this.queueMaxSizes = Array.from({ length: this.blkConfig.numQueues }, () => o.queueSize ?? 256);
    this.#maxInFlight = o.maxInFlight;
    this.#log = o.logger ?? consoleBlkLogger;
  }

  /** The queue engines of the current activation (null for queues not ready). */
  get engines(): readonly (BlkQueueEngine | null)[] {
    return this.#engines;
  }

  /** FEATURES_OK: record the features (the driver may read `writeback` from now on). */
  validateFeatures(features: bigint): boolean {
    this.blkConfig.negotiate(features);
    this.#storeWriteback();
    return true;
  }

  writeConfig(offset: number, data: Uint8Array, config: ConfigSpace): void {
    if (this.blkConfig.writeConfig(offset, data)) this.#storeWriteback(config);
  }

  #storeWriteback(config: ConfigSpace = this.config): void {
    if (!hasFeature(this.features, VIRTIO_BLK_F_CONFIG_WCE)) return;
    config.store(BlkConfig.writeback, Uint8Array.of(this.blkConfig.writeback ? 1 : 0));
  }

  activate(ctx: ActivationContext): void {
    this.blkConfig.negotiate(ctx.features);
    this.#storeWriteback();
    const onBroken = (err: VirtioError): void => {
      for (const e of this.#engines) e?.halt();
      ctx.markBroken(err);
    };
    this.#engines = ctx.queues.map((q, i) =>
      q === null
        ? null
        : new BlkQueueEngine({
            queue: q,
            queueIndex: i,
            backing: this.backing,
            policy: this.blkConfig,
            maxInFlight: this.#maxInFlight,
            signalUsed: () => void ctx.signalUsed(i),
            onBroken,
            logger: this.#log,
          }),
    );
    // Requests made available before DRIVER_OK (an early kick) are picked up now.
    for (const e of this.#engines) e?.kick();
  }

  queueNotify(index: number): void {
    this.#engines[index]?.kick();
  }

  /** Reset: stop popping, complete in-flight I/O into the used rings. */
  async quiesce(): Promise<void> {
    const stops: Promise<void>[] = [];
    for (const e of this.#engines) if (e !== null) stops.push(e.stop());
    await Promise.all(stops);
  }

  reset(): void {
    this.#engines = [];
    this.blkConfig.reset();
    this.#storeWriteback();
  }

  /**
   * Changes the disk size: resizes the backing store (if it can), then the
   * capacity; the framework bumps the config generation and notifies.
   */
  async resize(capacityBytes: number): Promise<void> {
    this.blkConfig.checkCapacity(capacityBytes);
    if (capacityBytes !== this.backing.size) {
      if (this.backing.resize === undefined)
        throw new TypeError("this backing store cannot be resized");
      await this.backing.resize(capacityBytes);
    }
    this.blkConfig.resize(capacityBytes);
    const capacity = BigInt(this.blkConfig.capacity);
    this.config.update((dv) => dv.setBigUint64(BlkConfig.capacity, capacity, true));
  }
}

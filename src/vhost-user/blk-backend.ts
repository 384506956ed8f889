/**
 * virtio-blk served over vhost-user: {@link BlkDeviceConfig} for features and
 * the config space, one {@link BlkQueueEngine} per started ring. VIRTIO 1.2
 * §5.2 (Block Device), §5.2.4 (only `writeback` is driver-writable);
 * qemu/qemu docs/interop/vhost-user.rst VHOST_USER_SET_CONFIG ("back-ends
 * MUST NOT accept SET_CONFIG for read-only configuration space fields unless
 * the live migration bit is set" — this back-end does not migrate, so it
 * accepts `writeback` alone).
 *
 * The device state (cache mode, negotiated features) outlives a connection:
 * after a front-end reconnect the guest driver still runs with it.
 *
 * @module
 */
import { ConfigSpace } from "../device/config-space.ts";
import type { BlkBacking } from "../devices/blk/backing.ts";
import { BlkDeviceConfig, type BlkDeviceOptions } from "../devices/blk/config.ts";
import { type BlkLogger, consoleBlkLogger } from "../devices/blk/log.ts";
import { BlkQueueEngine } from "../devices/blk/queue-engine.ts";
import type { DeviceQueue } from "../ring/device-queue.ts";
import { BlkConfig, VIRTIO_BLK_F_CONFIG_WCE } from "../spec/blk.ts";
import { hasFeature } from "../spec/virtio.ts";
import type { VhostUserBackend, VhostUserQueueContext } from "./backend.ts";

/** Options of {@link VhostUserBlkBackend}: the blk config options (capacity comes from the backing store) and the engine's. */
export interface VhostUserBlkOptions extends Omit<BlkDeviceOptions, "capacityBytes"> {
  readonly backing: BlkBacking;
  /** Requests in flight per queue (default 32). */
  readonly maxInFlight?: number;
  readonly logger?: BlkLogger;
}

/**
 * A virtio-blk device for a vhost-user connection.
 *
 * @example
 * ```ts
 * const blk = new VhostUserBlkBackend({ backing, numQueues: 2, queueSize: 128 });
 * new VhostUserConnection(socket, { backend: blk, dataplane: new LocalDataplane({ backend: blk, mapper, eventFds }), fds: eventFds });
 * ```
 */
export class VhostUserBlkBackend implements VhostUserBackend {
  readonly name = "virtio-blk";
  readonly numQueues: number;
  readonly features: bigint;
  readonly config: ConfigSpace;
  /** The blk view of the configuration and negotiated state. */
  readonly blkConfig: BlkDeviceConfig;
  readonly backing: BlkBacking;
  readonly #maxInFlight: number | undefined;
  readonly #log: BlkLogger;
  readonly #engines = new Map<number, BlkQueueEngine>();

  constructor(o: VhostUserBlkOptions) {
    this.backing = o.backing;
    this.blkConfig = new BlkDeviceConfig({
      ...o,
      capacityBytes: o.backing.size,
      readOnly: o.readOnly ?? o.backing.readOnly,
    });
    if (o.backing.readOnly && !this.blkConfig.readOnly)
      throw new RangeError("a read-only backing store needs a read-only device");
    this.numQueues = this.blkConfig.numQueues;
    this.features = this.blkConfig.offeredFeatures;
    this.config = new ConfigSpace(this.blkConfig.configBytes());
    this.#maxInFlight = o.maxInFlight;
    this.#log = o.logger ?? consoleBlkLogger;
  }

  /** The engine of a started ring (for stats and tests). */
  engine(index: number): BlkQueueEngine | undefined {
    return this.#engines.get(index);
  }

  /** `writeback` only, and only with VIRTIO_BLK_F_CONFIG_WCE negotiated. */
  writeConfig(offset: number, data: Uint8Array, _flags: number, config: ConfigSpace): boolean {
    if (offset !== BlkConfig.writeback || data.length !== 1) return false;
    if (!this.blkConfig.negotiated(VIRTIO_BLK_F_CONFIG_WCE)) return false;
    this.blkConfig.writeConfig(offset, data);
    this.#storeWriteback(config);
    return true;
  }

  startQueue(index: number, queue: DeviceQueue, ctx: VhostUserQueueContext): void {
    if (this.#engines.has(index)) throw new RangeError(`queue ${index} is already started`);
    // Every start follows a SET_FEATURES; all rings of a device share the features.
    this.blkConfig.negotiate(ctx.features);
    this.#storeWriteback(this.config);
    this.#engines.set(
      index,
      new BlkQueueEngine({
        queue,
        queueIndex: index,
        backing: this.backing,
        policy: this.blkConfig,
        ...(this.#maxInFlight === undefined ? {} : { maxInFlight: this.#maxInFlight }),
        signalUsed: () => void ctx.signalUsed(),
        onBroken: (err) => ctx.markBroken(err),
        logger: this.#log,
      }),
    );
  }

  queueNotify(index: number): void {
    this.#engines.get(index)?.kick();
  }

  async stopQueue(index: number): Promise<void> {
    const engine = this.#engines.get(index);
    if (engine === undefined) return;
    try {
      await engine.stop();
    } finally {
      this.#engines.delete(index);
    }
  }

  /** Closes the backing store. */
  async close(): Promise<void> {
    await this.backing.close();
  }

  reset(): void {
    this.blkConfig.reset();
    this.#storeWriteback(this.config);
  }

  #storeWriteback(config: ConfigSpace): void {
    if (!hasFeature(this.features, VIRTIO_BLK_F_CONFIG_WCE)) return;
    config.store(BlkConfig.writeback, Uint8Array.of(this.blkConfig.writeback ? 1 : 0));
  }
}

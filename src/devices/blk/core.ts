/**
 * The control side of one virtio-blk device, shared by every way of serving
 * it (the device framework on this thread or over dataplane runtimes, and
 * vhost-user): the configuration and negotiated state, the config space as
 * the driver reads it, and the cache-mode word the dataplane reads per
 * request. VIRTIO 1.2 §5.2.4 (config layout; only `writeback` is
 * driver-writable, with VIRTIO_BLK_F_CONFIG_WCE), §5.2.5 (feature
 * negotiation), §5.2.6.2 (cache mode: write-through unless `writeback`).
 *
 * @module
 */
import { ConfigSpace } from "../../device/config-space.ts";
import { BlkConfig, VIRTIO_BLK_F_CONFIG_WCE } from "../../spec/blk.ts";
import { hasFeature } from "../../spec/virtio.ts";
import { CacheModeWriter, createCacheModeBuffer } from "./cache-mode.ts";
import { BlkDeviceConfig, type BlkDeviceOptions } from "./config.ts";

/**
 * A virtio-blk device's control state. Every change the driver makes (its
 * features, a `writeback` write, a reset) is stored into the config space
 * and published to the cache-mode word before the call returns.
 */
export class BlkDeviceCore {
  /** The blk view of the configuration and negotiated state. */
  readonly blkConfig: BlkDeviceConfig;
  /** The config space as the driver reads it. */
  readonly config: ConfigSpace;
  /** Offered feature bits. */
  readonly features: bigint;
  /** The cache-mode word (./cache-mode.ts) the dataplane reads; write-through until told otherwise. */
  readonly cacheMode: SharedArrayBuffer;
  readonly #cacheMode: CacheModeWriter;

  /**
   * @param cacheMode the word to publish the cache mode to (a fresh one when absent).
   * @throws {RangeError} for a bad configuration (see BlkDeviceConfig).
   */
  constructor(options: BlkDeviceOptions, cacheMode: SharedArrayBuffer = createCacheModeBuffer()) {
    this.cacheMode = cacheMode;
    this.#cacheMode = new CacheModeWriter(cacheMode);
    this.blkConfig = new BlkDeviceConfig(options);
    this.features = this.blkConfig.offeredFeatures;
    this.config = new ConfigSpace(this.blkConfig.configBytes());
    this.#publish(this.config);
  }

  get numQueues(): number {
    return this.blkConfig.numQueues;
  }

  /** FEATURES_OK / DRIVER_OK / a vhost-user ring start: record the driver's features. */
  negotiate(features: bigint): void {
    this.blkConfig.negotiate(features);
    this.#publish(this.config);
  }

  /**
   * A driver write of config space (only `writeback` is writable, with
   * CONFIG_WCE negotiated); `config` is the space the write goes to.
   */
  writeConfig(offset: number, data: Uint8Array, config: ConfigSpace = this.config): void {
    if (this.blkConfig.writeConfig(offset, data)) this.#publish(config);
  }

  /**
   * True if a write of `data` at `offset` touches exactly the `writeback`
   * byte and CONFIG_WCE was negotiated (vhost-user SET_CONFIG: "back-ends
   * MUST NOT accept SET_CONFIG for read-only configuration space fields").
   */
  acceptsConfigWrite(offset: number, data: Uint8Array): boolean {
    return (
      offset === BlkConfig.writeback &&
      data.length === 1 &&
      this.blkConfig.negotiated(VIRTIO_BLK_F_CONFIG_WCE)
    );
  }

  /** Device reset: no features, the cache mode back to its initial value. */
  reset(): void {
    this.blkConfig.reset();
    this.#publish(this.config);
  }

  /** The disk's new size is in place: capacity in the config space (the caller bumps the generation). */
  resized(capacityBytes: number): void {
    this.blkConfig.resize(capacityBytes);
    const capacity = BigInt(this.blkConfig.capacity);
    this.config.update((dv) => dv.setBigUint64(BlkConfig.capacity, capacity, true));
  }

  /** Stores `writeback` (with CONFIG_WCE offered) and publishes the cache mode. */
  #publish(config: ConfigSpace): void {
    if (hasFeature(this.features, VIRTIO_BLK_F_CONFIG_WCE))
      config.store(BlkConfig.writeback, Uint8Array.of(this.blkConfig.writeback ? 1 : 0));
    this.#cacheMode.store(this.blkConfig.writeThrough);
  }
}

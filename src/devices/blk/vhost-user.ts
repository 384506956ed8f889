/**
 * virtio-blk served over vhost-user: the control side answers from a
 * {@link BlkDeviceCore} (features, config space, the `writeback` write
 * shared with the dataplane through the cache-mode word), the queues run on
 * the dataplane as {@link BlkRuntimeDevice} engines. VIRTIO 1.2 §5.2 (Block
 * Device), §5.2.4 (only `writeback` is driver-writable);
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
import type { ConfigSpace } from "../../device/config-space.ts";
import type { DataplaneDeviceHandle } from "../../dataplane/device-handle.ts";
import type { DataplanePool } from "../../dataplane/pool.ts";
import type { Logger } from "../../log.ts";
import type { VhostUserBackend } from "../../vhost-user/backend.ts";
import type { BackingSpec } from "./backing-spec.ts";
import type { BlkDeviceConfig } from "./config.ts";
import { BlkDeviceCore } from "./core.ts";
import { openBlk } from "./open.ts";
import {
  type BlkOnBackingOptions,
  type BlkRuntimeDevice,
  blkOnBacking,
  engineLimits,
  withoutLimits,
  type BlkDataplaneConfig,
  type BlkDeviceInfo,
  type BlkEngineLimits,
} from "./runtime-device.ts";

/** A virtio-blk device's control side for vhost-user connections. */
export class VhostUserBlkBackend implements VhostUserBackend {
  readonly name = "virtio-blk";
  readonly core: BlkDeviceCore;

  constructor(core: BlkDeviceCore) {
    this.core = core;
  }

  get numQueues(): number {
    return this.core.numQueues;
  }

  get features(): bigint {
    return this.core.features;
  }

  get config(): ConfigSpace {
    return this.core.config;
  }

  /** The blk view of the configuration and negotiated state. */
  get blkConfig(): BlkDeviceConfig {
    return this.core.blkConfig;
  }

  negotiate(features: bigint): void {
    this.core.negotiate(features);
  }

  /** `writeback` only, and only with VIRTIO_BLK_F_CONFIG_WCE negotiated. */
  writeConfig(offset: number, data: Uint8Array, _flags: number, config: ConfigSpace): boolean {
    if (!this.core.acceptsConfigWrite(offset, data)) return false;
    this.core.writeConfig(offset, data, config);
    return true;
  }

  reset(): void {
    this.core.reset();
  }

  /**
   * A device over a backing store object with its queues on the calling
   * thread: the control side and the dataplane half (open the latter in a
   * runtime on this thread).
   *
   * @throws {RangeError} for a bad configuration.
   */
  static withBacking(o: BlkOnBackingOptions): {
    backend: VhostUserBlkBackend;
    device: BlkRuntimeDevice;
  } {
    const { core, device } = blkOnBacking(o);
    return { backend: new VhostUserBlkBackend(core), device };
  }
}

/** Options of {@link openVhostUserBlk}. */
export interface OpenVhostUserBlkOptions extends BlkDataplaneConfig, BlkEngineLimits {
  /** Where the queues run (worker threads, or the calling thread). */
  readonly pool: DataplanePool;
  /** The disk each hosting runtime opens. */
  readonly backing: BackingSpec;
  /** Every queue on one runtime, so the disk is opened once (default false). */
  readonly oneRuntime?: boolean;
  /** The device's log lines. */
  readonly logger?: Logger;
}

/** A virtio-blk device ready to serve: its control side and its dataplane half in a pool. */
export interface OpenedVhostUserBlk {
  readonly backend: VhostUserBlkBackend;
  readonly dataplane: DataplaneDeviceHandle;
  /** The disk as the runtimes opened it. */
  readonly info: BlkDeviceInfo;
}

/**
 * Opens the disk in the runtimes the device's queues are placed on and
 * builds the control side from what they found.
 *
 * @throws {RangeError} for a bad configuration (at once); the first open
 *   error, e.g. VirtioError `BLK_IMAGE`.
 */
export async function openVhostUserBlk(o: OpenVhostUserBlkOptions): Promise<OpenedVhostUserBlk> {
  const { pool, backing, logger, oneRuntime, ...config } = withoutLimits(o);
  const opened = await openBlk({
    pool,
    backing,
    config,
    oneRuntime: oneRuntime ?? false,
    ...(logger === undefined ? {} : { logger }),
    ...engineLimits(o),
  });
  return {
    backend: new VhostUserBlkBackend(opened.core),
    dataplane: opened.handle,
    info: opened.info,
  };
}

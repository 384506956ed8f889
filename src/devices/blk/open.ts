/**
 * Opens a virtio-blk device in a dataplane pool: the disk in every runtime
 * its queues are placed on, then the control core built from what they
 * found (size, read-only), sharing the cache-mode word with them. The one
 * way both adapters (device framework, vhost-user) put blk on the dataplane.
 * VIRTIO 1.2 §5.2.4 (capacity and the RO feature come from the disk).
 *
 * @module
 */
import type { DataplaneDeviceHandle, DeviceEvent } from "../../dataplane/device-handle.ts";
import type { DataplanePool } from "../../dataplane/pool.ts";
import type { Logger } from "../../log.ts";
import type { BackingSpec } from "./backing-spec.ts";
import { createCacheModeBuffer } from "./cache-mode.ts";
import { BlkDeviceConfig } from "./config.ts";
import { BlkDeviceCore } from "./core.ts";
import {
  BLK_DEVICE_KIND,
  type BlkDataplaneConfig,
  type BlkDeviceInfo,
  type BlkDeviceSpec,
  type BlkEngineLimits,
  engineLimits,
} from "./runtime-device.ts";

/** What {@link openBlk} needs. */
export interface OpenBlkOptions extends BlkEngineLimits {
  readonly pool: DataplanePool;
  /** The disk each hosting runtime opens. */
  readonly backing: BackingSpec;
  readonly config: BlkDataplaneConfig;
  /** Every queue on one runtime: the disk is opened once (see OpenDeviceOptions.oneRuntime). */
  readonly oneRuntime?: boolean;
  readonly logger?: Logger;
  /** Broken rings and failed runtimes (default: logged). */
  readonly onEvent?: (event: DeviceEvent) => void;
}

/** An opened blk device: its dataplane half and its control core. */
export interface OpenedBlk {
  readonly handle: DataplaneDeviceHandle;
  readonly core: BlkDeviceCore;
  readonly info: BlkDeviceInfo;
}

/**
 * Opens the device.
 *
 * @throws {RangeError} for a bad configuration (before anything is opened);
 *   the first open error, e.g. VirtioError `BLK_IMAGE`; an Error if the
 *   runtimes found different disks.
 */
export async function openBlk(o: OpenBlkOptions): Promise<OpenedBlk> {
  const queues = new BlkDeviceConfig({ ...o.config, capacityBytes: 0 }).numQueues;
  const cacheMode = createCacheModeBuffer();
  const spec: BlkDeviceSpec = {
    kind: BLK_DEVICE_KIND,
    backing: o.backing,
    config: o.config,
    cacheMode,
    ...engineLimits(o),
  };
  const handle = await o.pool.open(spec, {
    queues,
    oneRuntime: o.oneRuntime ?? false,
    ...(o.logger === undefined ? {} : { logger: o.logger }),
    ...(o.onEvent === undefined ? {} : { onEvent: o.onEvent }),
  });
  const infos = handle.info as BlkDeviceInfo[];
  const info = infos[0]!;
  if (infos.some((i) => i.size !== info.size || i.readOnly !== info.readOnly)) {
    await handle.close();
    throw new Error("dataplane workers opened disks of different sizes or modes");
  }
  const options = { ...o.config, capacityBytes: info.size, readOnly: info.readOnly };
  return { handle, core: new BlkDeviceCore(options, cacheMode), info };
}

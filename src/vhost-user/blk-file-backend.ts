/**
 * A file-backed virtio-blk device for vhost-user, as one async factory: the
 * form a dataplane worker builds its device instance with
 * (`DataplaneWorker.spawn({ backendModule: <this module>, backendExport:
 * "createBackend", backendOptions })`, with the worker's logger as `env`),
 * and the control thread its own.
 * Node-only (opens the image with FileBacking).
 *
 * @module
 */
import { FileBacking } from "../devices/blk/file-backing.ts";
import type { BlkLogger } from "../devices/blk/log.ts";
import { VhostUserBlkBackend, type VhostUserBlkOptions } from "./blk-backend.ts";

/** Structured-cloneable options of {@link createBackend}. */
export interface BlkFileBackendOptions extends Omit<VhostUserBlkOptions, "backing" | "logger"> {
  /** Path of the raw image. */
  readonly imagePath: string;
  /** Open the image with O_DIRECT (default false). */
  readonly direct?: boolean;
}

/**
 * Opens the image and builds the device.
 *
 * @throws {VirtioError} `BLK_IMAGE` if the image cannot be used.
 */
export async function createBackend(
  o: BlkFileBackendOptions,
  env: { readonly logger?: BlkLogger } = {},
): Promise<VhostUserBlkBackend> {
  const logger = env.logger === undefined ? {} : { logger: env.logger };
  const backing = await FileBacking.open(o.imagePath, {
    readOnly: o.readOnly ?? false,
    direct: o.direct ?? false,
    ...(o.logicalBlockSize === undefined ? {} : { logicalBlockSize: o.logicalBlockSize }),
    ...logger,
  });
  try {
    return new VhostUserBlkBackend({ ...o, backing, ...logger });
  } catch (e) {
    await backing.close();
    throw e;
  }
}

/**
 * Opens virtio-blk disks on Node: image files and block devices through
 * {@link FileBacking}, and every portable kind (./backing-spec.ts). VIRTIO
 * 1.2 §5.2.6 (the disk behind the requests). Node-only (FileBacking uses fs and the native addon).
 *
 * @module
 */
import type { BlkBacking } from "./backing.ts";
import {
  type BackingContext,
  type BackingSpec,
  type FileBackingSpec,
  openPortableBacking,
} from "./backing-spec.ts";
import { FileBacking } from "./file-backing.ts";

/**
 * Opens `"file"` specs with {@link FileBacking.open}, the rest with
 * `openPortableBacking`.
 *
 * @throws {VirtioError} `BLK_IMAGE` for an image that cannot be used (see FileBacking.open).
 * @throws {TypeError} for an unknown kind.
 */
export async function openNodeBacking(spec: BackingSpec, ctx: BackingContext): Promise<BlkBacking> {
  if (spec.kind !== "file") return openPortableBacking(spec, ctx);
  const f = spec as FileBackingSpec;
  return FileBacking.open(f.path, {
    readOnly: f.readOnly ?? false,
    direct: f.direct ?? false,
    aio: f.aio ?? "threads",
    logicalBlockSize: ctx.logicalBlockSize,
    format: f.format ?? "auto",
    ...(f.maxIoBytes === undefined ? {} : { maxIoBytes: f.maxIoBytes }),
    ...(f.fallocate === false ? { fallocate: null } : {}),
    logger: ctx.logger,
  });
}

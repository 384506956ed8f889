/**
 * Opens virtio-blk disks on Node: image files and block devices through
 * {@link FileBacking}, NBD exports through {@link NbdBacking}, and every
 * portable kind (./backing-spec.ts). VIRTIO 1.2 §5.2.6 (the disk behind the
 * requests). Node-only (FileBacking uses fs and the native addon).
 *
 * @module
 */
import type { BlkBacking } from "./backing.ts";
import {
  type BackingContext,
  type BackingSpec,
  type FileBackingSpec,
  type NbdBackingSpec,
  openPortableBacking,
} from "./backing-spec.ts";
import { FileBacking } from "./file-backing.ts";
import { NbdBacking } from "./nbd-backing.ts";

function openNbd(n: NbdBackingSpec, ctx: BackingContext): Promise<BlkBacking> {
  return NbdBacking.open(n.uri, {
    logicalBlockSize: ctx.logicalBlockSize,
    logger: ctx.logger,
    readOnly: n.readOnly ?? false,
    fua: n.fua ?? false,
    ...(n.connections === undefined ? {} : { connections: n.connections }),
    ...(n.connectTimeoutMs === undefined ? {} : { connectTimeoutMs: n.connectTimeoutMs }),
    ...(n.requestTimeoutMs === undefined ? {} : { requestTimeoutMs: n.requestTimeoutMs }),
  });
}

/**
 * Opens `"file"` specs with {@link FileBacking.open}, `"nbd"` specs with
 * {@link NbdBacking.open}, the rest with `openPortableBacking`.
 *
 * @throws {VirtioError} `BLK_IMAGE` for an image that cannot be used (see FileBacking.open);
 *   the NBD_* codes for an export that cannot be reached or used (see NbdBacking.open).
 * @throws {TypeError} for an unknown kind.
 */
export async function openNodeBacking(spec: BackingSpec, ctx: BackingContext): Promise<BlkBacking> {
  if (spec.kind === "nbd") return openNbd(spec as NbdBackingSpec, ctx);
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

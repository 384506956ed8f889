/**
 * What `virtio-ts vhost-user-blk` serves as one export's disk: the backing
 * spec for `--image` (a raw file or block device, format-checked unless
 * `--format raw`), `--nbd` (an NBD export; probed once here, so that a
 * server without NBD_FLAG_CAN_MULTI_CONN gets one connection: every queue on
 * one I/O thread) or `--backing` (a store module; every queue on one I/O
 * thread, so its state lives in one place), and the one line a failure to
 * reach it becomes. VIRTIO 1.2 §5.2.6 (the disk behind the requests).
 *
 * @module
 */
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { ErrorCode, isVirtioError } from "../../errors.ts";
import type { BackingSpec } from "../../devices/blk/backing-spec.ts";
import { probeNbd } from "../../devices/blk/nbd-backing.ts";
import { CommandError } from "./command.ts";
import type { ExportSettings } from "./vhost-user-blk-flags.ts";

/** The disk of one export and how its queues are placed. */
export interface DiskPlan {
  readonly backing: BackingSpec;
  /** Every queue on one runtime (the disk opened once). */
  readonly oneRuntime: boolean;
}

/**
 * The backing spec of export `x`.
 *
 * @throws {CommandError} when the NBD server cannot be reached or refuses the export.
 */
export async function diskPlan(x: ExportSettings): Promise<DiskPlan> {
  switch (x.source) {
    case "image":
      return {
        backing: {
          kind: "file",
          path: x.image,
          readOnly: x.readOnly,
          direct: x.direct,
          aio: x.aio,
          format: x.format,
        },
        oneRuntime: false,
      };
    case "nbd": {
      let multi: boolean;
      try {
        multi = (await probeNbd(x.image)).canMultiConn;
      } catch (e) {
        throw diskError(x, e) ?? e;
      }
      return { backing: { kind: "nbd", uri: x.image, readOnly: x.readOnly }, oneRuntime: !multi };
    }
    case "backing":
      return {
        backing: {
          kind: "module",
          url: pathToFileURL(resolve(x.image)).href,
          options: { ...x.backingOptions },
        },
        oneRuntime: true,
      };
  }
}

/** The one-line reason the disk cannot be served, for an error its open threw. */
export function diskError(x: ExportSettings, e: unknown): CommandError | undefined {
  if (isVirtioError(e, ErrorCode.BLK_IMAGE)) {
    const hint = !x.readOnly && /not writable/.test(e.message) ? " (or pass --read-only)" : "";
    return new CommandError(`${e.message}${hint}`);
  }
  if (isVirtioError(e) && e.code.startsWith("VIRTIO_ERR_NBD_"))
    return new CommandError(`nbd ${x.image}: ${e.message}`);
  return undefined;
}

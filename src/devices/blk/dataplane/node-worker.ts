/**
 * The Node side of a virtio-blk dataplane worker: worker_threads, image
 * files through {@link FileBacking}, `setImmediate` scheduling, and the
 * in-process transport's memory and doorbells. Node-only (imports fs through
 * FileBacking, and worker_threads).
 *
 * {@link BLK_DATAPLANE_WORKER} is the module to start; a program that needs
 * another disk kind (or a test that wraps the disk) writes its own entry
 * calling {@link startNodeBlkDataplaneWorker} with overrides.
 *
 * @module
 */
import { nodeParentEndpoint } from "../../../transport/inproc/node-threads.ts";
import type { BlkBacking } from "../backing.ts";
import { FileBacking } from "../file-backing.ts";
import {
  INPROC_DOORBELLS,
  INPROC_MEMORY,
  attachInprocMemory,
  inprocDoorbellOpener,
} from "./inproc-binding.ts";
import type { BackingSpec, FileBackingSpec, SharedMemoryBackingSpec } from "./protocol.ts";
import type { BackingContext } from "./seams.ts";
import { SharedMemoryBacking } from "./shared-memory-backing.ts";
import {
  type BlkDataplaneWorker,
  type DataplaneWorkerEnv,
  serveBlkDataplane,
} from "./worker-runtime.ts";

/** The default worker module (this directory's node-worker-main, .ts or .js as this file). */
export const BLK_DATAPLANE_WORKER = new URL(
  `./node-worker-main${import.meta.url.endsWith(".ts") ? ".ts" : ".js"}`,
  import.meta.url,
);

/**
 * Opens `"file"` specs with {@link FileBacking.open} and `"shared-memory"`
 * specs as {@link SharedMemoryBacking}.
 *
 * @throws {VirtioError} `BLK_IMAGE` for an image that cannot be used (see FileBacking.open).
 * @throws {TypeError} for an unknown kind.
 */
export async function openNodeBacking(spec: BackingSpec, ctx: BackingContext): Promise<BlkBacking> {
  switch (spec.kind) {
    case "file": {
      const f = spec as FileBackingSpec;
      return FileBacking.open(f.path, {
        readOnly: f.readOnly ?? false,
        direct: f.direct ?? false,
        logicalBlockSize: ctx.logicalBlockSize,
        ...(f.maxIoBytes === undefined ? {} : { maxIoBytes: f.maxIoBytes }),
        ...(f.fallocate === false ? { fallocate: null } : {}),
        logger: ctx.logger,
      });
    }
    case "shared-memory": {
      const m = spec as SharedMemoryBackingSpec;
      return new SharedMemoryBacking(m.buffer, { readOnly: m.readOnly ?? false });
    }
    default:
      throw new TypeError(`unknown backing kind ${spec.kind}`);
  }
}

/**
 * Serves the control thread from inside a worker_threads worker.
 *
 * @throws {TypeError} on the main thread.
 */
export function startNodeBlkDataplaneWorker(
  overrides: Partial<DataplaneWorkerEnv> = {},
): BlkDataplaneWorker {
  const schedule = (fn: () => void): void => void setImmediate(fn);
  return serveBlkDataplane({
    endpoint: nodeParentEndpoint(),
    openBacking: openNodeBacking,
    memory: { [INPROC_MEMORY]: attachInprocMemory },
    doorbells: { [INPROC_DOORBELLS]: inprocDoorbellOpener({ schedule }) },
    schedule,
    ...overrides,
  });
}

/**
 * The dataplane runtime on Node: worker_threads, `setImmediate` scheduling,
 * every device type this package has (virtio-blk, with image files through
 * FileBacking) and every transport binding (in-process: SharedArrayBuffer
 * memory and counter doorbells; vhost-user: region fds and eventfds).
 * Node-only. Not spec-defined; see ../dataplane/runtime.ts.
 *
 * {@link DATAPLANE_WORKER} is the module to start in a worker;
 * {@link localDataplanePool} runs the same runtime on the calling thread. A
 * program that needs another disk kind (or a test that wraps the disk)
 * writes its own entry calling {@link startNodeDataplaneWorker} with
 * overrides.
 *
 * @module
 */
import type { Logger } from "../log.ts";
import { localThreadHost, LOCAL_RUNTIME } from "../dataplane/local.ts";
import { DataplanePool } from "../dataplane/pool.ts";
import { type DataplaneEnv, type DataplaneRuntime, serveDataplane } from "../dataplane/runtime.ts";
import { nextTask } from "../dataplane/schedule.ts";
import { nodeParentEndpoint, nodeThreadHost } from "../dataplane/node-threads.ts";
import {
  INPROC_DOORBELLS,
  INPROC_MEMORY,
  inprocDoorbellOpener,
  inprocMemorySpace,
} from "../transport/inproc/dataplane-binding.ts";
import {
  EVENTFD_DOORBELLS,
  RegionMemorySpace,
  VHOST_USER_MEMORY,
  eventfdDoorbellOpener,
} from "../vhost-user/binding.ts";
import { NativeEventFds, NativeMapper } from "../vhost-user/native-host.ts";
import type { BackingOpener } from "./blk/backing-spec.ts";
import { openNodeBacking } from "./blk/node-backing.ts";
import { BLK_DEVICE_KIND, blkDeviceOpener } from "./blk/runtime-device.ts";

/** The default worker module (./node-dataplane-main, .ts or .js as this file). */
export const DATAPLANE_WORKER = new URL(
  `./node-dataplane-main${import.meta.url.endsWith(".ts") ? ".ts" : ".js"}`,
  import.meta.url,
);

/** What a Node runtime can be given instead of the defaults. */
export interface NodeDataplaneOverrides {
  /** Opens blk disks (default {@link openNodeBacking}: files and the portable kinds). */
  readonly openBacking?: BackingOpener;
}

/** The runtime's device types and bindings on Node. */
export function nodeDataplaneEnv(o: NodeDataplaneOverrides = {}): Omit<DataplaneEnv, "endpoint"> {
  return {
    devices: { [BLK_DEVICE_KIND]: blkDeviceOpener(o.openBacking ?? openNodeBacking) },
    memory: {
      [INPROC_MEMORY]: inprocMemorySpace,
      [VHOST_USER_MEMORY]: () => new RegionMemorySpace(new NativeMapper()),
    },
    doorbells: {
      [INPROC_DOORBELLS]: inprocDoorbellOpener({ schedule: nextTask }),
      [EVENTFD_DOORBELLS]: eventfdDoorbellOpener(new NativeEventFds()),
    },
    schedule: nextTask,
  };
}

/**
 * Serves the control side from inside a worker_threads worker.
 *
 * @throws {TypeError} on the main thread.
 */
export function startNodeDataplaneWorker(o: NodeDataplaneOverrides = {}): DataplaneRuntime {
  return serveDataplane({ endpoint: nodeParentEndpoint(), ...nodeDataplaneEnv(o) });
}

/**
 * The young generation of each dataplane worker's V8 heap, MiB (three
 * semi-spaces of 1 MiB). A request's garbage dies young, so scavenges stay
 * cheap at this size, and the worker's resident memory under load stays
 * near its idle size instead of growing by V8's default of up to 48 MiB.
 * The main thread gets the same through `--max-semi-space-size=1` in
 * bin/virtio-ts.mjs.
 */
export const WORKER_YOUNG_GENERATION_MIB = 3;

/** Options of {@link nodeDataplanePool}. */
export interface NodeDataplanePoolOptions {
  /** Worker threads; 0 = one runtime on the calling thread (the small-memory mode). */
  readonly threads: number;
  /** The worker module (default {@link DATAPLANE_WORKER}). */
  readonly module?: URL;
  /** For a runtime on the calling thread: the env (default {@link nodeDataplaneEnv}). */
  readonly overrides?: NodeDataplaneOverrides;
  readonly trace?: boolean;
  readonly logger?: Logger;
  readonly timeoutMs?: number;
}

/**
 * A pool of worker threads running {@link DATAPLANE_WORKER} (started through
 * tsx when this module runs from its TypeScript sources), or one runtime on
 * the calling thread.
 */
export function nodeDataplanePool(o: NodeDataplanePoolOptions): Promise<DataplanePool> {
  const local = o.threads === 0;
  const fromSources = import.meta.url.endsWith(".ts");
  const host = local
    ? localThreadHost((endpoint) => serveDataplane({ endpoint, ...nodeDataplaneEnv(o.overrides) }))
    : nodeThreadHost({
        ...(fromSources ? { loaderRegister: import.meta.resolve("tsx/esm/api") } : {}),
        resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_GENERATION_MIB },
      });
  return DataplanePool.start({
    host,
    module: local ? LOCAL_RUNTIME : (o.module ?? DATAPLANE_WORKER),
    runtimes: local ? 1 : o.threads,
    ...(o.trace === undefined ? {} : { trace: o.trace }),
    ...(o.logger === undefined ? {} : { logger: o.logger }),
    ...(o.timeoutMs === undefined ? {} : { timeoutMs: o.timeoutMs }),
  });
}

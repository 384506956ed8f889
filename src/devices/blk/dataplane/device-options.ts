/**
 * The options of a {@link BlkDataplaneDevice} and their checks: the part the
 * workers rebuild the blk configuration from (structured-cloneable), and
 * the part only the control thread uses (threads, binding, logger).
 * VIRTIO 1.2 §5.2.4 (the configuration the options describe).
 *
 * @module
 */
import type { ThreadHost } from "../../../transport/inproc/threads.ts";
import { BlkDeviceConfig } from "../config.ts";
import type { BlkLogger } from "../log.ts";
import type { BackingSpec, BlkDataplaneConfig, InitMessage } from "./protocol.ts";
import type { DataplaneBinding } from "./seams.ts";

/** Options of `BlkDataplaneDevice.create`: the blk configuration plus where and how to run. */
export interface BlkDataplaneDeviceOptions extends BlkDataplaneConfig {
  /** The disk each worker opens. */
  readonly backing: BackingSpec;
  /** Starts the workers (worker_threads or Web Workers). */
  readonly threads: ThreadHost;
  /** The worker module (Node: `BLK_DATAPLANE_WORKER` from ./node-worker.ts). */
  readonly workerModule: URL;
  /** How memory and doorbells reach the workers (in-process: `inprocDataplaneBinding(registers)`). */
  readonly binding: DataplaneBinding;
  /** "per-queue" (default): one worker per queue; n: n shared I/O workers (queue q on worker q mod n). */
  readonly ioThreads?: "per-queue" | number;
  /** Requests in flight per queue, 1..32768 (default 32). */
  readonly maxInFlight?: number;
  /** Chains popped per run before a worker yields to its event loop (default 256). */
  readonly budget?: number;
  readonly logger?: BlkLogger;
  /** Forward the workers' per-request trace lines to `logger.trace` (default false). */
  readonly trace?: boolean;
  /** Bound on a worker's start and on each of its replies, in ms (default 30000). */
  readonly timeoutMs?: number;
}

/** The control-thread part of the options. */
export type Parts = Pick<
  BlkDataplaneDeviceOptions,
  | "backing"
  | "threads"
  | "workerModule"
  | "binding"
  | "ioThreads"
  | "maxInFlight"
  | "budget"
  | "logger"
  | "trace"
  | "timeoutMs"
>;

/** Splits the options into the worker-side blk configuration and the rest. */
export function splitOptions(o: BlkDataplaneDeviceOptions): {
  parts: Parts;
  config: BlkDataplaneConfig;
} {
  const {
    backing,
    threads,
    workerModule,
    binding,
    ioThreads,
    maxInFlight,
    budget,
    logger,
    trace,
    timeoutMs,
    ...config
  } = o;
  return {
    parts: {
      backing,
      threads,
      workerModule,
      binding,
      ioThreads,
      maxInFlight,
      budget,
      logger,
      trace,
      timeoutMs,
    },
    config,
  };
}

function checkInt(name: string, v: number | undefined, min: number, max: number): void {
  if (v !== undefined && (!Number.isInteger(v) || v < min || v > max))
    throw new RangeError(`${name} must be an integer in ${min}..${max}, got ${v}`);
}

/**
 * Checks the numbers and the blk configuration (throws at once, on the
 * caller's thread) and returns how many workers to start.
 *
 * @throws {RangeError} for a bad option.
 */
export function workerCount(parts: Parts, config: BlkDataplaneConfig): number {
  checkInt("maxInFlight", parts.maxInFlight, 1, 32768);
  checkInt("budget", parts.budget, 1, 0x7fff_ffff);
  checkInt("timeoutMs", parts.timeoutMs, 1, 0x7fff_ffff);
  const numQueues = new BlkDeviceConfig({ ...config, capacityBytes: 0 }).numQueues;
  const io = parts.ioThreads ?? "per-queue";
  if (io !== "per-queue") checkInt("ioThreads", io, 1, 0xffff);
  return io === "per-queue" ? numQueues : Math.min(io, numQueues);
}

/** The first message to worker `worker`. */
export function initMessage(
  worker: number,
  parts: Parts,
  config: BlkDataplaneConfig,
  cacheMode: SharedArrayBuffer,
): InitMessage {
  return {
    type: "init",
    worker,
    backing: parts.backing,
    config,
    cacheMode,
    ...(parts.maxInFlight === undefined ? {} : { maxInFlight: parts.maxInFlight }),
    ...(parts.budget === undefined ? {} : { budget: parts.budget }),
    trace: parts.trace === true,
  };
}

/**
 * The options of a {@link BlkDataplaneDevice} and their checks: the part the
 * runtimes rebuild the blk configuration from (structured-cloneable), and
 * the part only the control side uses (threads or a pool, binding, logger).
 * VIRTIO 1.2 §5.2.4 (the configuration the options describe).
 *
 * @module
 */
import type { DataplanePool } from "../../dataplane/pool.ts";
import type { DataplaneBinding } from "../../dataplane/seams.ts";
import type { ThreadHost } from "../../dataplane/threads.ts";
import type { Logger } from "../../log.ts";
import type { BackingSpec } from "./backing-spec.ts";
import { BlkDeviceConfig } from "./config.ts";
import { MAX_POLL_NS } from "./queue-engine-options.ts";
import type { BlkDataplaneConfig } from "./runtime-device.ts";

/** Options of `BlkDataplaneDevice.create`: the blk configuration plus where and how to run. */
export interface BlkDataplaneDeviceOptions extends BlkDataplaneConfig {
  /** The disk each worker opens. */
  readonly backing: BackingSpec;
  /**
   * Runtimes shared with other devices; the device's queues are placed on
   * them and the pool outlives the device. Give either `pool`, or `threads`
   * and `workerModule` (the device then starts and ends its own runtimes).
   */
  readonly pool?: DataplanePool;
  /** Starts the workers (worker_threads, Web Workers, or `localThreadHost`). */
  readonly threads?: ThreadHost;
  /** The worker module (Node: `DATAPLANE_WORKER` from ../node-dataplane.ts). */
  readonly workerModule?: URL;
  /** How memory and doorbells reach the workers (in-process: `inprocDataplaneBinding(registers)`). */
  readonly binding: DataplaneBinding;
  /** "per-queue" (default): one worker per queue; n: n shared I/O workers (queue q on worker q mod n). */
  readonly ioThreads?: "per-queue" | number;
  /** Requests in flight per queue, 1..32768 (default 32). */
  readonly maxInFlight?: number;
  /** Chains popped per run before a worker yields to its event loop (default 256). */
  readonly budget?: number;
  /** A request in flight this long is logged as stalled (default 30). */
  readonly stallSeconds?: number;
  /** Longest adaptive poll window in ns when a queue runs dry (default 0: no polling). */
  readonly pollMaxNs?: number;
  readonly logger?: Logger;
  /** Forward the workers' per-request trace lines to `logger.trace` (default false). */
  readonly trace?: boolean;
  /** Bound on a worker's start and on each of its replies, in ms (default 30000). */
  readonly timeoutMs?: number;
}

/** The options that are not part of the blk configuration. */
const PART_KEYS = [
  "backing",
  "pool",
  "threads",
  "workerModule",
  "binding",
  "ioThreads",
  "maxInFlight",
  "budget",
  "stallSeconds",
  "pollMaxNs",
  "logger",
  "trace",
  "timeoutMs",
] as const;

/** The control-side part of the options. */
export type Parts = Pick<BlkDataplaneDeviceOptions, (typeof PART_KEYS)[number]>;

/** Splits the options into the runtime-side blk configuration and the rest (the options themselves). */
export function splitOptions(o: BlkDataplaneDeviceOptions): {
  parts: Parts;
  config: BlkDataplaneConfig;
} {
  const config: Record<string, unknown> = { ...o };
  for (const k of PART_KEYS) delete config[k];
  return { parts: o, config };
}

function checkInt(name: string, v: number | undefined, min: number, max: number): void {
  if (v !== undefined && (!Number.isInteger(v) || v < min || v > max))
    throw new RangeError(`${name} must be an integer in ${min}..${max}, got ${v}`);
}

/**
 * Checks the numbers and the blk configuration (throws at once, on the
 * caller's thread) and returns how many workers to start (0 with a pool).
 *
 * @throws {RangeError} for a bad option; {@link TypeError} without a pool or threads.
 */
export function workerCount(parts: Parts, config: BlkDataplaneConfig): number {
  checkInt("maxInFlight", parts.maxInFlight, 1, 32768);
  checkInt("budget", parts.budget, 1, 0x7fff_ffff);
  checkInt("pollMaxNs", parts.pollMaxNs, 0, MAX_POLL_NS);
  checkInt("timeoutMs", parts.timeoutMs, 1, 0x7fff_ffff);
  const numQueues = new BlkDeviceConfig({ ...config, capacityBytes: 0 }).numQueues;
  const io = parts.ioThreads ?? "per-queue";
  if (io !== "per-queue") checkInt("ioThreads", io, 1, 0xffff);
  if (parts.pool !== undefined) return 0;
  if (parts.threads === undefined || parts.workerModule === undefined)
    throw new TypeError("give either pool, or threads and workerModule");
  return io === "per-queue" ? numQueues : Math.min(io, numQueues);
}

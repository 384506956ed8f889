/**
 * What a virtio-blk queue engine is given: the device-side queue operations
 * it uses, the policy it reads per request, the callbacks to the embedder,
 * and its limits with their defaults and checks. VIRTIO 1.2 §2.7.8 (used
 * ring: publish, then notify if the driver wants it), §2.7.10 (notification
 * suppression), §5.2.6 (requests).
 *
 * @module
 */
import { CHEAP_YIELD } from "../../dataplane/schedule.ts";
import type { VirtioError } from "../../errors.ts";
import type { Logger } from "../../log.ts";
import type { DescriptorChain } from "../../ring/chain.ts";
import type { BlkBacking } from "./backing.ts";
import type { BlkExecPolicy } from "./execute.ts";
import type { BlkRequestPolicy } from "./request.ts";

/**
 * Default chains per run. 16 with `setImmediate` (measured over vhost-user,
 * 4 KiB cached reads at queue depth 32: +60% IOPS and about −10% CPU per
 * request against 256, which publishes nothing before the whole batch is
 * done); 256 where the only yield is a clamped timer.
 */
export const DEFAULT_BLK_ENGINE_BUDGET: number = CHEAP_YIELD ? 16 : 256;

/**
 * The device-side queue operations the engine uses (what the ring's
 * DeviceQueue provides).
 */
export interface BlkVirtqueue {
  /** Next available chain, or null. Throws VirtioError on a ring violation (the queue is then broken). */
  popAvail(): DescriptorChain | null;
  /** Writes a used-ring entry (not yet visible to the driver). */
  addUsed(head: number, len: number): void;
  /** Makes the entries added so far visible (stores used.idx). */
  publishUsed(): void;
  /** True if the driver wants a notification for what was published since the last call. */
  needsNotification(): boolean;
  /** Re-enables driver notifications; true if work slipped in and the caller must re-poll. */
  enableNotification(): boolean;
  /** Asks the driver not to notify. */
  disableNotification(): void;
  /** True if the driver made chains available that were not popped yet. Throws on a ring violation. */
  hasAvailable(): boolean;
  /** The violation that broke the queue, or null. */
  readonly broken: VirtioError | null;
  /** Makes the queue broken (sticky until reset). */
  markBroken(err: VirtioError): void;
  /** True if the driver still waits for a notification for what was published (see DeviceQueue). */
  notificationOwed?(): boolean;
  /** Makes the next needsNotification() true once. */
  forceNotification?(): void;
}

/** The longest poll window accepted: 1 s (QEMU accepts any; a longer one is a mistake). */
export const MAX_POLL_NS = 1_000_000_000;

/** What the engine reads per request: the parser's policy plus the cache mode. */
export type BlkEnginePolicy = BlkRequestPolicy & BlkExecPolicy;

/** Options for {@link BlkQueueEngine}. */
export interface BlkQueueEngineOptions {
  readonly queue: BlkVirtqueue;
  /** Queue number, for logs. */
  readonly queueIndex: number;
  readonly backing: BlkBacking;
  /** Device state read per request (a {@link BlkDeviceConfig}). */
  readonly policy: BlkEnginePolicy;
  /** Requests submitted to the store at once, 1 … 32768 (default 32). */
  readonly maxInFlight?: number;
  /**
   * Chains popped per run before yielding to the event loop (default
   * {@link DEFAULT_BLK_ENGINE_BUDGET}: 16 where `setImmediate` exists, else 256).
   */
  readonly budget?: number;
  /**
   * The longest poll window in ns when the queue runs dry (adaptive, QEMU's
   * `poll-max-ns`: ../../dataplane/adaptive-poll.ts); 0 (default) never polls.
   */
  readonly pollMaxNs?: number;
  /**
   * Sends a used-buffer notification ("call") to the driver. The engine
   * publishes and asks `needsNotification` itself, then calls this.
   * Give either `notify` or `signalUsed`.
   */
  readonly notify?: () => void;
  /**
   * Publishes the used entries and notifies if the driver wants it, in one
   * call (the device framework's `ActivationContext.signalUsed`). Replaces
   * the engine's own publish → needsNotification → notify.
   */
  readonly signalUsed?: () => void;
  /**
   * The device became broken (a ring violation, or a request with no room
   * for a header or status). The embedder sets DEVICE_NEEDS_RESET, tells the
   * driver, and halts the device's other queues.
   */
  readonly onBroken: (err: VirtioError) => void;
  /**
   * The guest memory was pulled away (`MEM_FAULT`; the runtime's
   * `QueueContext.memoryFault`), or null. A violation found while it is set
   * is reported as this fault instead. A `MEM_FAULT` is not logged here: the
   * transport that owns the memory reports it (vhost-user closes the
   * connection with one line).
   */
  readonly memoryFault?: () => VirtioError | null;
  readonly logger?: Logger;
  /**
   * Runs `fn` later on the event loop (default `setImmediate` where it
   * exists — no timer clamp —, else `setTimeout(fn, 0)`).
   */
  readonly schedule?: (fn: () => void) => void;
}

/**
 * The in-flight limit, the budget and the poll maximum of `o`, checked; and exactly one of
 * `notify` and `signalUsed` given.
 *
 * @throws {RangeError} for a limit out of range.
 * @throws {TypeError} unless exactly one of `notify` and `signalUsed` is given.
 */
export function engineLimits(o: BlkQueueEngineOptions): {
  maxInFlight: number;
  budget: number;
  pollMaxNs: number;
} {
  const maxInFlight = o.maxInFlight ?? 32;
  if (!Number.isInteger(maxInFlight) || maxInFlight < 1 || maxInFlight > 32768)
    throw new RangeError(`maxInFlight must be in 1..32768, got ${maxInFlight}`);
  const budget = o.budget ?? DEFAULT_BLK_ENGINE_BUDGET;
  if (!Number.isInteger(budget) || budget < 1)
    throw new RangeError(`budget must be a positive integer, got ${budget}`);
  const pollMaxNs = o.pollMaxNs ?? 0;
  if (!Number.isInteger(pollMaxNs) || pollMaxNs < 0 || pollMaxNs > MAX_POLL_NS)
    throw new RangeError(`pollMaxNs must be in 0..${MAX_POLL_NS}, got ${pollMaxNs}`);
  if ((o.notify === undefined) === (o.signalUsed === undefined))
    throw new TypeError("give exactly one of notify and signalUsed");
  return { maxInFlight, budget, pollMaxNs };
}

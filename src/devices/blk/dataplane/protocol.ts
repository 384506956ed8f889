/**
 * The messages between a virtio-blk device's control thread and its
 * dataplane workers, and the descriptors that say where a worker finds
 * guest memory, doorbells and the disk. VIRTIO 1.2 §5.2 (Block Device),
 * §2.7 (a worker runs the split virtqueues), §2.4 (reset: stop, drain,
 * acknowledge). Not spec-defined: this is the project's own thread protocol.
 *
 * Everything here is structured-cloneable (numbers, strings, bigint,
 * SharedArrayBuffer): a message crosses `postMessage` unchanged. Only
 * bootstrap and lifecycle travel this way (a few messages per reset); kicks,
 * calls and the cache mode go through shared memory.
 *
 * Descriptors are tagged with `kind` so one worker entry can serve several
 * transports: the in-process transport sends `"inproc-shared"` memory
 * (SharedArrayBuffer regions) and `"inproc"` doorbells (Atomics on the
 * register block); a vhost-user daemon would send region fds with mmap
 * offsets and kick / call eventfds, for a worker that maps and watches them
 * itself (see ./seams.ts).
 *
 * @module
 */
import { ErrorCode, VirtioError, type ErrorCodeValue } from "../../../errors.ts";
import type { BlkDeviceOptions } from "../config.ts";

/** Where guest memory comes from in a worker; `kind` selects the worker's attacher. */
export interface MemoryDescriptor {
  readonly kind: string;
}

/** How kicks reach a worker and calls leave it, for one queue; `kind` selects the worker's opener. */
export interface DoorbellDescriptor {
  readonly kind: string;
}

/** A raw image file, opened by each worker itself (Node-only). */
export interface FileBackingSpec {
  readonly kind: "file";
  readonly path: string;
  /** Open O_RDONLY; the device then offers VIRTIO_BLK_F_RO (default false). */
  readonly readOnly?: boolean;
  /** O_DIRECT with an aligned bounce buffer for unaligned guest buffers (default false). */
  readonly direct?: boolean;
  /** Largest transfer per system call (FileBacking default when absent). */
  readonly maxIoBytes?: number;
  /** Use the native fallocate for DISCARD / WRITE_ZEROES (default true; false: write zeroes). */
  readonly fallocate?: boolean;
}

/** A disk held in a SharedArrayBuffer, shared by every worker (portable). */
export interface SharedMemoryBackingSpec {
  readonly kind: "shared-memory";
  readonly buffer: SharedArrayBuffer;
  readonly readOnly?: boolean;
}

/** What a worker opens as the disk; other kinds need a worker entry that knows them. */
export type BackingSpec =
  | FileBackingSpec
  | SharedMemoryBackingSpec
  | { readonly kind: string; readonly [field: string]: unknown };

/** The blk configuration a worker rebuilds (capacity comes from the backing store). */
export type BlkDataplaneConfig = Omit<BlkDeviceOptions, "capacityBytes">;

/** One ring to start; addresses are guest-physical (as in vhost-user's RingStart). */
export interface DataplaneRing {
  readonly size: number;
  readonly descAddr: number;
  readonly availAddr: number;
  readonly usedAddr: number;
  /** The next available-ring index to consume (0 after a reset). */
  readonly nextAvail: number;
  /** Take used.idx from guest memory (a ring resumed by a new back-end) instead of 0. */
  readonly usedIdxFromMemory?: boolean;
  /** Largest indirect table accepted, in entries (DeviceQueue's default when absent). */
  readonly maxIndirectEntries?: number;
}

/** A structured-cloneable error: a VirtioError's code survives the crossing. */
export interface WireError {
  readonly name: string;
  readonly message: string;
  readonly code?: string;
  readonly details?: Readonly<Record<string, number | string | bigint | boolean>>;
}

/** First message to a worker. */
export interface InitMessage {
  readonly type: "init";
  /** Worker number, for log lines. */
  readonly worker: number;
  readonly backing: BackingSpec;
  readonly config: BlkDataplaneConfig;
  /** The cache-mode word (./cache-mode.ts), written by the control thread. */
  readonly cacheMode: SharedArrayBuffer;
  /** Requests in flight per queue (engine default when absent). */
  readonly maxInFlight?: number;
  /** Chains popped per run before yielding (engine default when absent). */
  readonly budget?: number;
  /** Forward per-request trace lines (costly; default false). */
  readonly trace?: boolean;
}

/** Control → worker, after init. Each carries an `id` echoed by the reply. */
export type ControlMessage =
  | { readonly type: "memory"; readonly id: number; readonly memory: MemoryDescriptor }
  | {
      readonly type: "start";
      readonly id: number;
      /** Activation number: a `broken` report names it, so late reports of an old one are dropped. */
      readonly activation: number;
      readonly queue: number;
      readonly ring: DataplaneRing;
      /** Negotiated feature bits. */
      readonly features: bigint;
      readonly doorbells: DoorbellDescriptor;
    }
  | { readonly type: "stop"; readonly id: number; readonly queue: number }
  | { readonly type: "halt"; readonly id: number }
  | { readonly type: "resize"; readonly id: number; readonly bytes: number }
  | { readonly type: "stats"; readonly id: number }
  | { readonly type: "shutdown"; readonly id: number };

/** What a `stop` reply carries. */
export interface StopResult {
  /** The next available index (vhost-user GET_VRING_BASE). */
  readonly nextAvail: number;
  /** Requests that were in flight when the stop arrived (completed before the reply). */
  readonly drained: number;
}

/** Per-queue counters a `stats` reply carries. */
export interface DataplaneQueueStats {
  readonly queue: number;
  /** Times the worker woke up for this queue's kicks (or found the kick count moved). */
  readonly wakeups: number;
  /** Used-buffer notifications sent. */
  readonly calls: number;
  /** Requests in flight now. */
  readonly inFlight: number;
}

/** Worker → control. */
export type WorkerMessage =
  | {
      readonly type: "ready";
      readonly worker: number;
      readonly size: number;
      readonly readOnly: boolean;
    }
  | { readonly type: "init-failed"; readonly worker: number; readonly error: WireError }
  | { readonly type: "reply"; readonly id: number; readonly value?: unknown }
  | { readonly type: "reply"; readonly id: number; readonly error: WireError }
  | {
      readonly type: "broken";
      readonly activation: number;
      readonly queue: number;
      readonly error: WireError;
    }
  | { readonly type: "log"; readonly level: "error" | "warn" | "trace"; readonly message: string };

const CODES = new Set<string>(Object.values(ErrorCode));

/** An error as a message field. */
export function toWireError(e: unknown): WireError {
  if (e instanceof VirtioError)
    return { name: e.name, message: e.message, code: e.code, details: e.details };
  if (e instanceof Error) return { name: e.name, message: e.message };
  return { name: "Error", message: String(e) };
}

/** The error back: a VirtioError with its code, a TypeError / RangeError, or an Error. */
export function fromWireError(w: WireError): Error {
  if (w.code !== undefined && CODES.has(w.code))
    return new VirtioError(w.code as ErrorCodeValue, w.message, w.details ?? {});
  if (w.name === "TypeError") return new TypeError(w.message);
  if (w.name === "RangeError") return new RangeError(w.message);
  return new Error(w.message);
}

/** True if `m` looks like a message with a string `type` (the worker trusts its control thread, but checks shape). */
export function hasType(m: unknown): m is { type: string } {
  return typeof m === "object" && m !== null && typeof (m as { type?: unknown }).type === "string";
}

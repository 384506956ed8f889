/**
 * Shared constants and message shapes of the virtio-blk integration tests
 * (the test thread and the driver worker both import this), and the ring
 * layouts they run on: split (VIRTIO 1.2 §2.7) and packed (§2.8).
 */
import type { RingLayoutKind } from "../../src/ring/ring-layout.ts";
import type { InprocShared } from "../../src/transport/inproc/index.ts";

/** The ring layouts every integration test runs on. */
export const RING_LAYOUTS: readonly RingLayoutKind[] = ["split", "packed"];

/**
 * The queue size a test uses on `layout` rings where split rings have `n`
 * (a power of two ≥ 8): packed rings run at 7/8 of it, which is not a power
 * of two (§2.8.10.1: "The Queue Size value does not have to be a power of 2").
 */
export function ringSize(layout: RingLayoutKind, n: number): number {
  return layout === "packed" ? n - n / 8 : n;
}

/** Guest memory: rings and indirect arenas low, then a heap for request buffers. */
export const GUEST_BYTES = 32 << 20;
export const RING_BASE = 0x10000;
/** Per queue: the ring at the start, the indirect arena at +ARENA_OFFSET. */
export const QUEUE_STRIDE = 0x40000;
export const ARENA_OFFSET = 0x10000;
/** Descriptors per indirect table. */
export const ARENA_ENTRIES = 32;
export const HEAP_BASE = 0x200000;

/** One request as the driver builds it (shapes as in test/conformance/blk-harness.ts). */
export interface RawReq {
  readonly queue?: number;
  readonly type: number;
  /** u64 sector (bigint for values above 2^53). */
  readonly sector?: number | bigint;
  readonly reserved?: number;
  /** Device-readable bytes after the header. */
  readonly out?: Uint8Array;
  /** Device-writable bytes before the status byte. */
  readonly inLen?: number;
  /** Split the header over descriptors of these sizes. */
  readonly headerSplit?: readonly number[];
  /** Split data into descriptors of at most this many bytes. */
  readonly piece?: number;
  /** Length of the status descriptor (default 1; 0 = none). */
  readonly statusLen?: number;
  /** After building, point the chain's first descriptor outside guest memory (ring violation DESC_OUT_OF_BOUNDS). */
  readonly corruptHead?: boolean;
}

/** What came back for one request. */
export interface RawResult {
  /** The status byte (the last writable byte), or -1 without a status descriptor. */
  readonly status: number;
  /** Used length. */
  readonly len: number;
  /** The writable data bytes (inLen), as the driver reads them after completion. */
  readonly data: Uint8Array;
  /** The whole status descriptor. */
  readonly statusBuf: Uint8Array;
}

/** First message to the driver worker. */
export interface DriverInit {
  readonly shared: InprocShared;
}

/** Commands to the driver worker. */
export type DriverCommand =
  | {
      readonly cmd: "init";
      readonly features: bigint;
      readonly queues: number;
      readonly queueSize: number;
      readonly indirect: boolean;
    }
  | { readonly cmd: "run"; readonly reqs: readonly RawReq[]; readonly maxInFlight?: number }
  | { readonly cmd: "workload"; readonly workload: WorkloadOptions }
  | {
      readonly cmd: "reset-in-flight";
      readonly reqs: readonly RawReq[];
      /** Wait this long after the kick before resetting (the device pops meanwhile). */
      readonly delayBeforeResetMs: number;
    }
  | { readonly cmd: "reset" }
  /** Initializes the device with the BlkDriver (src/devices/blk/driver.ts) and starts its pump. */
  | {
      readonly cmd: "blk-init";
      readonly queues: number;
      readonly queueSize: number;
      readonly layout: RingLayoutKind;
    }
  | { readonly cmd: "blk-workload"; readonly workload: WorkloadOptions }
  | { readonly cmd: "blk-reset-in-flight"; readonly count: number; readonly delayMs: number }
  | { readonly cmd: "blk-stop" }
  | { readonly cmd: "status" }
  | { readonly cmd: "read-config"; readonly offset: number; readonly length: number }
  | { readonly cmd: "write-config"; readonly offset: number; readonly bytes: Uint8Array };

/** The random mixed workload. */
export interface WorkloadOptions {
  readonly seed: number;
  readonly ops: number;
  /** Requests in flight per queue. */
  readonly inFlight: number;
  readonly queues: number;
  /** The disk's bytes before the workload (the reference model starts from them). */
  readonly initial: Uint8Array;
  /** Largest IN/OUT in bytes (a multiple of 512). */
  readonly maxIoBytes: number;
  /** Whether the device negotiated DISCARD / WRITE_ZEROES (else they are not sent). */
  readonly discard: boolean;
  readonly writeZeroes: boolean;
}

/** The workload's outcome. */
export interface WorkloadReport {
  readonly counts: Readonly<Record<string, number>>;
  /** Reads whose data differed from the model (first few). */
  readonly mismatches: readonly string[];
  /** Requests that completed with a status other than OK. */
  readonly failures: readonly string[];
  /** The model at the end. */
  readonly model: Uint8Array;
  /** 1 per sector that was discarded since its last write: it may read as old data or zeroes. */
  readonly maybeZero: Uint8Array;
  /** Most requests seen in flight at once, summed over queues. */
  readonly maxInFlight: number;
}

/** Reply of the driver worker. */
export type DriverReply =
  { readonly ok: true; readonly value: unknown } | { readonly ok: false; readonly error: string };

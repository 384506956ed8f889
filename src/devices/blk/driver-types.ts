/**
 * The virtio-blk driver's public types: its options, what it needs from a
 * transport, per-call options, counters and state. VIRTIO 1.2 §5.2.6
 * (requests), §2.7.13 / §2.7.14 (the transport carries available-buffer
 * notifications to the device and used-buffer notifications back).
 *
 * The driver itself is `BlkDriver` in driver.ts, which exports these types
 * too.
 *
 * @module
 */
import type { VirtioError } from "../../errors.ts";
import type { GuestMemory } from "../../memory/guest-memory.ts";
import type { DriverRing } from "../../ring/driver-ring.ts";
import type { BlkDriverConfig } from "./driver-config.ts";
import type { BlkDriverArena } from "./driver-memory.ts";

/**
 * What the driver needs from a transport: a way to notify the device, in
 * one of two forms (give exactly one). Used-buffer notifications go the
 * other way: the transport calls {@link BlkDriver.processUsed}.
 *
 * Either may call back into the driver synchronously. A throw makes the
 * device broken (`DEVICE_BROKEN`).
 */
export interface BlkDriverTransport {
  /**
   * Sends an available-buffer notification (a kick) for queue
   * `queueIndex`, unconditionally: the driver calls it only after the ring's
   * `kickNeeded()` returned true (an eventfd write, a doorbell register).
   */
  notify?(queueIndex: number): void;
  /**
   * Publishes queue `queueIndex` and notifies the device if the ring says
   * so (asking `kickNeeded()` itself); returns true if it notified. For
   * transports that own that decision, e.g. `InprocDriverTransport.kick`.
   */
  kick?(queueIndex: number): boolean;
}

/** Options of {@link BlkDriver}. */
export interface BlkDriverOptions {
  /** Guest memory holding the rings, the arena and zero-copy buffers. */
  readonly memory: GuestMemory;
  /**
   * The request queues, set up (index i = virtqueue i); at most
   * `config.numQueues`. Split or packed rings, as negotiated
   * (`openDriverRing`); the driver does not depend on the layout.
   */
  readonly queues: readonly DriverRing<number>[];
  readonly transport: BlkDriverTransport;
  /** The device configuration, parsed under the negotiated features ({@link parseBlkConfig}). */
  readonly config: BlkDriverConfig;
  /** Guest memory the driver owns: request slots, then the bounce pool (see driver-memory.ts). */
  readonly arena: BlkDriverArena;
  /** Request slots per queue (default, and at most, the queue size). */
  readonly slotsPerQueue?: number;
  /** Bounce page size, a power of two (default 4096). */
  readonly pageSize?: number;
  /** Most data bytes per request (default 1 MiB; also capped by the device's limits and the bounce pool). */
  readonly maxRequestBytes?: number;
  /**
   * Descriptors per indirect table of the queues (their `indirectArena.entriesPerChain`).
   * Required when a queue uses indirect descriptors: requests are sized to fit one table.
   */
  readonly indirectEntries?: number;
  /** Publish and kick once per event-loop turn (microtask) instead of after every submission (default true). */
  readonly batchKicks?: boolean;
  /** Called once when a queue becomes broken, with the ring's error (e.g. to reset the device). */
  readonly onQueueBroken?: (queueIndex: number, err: VirtioError) => void;
}

/** Per-call options. */
export interface BlkRequestOptions {
  /** Queue to use (default: round robin over the queues that are not broken). */
  readonly queue?: number;
}

/** Options of {@link BlkDriver.writeZeroes}. */
export interface BlkWriteZeroesOptions extends BlkRequestOptions {
  /** Set VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP: the device may deallocate the ranges (default false). */
  readonly unmap?: boolean;
}

/** Counters (cumulative). */
export interface BlkDriverStats {
  /** API calls accepted (not refused locally). */
  operations: number;
  /** virtio-blk requests submitted (descriptor chains). */
  requests: number;
  /** Requests completed by the device. */
  completions: number;
  /** Kicks sent (the ring asked for a notification). */
  kicks: number;
  /** Kick checks where the ring said no notification was needed. */
  kicksSuppressed: number;
  /** Times a submission waited for a free request slot, bounce memory, descriptors. */
  slotWaits: number;
  bounceWaits: number;
  descriptorWaits: number;
}

/** Driver state: serving, broken (DEVICE_NEEDS_RESET or a transport failure), or reset (final). */
export type BlkDriverState = "live" | "broken" | "reset";

/** Counters starting at 0. */
export function newBlkDriverStats(): BlkDriverStats {
  return {
    operations: 0,
    requests: 0,
    completions: 0,
    kicks: 0,
    kicksSuppressed: 0,
    slotWaits: 0,
    bounceWaits: 0,
    descriptorWaits: 0,
  };
}

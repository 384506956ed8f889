/**
 * What a device type supplies to the dataplane: a {@link DeviceOpener} that
 * builds the device's dataplane half inside a runtime (a worker, or the
 * calling thread), and per started queue a {@link QueueHandler}. VIRTIO 1.2
 * §2.7 (the handler consumes a virtqueue), §2.4 (reset: stop, drain,
 * acknowledge) and docs/conformance.md "Lifecycle".
 *
 * The runtime owns everything transport-shaped (memory, rings, doorbells,
 * stop and halt ordering, reports); the device only turns chains into I/O.
 * virtio-blk's `BlkQueueEngine` is such a handler.
 *
 * @module
 */
import type { VirtioError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { GuestMemory } from "../memory/guest-memory.ts";
import type { DeviceRing } from "../ring/device-ring.ts";

/** What a started queue's handler is given. */
export interface QueueContext {
  /** Queue number (for logs). */
  readonly index: number;
  /** The device side of the ring (built by `openRing`). */
  readonly queue: DeviceRing;
  /** Guest memory the ring's buffers live in. */
  readonly memory: GuestMemory;
  /** Negotiated feature bits. */
  readonly features: bigint;
  readonly logger: Logger;
  /** Runs `fn` on a later event-loop task without a timer clamp where possible. */
  readonly schedule: (fn: () => void) => void;
  /** Sends a used-buffer notification (the ring already said one is needed). */
  notify(): void;
  /** Publishes used entries and notifies if the driver wants it; true if a notification was sent. */
  signalUsed(): boolean;
  /** The driver broke the protocol (e.g. a request with no room for its status): the device is broken. */
  markBroken(err: VirtioError): void;
  /**
   * The guest memory was pulled away under its mapping (`MEM_FAULT`, see
   * `MemorySpace.fault`), or null. A ring violation seen while this is set is
   * its consequence (zeros read where the ring was): report this instead.
   */
  memoryFault(): VirtioError | null;
}

/** One queue's processing, as the runtime drives it. */
export interface QueueHandler {
  /** An available-buffer notification (spurious ones are harmless). */
  kick(): void;
  /** The device is broken: consume nothing more, write nothing more to the ring. */
  halt(): void;
  /** For reset: stop consuming, complete what is in flight into the used ring, then resolve. */
  stop(): Promise<void>;
  /**
   * Shutdown with requests stuck: complete what is in flight now with an
   * error status, drop the late results; returns how many (absent: the
   * handler cannot, and stop waits).
   */
  abort?(): number;
  /** Requests in flight now. */
  readonly inFlight: number;
}

/** A device's dataplane half inside one runtime. */
export interface DataplaneDevice {
  /** Starts processing a queue (nothing popped yet; a kick follows at once). */
  startQueue(ctx: QueueContext): QueueHandler;
  /** A device-specific control operation (e.g. virtio-blk `resize`); the result is the reply. */
  control?(op: string, args: unknown): unknown;
  /** Releases what the device holds (its disk); every queue is stopped already. */
  close?(): void | Promise<void>;
}

/** What a device is opened from: plain data with a `kind` naming its opener. */
export interface DeviceSpec {
  readonly kind: string;
}

/** What an opener is given besides the spec. */
export interface DeviceOpenContext {
  /** The runtime's number (worker index), for logs. */
  readonly worker: number;
  /** Lines reach the control side's logger for this device. */
  readonly logger: Logger;
  readonly schedule: (fn: () => void) => void;
}

/** An opened device and what the control side learns from it (plain data, e.g. a disk's size). */
export interface OpenedDevice {
  readonly device: DataplaneDevice;
  readonly info?: unknown;
}

/** Builds a device's dataplane half from its spec. */
export type DeviceOpener = (
  spec: DeviceSpec,
  ctx: DeviceOpenContext,
) => OpenedDevice | Promise<OpenedDevice>;

/**
 * What a device type implements to plug into the framework
 * ({@link VirtioDevice}). VIRTIO 1.2 §2 (Basic Facilities of a Virtio
 * Device), §3.1 (device initialization), §2.4 (reset).
 *
 * The shape follows the common "virtio device" trait of VMMs: the device type
 * supplies its id, queue count and maximum sizes, offered features and
 * configuration space, and is told when to start (activate, with ready
 * queues) and when to stop (quiesce, then reset). Every optional member has
 * a sensible default:
 *
 * | member | default when absent |
 * |---|---|
 * | `config` | an empty configuration space |
 * | `writeConfig` | configuration space is read-only (driver writes dropped) |
 * | `validateFeatures` | every offered subset is accepted |
 * | `queueNotify` | kicks are ignored (the device polls, or runs its own dataplane) |
 * | `quiesce` | nothing in flight: reset proceeds at once |
 * | `reset` | nothing to forget |
 *
 * Ring violations: `DeviceRing.popAvail` (and `hasAvailable` /
 * `enableNotification`) throw a VirtioError after breaking the queue; the
 * framework has then already made the whole device broken. The device type
 * catches it and stops processing (nothing more to do until reset).
 *
 * Threading: all members are called on the thread that owns the
 * {@link VirtioDevice}. A device with a separate dataplane thread starts it
 * in `activate` and stops it in `quiesce`.
 *
 * @module
 */
import type { VirtioError } from "../errors.ts";
import type { GuestMemory } from "../memory/guest-memory.ts";
import type { DeviceRing } from "../ring/device-ring.ts";
import type { ConfigSpace } from "./config-space.ts";

/** What a device gets when the driver sets DRIVER_OK. */
export interface ActivationContext {
  /** Guest memory the queues live in. */
  readonly memory: GuestMemory;
  /** The negotiated feature bits. */
  readonly features: bigint;
  /** One entry per queue: the ready ones as DeviceQueues, the others null. */
  readonly queues: readonly (DeviceRing | null)[];
  /**
   * Publishes used entries of queue `index` and, if the driver wants it
   * (`needsNotification`), sends a used-buffer notification. Returns true if
   * a notification was sent. Does nothing once the device is broken or reset.
   */
  signalUsed(index: number): boolean;
  /**
   * Makes the device broken (sticky until reset): every queue stops,
   * DEVICE_NEEDS_RESET is set, the driver is told. For driver protocol
   * violations the device type finds itself (e.g. a malformed request with
   * nowhere to report a status).
   */
  markBroken(err: VirtioError): void;
}

/** A device type: implement this and hand it to `new VirtioDevice(...)`. */
export interface VirtioDeviceBackend {
  /** Short name for log lines, e.g. "virtio-blk". */
  readonly name: string;
  /** §5 device id (1 network, 2 block, ...). */
  readonly deviceId: number;
  /** Maximum size of each queue (power of two ≤ 32768); the length is the number of queues. */
  readonly queueMaxSizes: readonly number[];
  /**
   * Offered feature bits (device-specific and ring bits such as
   * VIRTIO_RING_F_EVENT_IDX). The framework always adds VIRTIO_F_VERSION_1.
   */
  readonly features: bigint;
  /** The device configuration space. */
  readonly config?: ConfigSpace;
  /**
   * Extra check of the driver's feature set when it sets FEATURES_OK (it is
   * already known to be a subset of the offered bits). Return false to
   * refuse FEATURES_OK.
   */
  validateFeatures?(features: bigint): boolean;
  /**
   * A driver write to the configuration space (only the in-range part).
   * Apply writable fields with `config.store`; ignore the rest.
   */
  writeConfig?(offset: number, data: Uint8Array, config: ConfigSpace): void;
  /** Start serving: called once per DRIVER_OK. May be async; a throw/reject breaks the device. */
  activate(ctx: ActivationContext): void | Promise<void>;
  /** An available-buffer notification (kick) for queue `index`. */
  queueNotify?(index: number): void;
  /**
   * Stop popping and finish in-flight requests, completing them into the
   * used rings; resolve when nothing is in flight. Called at reset, before
   * the queues are detached. Return nothing (not a promise) when nothing was
   * in flight: the reset then completes before the driver's status write
   * returns, as drivers that do not wait for it (virtio-mmio, legacy) expect.
   */
  quiesce?(): void | Promise<void>;
  /** Forget the activation (queues, negotiated features): the device is back to its initial state. */
  reset?(): void;
}

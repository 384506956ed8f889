/**
 * What a device implements to be served over vhost-user: the rust-vmm
 * `VhostUserBackend` shape, with queues started and stopped one ring at a
 * time (qemu/qemu docs/interop/vhost-user.rst "Ring states": a ring starts
 * on its kick fd and stops on VHOST_USER_GET_VRING_BASE). Member names
 * follow the transport-neutral `VirtioDeviceBackend` of device/backend.ts
 * (`features`, `config`, `writeConfig`, `queueNotify`, `reset`), so one
 * device type can offer both with shared parts.
 *
 * | member | default when absent |
 * |---|---|
 * | `config` | empty configuration space: any GET_CONFIG of 1+ bytes is a protocol error |
 * | `writeConfig` | SET_CONFIG is refused (REPLY_ACK status 1; the connection stays up) |
 * | `reset` | nothing to forget on VHOST_USER_RESET_DEVICE |
 *
 * Threading: every member is called on the thread that runs the rings (the
 * dataplane), except `features`, `numQueues`, `config` and `writeConfig`,
 * which the control side reads.
 *
 * @module
 */
import type { VirtioError } from "../errors.ts";
import type { GuestMemory } from "../memory/guest-memory.ts";
import type { DeviceQueue } from "../ring/device-queue.ts";
import type { ConfigSpace } from "../device/config-space.ts";

/** What a started ring gets besides its {@link DeviceQueue}. */
export interface VhostUserQueueContext {
  /** Guest memory (built from the front-end's regions), for the queue's buffers. */
  readonly memory: GuestMemory;
  /** Feature bits the front-end set with VHOST_USER_SET_FEATURES. */
  readonly features: bigint;
  /** Sends a used-buffer notification now (signals the call eventfd; no-op without one). */
  notify(): void;
  /**
   * Publishes the queue's used entries and notifies if the driver wants it
   * (`publishUsed`, then `needsNotification`, then {@link notify}). Returns
   * true if a notification was sent.
   */
  signalUsed(): boolean;
  /**
   * Makes the device broken (a driver violation the device found itself,
   * e.g. a request with nowhere to put its status): every ring of the
   * connection stops and the ring's error eventfd is signalled.
   */
  markBroken(err: VirtioError): void;
}

/** A device served over vhost-user. */
export interface VhostUserBackend {
  /** Short name for log lines, e.g. "virtio-blk". */
  readonly name: string;
  /** Number of queues (GET_QUEUE_NUM); ring indexes are 0..numQueues-1. */
  readonly numQueues: number;
  /**
   * Offered virtio feature bits (device bits and ring bits such as
   * VIRTIO_RING_F_EVENT_IDX). The back-end adds VIRTIO_F_VERSION_1 and
   * VHOST_USER_F_PROTOCOL_FEATURES.
   */
  readonly features: bigint;
  /** The device configuration space (GET_CONFIG reads it). */
  readonly config?: ConfigSpace;
  /**
   * A front-end write (VHOST_USER_SET_CONFIG) of `data` at `offset`, already
   * checked to lie inside the configuration space. Apply writable fields with
   * `config.store`; return false to refuse (e.g. a read-only field, which the
   * spec says MUST NOT be accepted unless `flags` is
   * VHOST_SET_CONFIG_TYPE_MIGRATION).
   */
  writeConfig?(offset: number, data: Uint8Array, flags: number, config: ConfigSpace): boolean;
  /**
   * Start serving ring `index` through `queue` (nothing popped yet; `nextAvail`
   * and the used index are where the front-end left them). A kick follows at
   * once, so work the driver queued before the ring started is not lost.
   */
  startQueue(index: number, queue: DeviceQueue, ctx: VhostUserQueueContext): void | Promise<void>;
  /** An available-buffer notification (kick) for a started ring. */
  queueNotify(index: number): void;
  /**
   * Stop popping from ring `index`, complete every in-flight request into the
   * used ring (and notify), and resolve when none is left. The queue is not
   * touched afterwards.
   */
  stopQueue(index: number): Promise<void>;
  /** VHOST_USER_RESET_DEVICE, after every ring stopped: forget device state. */
  reset?(): void | Promise<void>;
  /** Releases what the device holds (e.g. its disk image) when it is no longer served. */
  close?(): void | Promise<void>;
}

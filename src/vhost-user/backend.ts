/**
 * What a device implements to be served over vhost-user, on the control
 * side: the answers to GET_FEATURES, GET_QUEUE_NUM and GET_CONFIG, the
 * driver-writable config fields (SET_CONFIG) and RESET_DEVICE. Its queues run
 * on the dataplane (../dataplane/), as the device type's
 * `DataplaneDevice` opened in a pool: the connection hands each started ring
 * to it through ./rings.ts. qemu/qemu docs/interop/vhost-user.rst "Ring
 * states" (a ring starts on its kick fd and stops on
 * VHOST_USER_GET_VRING_BASE), VHOST_USER_SET_CONFIG, VHOST_USER_RESET_DEVICE.
 * Member names follow the transport-neutral `VirtioDeviceBackend` of
 * ../device/backend.ts.
 *
 * | member | default when absent |
 * |---|---|
 * | `config` | empty configuration space: any GET_CONFIG of 1+ bytes is a protocol error |
 * | `writeConfig` | SET_CONFIG is refused (REPLY_ACK status 1; the connection stays up) |
 * | `reset` | nothing to forget on VHOST_USER_RESET_DEVICE |
 *
 * @module
 */
import type { ConfigSpace } from "../device/config-space.ts";

/** A device served over vhost-user (its control side). */
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
   * The front-end set its features (VHOST_USER_SET_FEATURES); every ring
   * start follows one. A device that shares state with its dataplane (the
   * cache mode) records them here.
   */
  negotiate?(features: bigint): void;
  /** VHOST_USER_RESET_DEVICE, after every ring stopped: forget device state. */
  reset?(): void | Promise<void>;
}

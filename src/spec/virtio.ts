/**
 * Basic facilities of a virtio device: device status field and reserved
 * feature bits. VIRTIO 1.2 §2.1 (Device Status Field), §6 (Reserved Feature Bits).
 *
 * @module
 */

/** §2.1: device status bits. */
export const VIRTIO_CONFIG_S_ACKNOWLEDGE = 1;
export const VIRTIO_CONFIG_S_DRIVER = 2;
export const VIRTIO_CONFIG_S_DRIVER_OK = 4;
export const VIRTIO_CONFIG_S_FEATURES_OK = 8;
export const VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET = 64;
export const VIRTIO_CONFIG_S_FAILED = 128;

/** §6: reserved feature bits (bit numbers). */
export const VIRTIO_F_NOTIFY_ON_EMPTY = 24;
export const VIRTIO_F_ANY_LAYOUT = 27;
export const VIRTIO_RING_F_INDIRECT_DESC = 28;
export const VIRTIO_RING_F_EVENT_IDX = 29;
/** vhost-user: bit 30 advertises GET/SET_PROTOCOL_FEATURES (an unused legacy bit). */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;
export const VIRTIO_F_VERSION_1 = 32;
export const VIRTIO_F_ACCESS_PLATFORM = 33;
export const VIRTIO_F_RING_PACKED = 34;
export const VIRTIO_F_IN_ORDER = 35;
export const VIRTIO_F_ORDER_PLATFORM = 36;
export const VIRTIO_F_SR_IOV = 37;
export const VIRTIO_F_NOTIFICATION_DATA = 38;
export const VIRTIO_F_RING_RESET = 40;

/** A feature bit number as a 64-bit mask. */
export function featureBit(bit: number): bigint {
  if (!Number.isInteger(bit) || bit < 0 || bit > 63)
    throw new RangeError(`feature bit ${bit} is not in 0..63`);
  return 1n << BigInt(bit);
}

/** True if `features` has bit `bit` set. */
export function hasFeature(features: bigint, bit: number): boolean {
  return (features & featureBit(bit)) !== 0n;
}

/**
 * Feature selection for tests whose driver side builds split virtqueues
 * (VIRTIO 1.2 §2.7) against a device that offers packed ones too (§2.8,
 * VIRTIO_F_RING_PACKED, §6): the driver must not accept the packed layout it
 * does not build.
 *
 * @module
 */
import { VIRTIO_F_RING_PACKED, featureBit } from "../spec/virtio.ts";

/** `offered` less VIRTIO_F_RING_PACKED: what a split-ring driver accepts of everything offered. */
export function splitOnly(offered: bigint): bigint {
  return offered & ~featureBit(VIRTIO_F_RING_PACKED);
}

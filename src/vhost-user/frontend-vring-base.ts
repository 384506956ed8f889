/**
 * The ring base a vhost-user front-end sends with SET_VRING_BASE and reads
 * back with GET_VRING_BASE, per ring layout. qemu/qemu
 * docs/interop/vhost-user.rst "A vring descriptor index for split
 * virtqueues", "Vring descriptor indices for packed virtqueues",
 * "Front-end message types" (SET_VRING_BASE, GET_VRING_BASE: "Stops the
 * vring and returns the current descriptor index or indices"); VIRTIO 1.2
 * §2.7 (split: one free-running avail index), §2.8.1 (packed: the Driver and
 * Device Ring Wrap Counters, each "initialized to 1").
 *
 * Split rings: bits 0–15 are "Index of the next *Available Ring* descriptor
 * that the back-end will process", bits 16–31 "Reserved (set to zero)".
 * Packed rings: bits 0–14 the next avail position, bit 15 the Driver Ring
 * Wrap Counter, bits 16–30 the next used position, bit 31 the Device Ring
 * Wrap Counter (../ring/packed-ring-state.ts), so a fresh packed ring starts
 * at 0x80008000, not 0.
 *
 * @module
 */
import {
  PACKED_RING_START,
  decodePackedVringBase,
  encodePackedVringBase,
  type PackedRingState,
} from "../ring/packed-ring-state.ts";
import type { RingLayoutKind } from "../ring/ring-layout.ts";

/** Where a stopped ring stands (GET_VRING_BASE), decoded for its layout; `num` is the raw reply. */
export type StoppedRing =
  | {
      readonly layout: "split";
      readonly num: number;
      /** The next available index the back-end would have processed (bits 0–15). */
      readonly nextAvail: number;
    }
  | {
      readonly layout: "packed";
      readonly num: number;
      /** Next avail and used positions with their wrap counters. */
      readonly state: PackedRingState;
    };

/** SET_VRING_BASE of a ring that starts fresh: 0 (split), positions 0 and wrap counters 1 (packed). */
export function freshVringBase(layout: RingLayoutKind): number {
  return layout === "packed" ? encodePackedVringBase(PACKED_RING_START) : 0;
}

/**
 * GET_VRING_BASE's `num` decoded for `layout`. Every u32 decodes: the value
 * only reports where the back-end stopped (nothing is resumed from it here),
 * so a back-end's stray reserved bits are passed on in `num`, not judged.
 */
export function decodeStoppedRing(layout: RingLayoutKind, num: number): StoppedRing {
  if (layout === "packed") return { layout, num, state: decodePackedVringBase(num) };
  return { layout, num, nextAvail: num & 0xffff };
}

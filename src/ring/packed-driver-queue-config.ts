/**
 * What a driver-side packed virtqueue is given — where its three parts lie,
 * which ring features were negotiated, its indirect arena — and the checks
 * of the parts. VIRTIO 1.2 §2.8 (packed virtqueues: up to 2^15 entries, the
 * Queue Size need not be a power of 2), §2.8.10.1 (sizes and alignment).
 *
 * §2.8.11 (driver requirements: virtqueues): "The driver MUST ensure that the physical
 * address of the first byte of each virtqueue part is a multiple of the
 * specified alignment value in the above table." — a misaligned part is
 * refused here, before anything is written.
 *
 * @module
 */
import type { VirtioError } from "../errors.ts";
import type { GuestMemory, GuestSlice } from "../memory/guest-memory.ts";
import {
  PVIRTQ_DESC_ALIGN,
  PVIRTQ_EVENT_ALIGN,
  PVIRTQ_EVENT_SIZE,
  packedDescRingSize,
} from "../spec/packed-virtqueue.ts";
import { checkedSlice, type IndirectArena } from "./driver-indirect.ts";

/** Where the packed ring lives and which ring features were negotiated. */
export interface PackedDriverQueueConfig {
  /** Queue size: any integer in 1..32768. */
  readonly size: number;
  /** Descriptor Area: the Descriptor Ring, 16-aligned. */
  readonly descAddr: number;
  /** Driver Area: the Driver Event Suppression structure, 4-aligned. */
  readonly driverAddr: number;
  /** Device Area: the Device Event Suppression structure, 4-aligned. */
  readonly deviceAddr: number;
  /** VIRTIO_F_EVENT_IDX negotiated (RING_EVENT_FLAGS_DESC may be used). */
  readonly eventIdx?: boolean;
  /** VIRTIO_F_INDIRECT_DESC negotiated (needs {@link indirectArena}). */
  readonly indirect?: boolean;
  /**
   * Guest memory for indirect tables: one slot of `entriesPerChain`
   * struct pvirtq_desc per Buffer ID (`indirectArenaBytes(size, e)` bytes).
   */
  readonly indirectArena?: IndirectArena;
  /** Called once when the device breaks the protocol and the queue becomes broken. */
  readonly onBroken?: (err: VirtioError) => void;
}

/** The three parts of a packed ring, each a checked window of guest memory. */
export interface PackedDriverRingParts {
  readonly desc: GuestSlice;
  readonly driver: GuestSlice;
  readonly device: GuestSlice;
}

/**
 * The ring's parts for a queue of `c.size` (already checked), each aligned
 * and inside one guest memory region.
 *
 * @throws {RangeError} for a misaligned part or one outside guest memory.
 */
export function packedDriverRingParts(
  memory: GuestMemory,
  c: PackedDriverQueueConfig,
): PackedDriverRingParts {
  return {
    desc: checkedSlice(
      memory,
      "descriptor ring",
      c.descAddr,
      packedDescRingSize(c.size),
      PVIRTQ_DESC_ALIGN,
    ),
    driver: checkedSlice(
      memory,
      "driver event suppression",
      c.driverAddr,
      PVIRTQ_EVENT_SIZE,
      PVIRTQ_EVENT_ALIGN,
    ),
    device: checkedSlice(
      memory,
      "device event suppression",
      c.deviceAddr,
      PVIRTQ_EVENT_SIZE,
      PVIRTQ_EVENT_ALIGN,
    ),
  };
}

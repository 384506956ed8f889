/**
 * What a driver-side split virtqueue is given — where its three parts lie,
 * which ring features were negotiated, its indirect arena, where its indexes
 * start — and the checks of the parts. VIRTIO 1.2 §2.7 (queue size; the
 * alignment table: descriptor table 16, available ring 2, used ring 4),
 * §2.7.5 / §2.7.6 / §2.7.8 (the parts' sizes).
 *
 * @module
 */
import type { VirtioError } from "../errors.ts";
import type { GuestMemory, GuestSlice } from "../memory/guest-memory.ts";
import {
  VIRTQ_AVAIL_ALIGN,
  VIRTQ_DESC_ALIGN,
  VIRTQ_USED_ALIGN,
  availRingSize,
  descTableSize,
  usedRingSize,
} from "../spec/virtqueue.ts";
import { checkedSlice, type IndirectArena } from "./driver-indirect.ts";

/** Where the ring lives and which ring features were negotiated. */
export interface DriverQueueConfig {
  /** Queue size: a power of two in 1..32768. */
  readonly size: number;
  readonly descAddr: number;
  readonly availAddr: number;
  readonly usedAddr: number;
  /** VIRTIO_F_EVENT_IDX negotiated. */
  readonly eventIdx?: boolean;
  /** VIRTIO_F_INDIRECT_DESC negotiated (needs {@link indirectArena}). */
  readonly indirect?: boolean;
  readonly indirectArena?: IndirectArena;
  /** Called once when the device breaks the protocol and the queue becomes broken. */
  readonly onBroken?: (err: VirtioError) => void;
  /**
   * Free-running index (u16) the ring starts at: the constructor writes it to
   * both avail.idx and used.idx (default 0, the spec's state after reset).
   * For tests that need the 16-bit wrap early, and for resuming a ring; the
   * device must start at the same index (DeviceQueue `nextAvail` plus
   * `usedIdxFromMemory`). {@link DriverQueue.detachAll} returns to 0.
   */
  readonly initialIndex?: number;
}

/** The three parts of a ring, each a checked window of guest memory. */
export interface DriverRingParts {
  readonly desc: GuestSlice;
  readonly avail: GuestSlice;
  readonly used: GuestSlice;
}

/**
 * The ring's parts for a queue of `c.size` (already checked), each aligned
 * and inside one guest memory region.
 *
 * @throws {RangeError} for a misaligned part or one outside guest memory.
 */
export function driverRingParts(memory: GuestMemory, c: DriverQueueConfig): DriverRingParts {
  const n = c.size;
  return {
    desc: checkedSlice(memory, "descriptor table", c.descAddr, descTableSize(n), VIRTQ_DESC_ALIGN),
    avail: checkedSlice(memory, "available ring", c.availAddr, availRingSize(n), VIRTQ_AVAIL_ALIGN),
    used: checkedSlice(memory, "used ring", c.usedAddr, usedRingSize(n), VIRTQ_USED_ALIGN),
  };
}

/**
 * The index the ring starts at (`initialIndex`, default 0).
 *
 * @throws {RangeError} unless it is a u16.
 */
export function initialIndex(c: DriverQueueConfig): number {
  const start = c.initialIndex ?? 0;
  if (!Number.isInteger(start) || start < 0 || start > 0xffff)
    throw new RangeError(`initialIndex ${start} is not a u16`);
  return start;
}

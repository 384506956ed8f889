/**
 * The one place a driver-side virtqueue is built from negotiated feature
 * bits: the driver's counterpart of `openRing` (./open-ring.ts). VIRTIO 1.2
 * §6 (reserved feature bits: VIRTIO_F_RING_PACKED selects the layout, §2.8
 * instead of §2.7; VIRTIO_F_INDIRECT_DESC and VIRTIO_F_EVENT_IDX the ring's
 * behaviour), §3.1.1 (the driver negotiates features before it sets up
 * queues, so the layout is known when a ring is built).
 *
 * Enforced here:
 * - §2.7.5.3.1 / §2.8.19 "The driver MUST NOT set the VIRTQ_DESC_F_INDIRECT
 *   flag unless the VIRTIO_F_INDIRECT_DESC feature was negotiated." — an
 *   indirect arena is used only when that feature is in `features`.
 * - §2.7.10.1 "If the VIRTIO_F_EVENT_IDX feature bit is not negotiated: The
 *   driver MUST ignore the avail_event value." (and §2.7.7.1 "The driver
 *   MUST set flags to 0 or 1"; §2.8.10: RING_EVENT_FLAGS_DESC only with
 *   EVENT_IDX) — the ring uses the event fields only when VIRTIO_F_EVENT_IDX
 *   is in `features`.
 *
 * Drivers and transports build rings only here, so a new ring layout or
 * ring feature is added once.
 *
 * @module
 */
import type { VirtioError } from "../errors.ts";
import type { GuestMemory } from "../memory/guest-memory.ts";
import {
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  hasFeature,
} from "../spec/virtio.ts";
import type { IndirectArena } from "./driver-indirect.ts";
import { DriverQueue } from "./driver-queue.ts";
import type { DriverRing } from "./driver-ring.ts";
import { PackedDriverQueue } from "./packed-driver-queue.ts";
import { ringLayoutOf, type RingAddresses } from "./ring-layout.ts";

/** What a driver ring is given besides its addresses. */
export interface DriverRingOptions {
  /** Guest memory for indirect tables; used only if VIRTIO_F_INDIRECT_DESC was negotiated. */
  readonly indirectArena?: IndirectArena;
  /** Called once when the device breaks the protocol and the ring becomes broken. */
  readonly onBroken?: (err: VirtioError) => void;
  /**
   * Split rings only: the free-running index both avail.idx and used.idx
   * start at (DriverQueue `initialIndex`; tests that need the 16-bit wrap
   * early). A packed ring has no such index: it always starts at slot 0
   * with both wrap counters 1 (§2.8.1).
   */
  readonly initialIndex?: number;
}

/**
 * Builds the driver side of the ring at `ring` in `memory`, in the layout
 * `features` select, and initialises it there (zeroed, indexes 0 / wrap
 * counters 1).
 *
 * @throws {RangeError} for a size the layout does not allow, misaligned
 *   parts, parts outside guest memory, a bad indirect arena, or
 *   `initialIndex` on a packed ring.
 */
export function openDriverRing<T>(
  memory: GuestMemory,
  features: bigint,
  ring: RingAddresses,
  options: DriverRingOptions = {},
): DriverRing<T> {
  const eventIdx = hasFeature(features, VIRTIO_RING_F_EVENT_IDX);
  const arena = hasFeature(features, VIRTIO_RING_F_INDIRECT_DESC)
    ? options.indirectArena
    : undefined;
  const common = {
    size: ring.size,
    descAddr: ring.descAddr,
    eventIdx,
    indirect: arena !== undefined,
    ...(arena === undefined ? {} : { indirectArena: arena }),
    ...(options.onBroken === undefined ? {} : { onBroken: options.onBroken }),
  };
  if (ringLayoutOf(features) === "packed") {
    if ((options.initialIndex ?? 0) !== 0)
      throw new RangeError("a packed ring has no free-running index: initialIndex is split only");
    return new PackedDriverQueue<T>(memory, {
      ...common,
      driverAddr: ring.availAddr,
      deviceAddr: ring.usedAddr,
    });
  }
  return new DriverQueue<T>(memory, {
    ...common,
    availAddr: ring.availAddr,
    usedAddr: ring.usedAddr,
    ...(options.initialIndex === undefined ? {} : { initialIndex: options.initialIndex }),
  });
}

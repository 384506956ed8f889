/**
 * Where a device-side ring lies and how to resume it, and the one place a
 * device-side queue is built from negotiated feature bits. VIRTIO 1.2 §2.7
 * (split virtqueues), §2.8 (packed virtqueues), §6 (reserved feature bits:
 * VIRTIO_F_RING_PACKED selects the layout, VIRTIO_F_INDIRECT_DESC and
 * VIRTIO_F_EVENT_IDX the ring's behaviour).
 *
 * Every consumer that starts a queue — the device framework, the dataplane
 * runtime (in a worker or on the calling thread), every transport — goes
 * through {@link openRing}, so a new ring layout or ring feature is added
 * here once.
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
import { DeviceQueue, type InflightTracker } from "./device-queue.ts";
import type { DeviceRing } from "./device-ring.ts";
import type { PackedInflightTracker } from "./inflight-packed.ts";
import { PackedDeviceQueue, decodePackedVringBase } from "./packed-device-queue.ts";
import { isPackedRing } from "./ring-layout.ts";

/**
 * One ring to start, as plain data (structured-cloneable: it crosses to
 * dataplane workers). Addresses are guest-physical. With
 * VIRTIO_F_RING_PACKED the three parts are the packed ring's Descriptor
 * Ring, Driver Area and Device Area (§2.8.10), as the transports name them
 * (virtio-pci's queue_driver / queue_device, vhost-user's avail / used
 * addresses).
 */
export interface RingStart {
  /** Queue size: a power of two in 1..32768 (split), any of 1..32768 (packed). */
  readonly size: number;
  /** Descriptor table (split) or Descriptor Ring (packed). */
  readonly descAddr: number;
  /** Available ring (split) or Driver Area: the driver event suppression structure (packed). */
  readonly availAddr: number;
  /** Used ring (split) or Device Area: the device event suppression structure (packed). */
  readonly usedAddr: number;
  /** Negotiated feature bits (they select the layout and the ring's behaviour). */
  readonly features: bigint;
  /**
   * Where the ring resumes, as vhost-user SET_VRING_BASE carries it (see
   * {@link DeviceRing.vringBase}): the next available index of a split
   * ring; a packed ring's positions and wrap counters. Absent: a fresh ring
   * (index 0; packed positions 0 with both wrap counters 1, §2.8.1).
   */
  readonly base?: number;
  /** Split rings: take `used.idx` from guest memory (a ring resumed by a new back-end) instead of 0. */
  readonly usedIdxFromMemory?: boolean;
  /** Largest indirect table accepted, in entries (DeviceQueue's default when absent). */
  readonly maxIndirectEntries?: number;
}

/** A ring's inflight log: the split layout's or the packed layout's (`layout: "packed"`). */
export type RingInflightLog = InflightTracker | PackedInflightTracker;

/** True if `log` keeps the packed layout. */
export function isPackedLog(log: RingInflightLog): log is PackedInflightTracker {
  return (log as Partial<PackedInflightTracker>).layout === "packed";
}

/**
 * Builds the device side of a ring from its start description, keeping
 * `inflight` (the transport's inflight log for this queue) if given: the
 * ring then resumes where the log says (`recovery` of DeviceQueue and
 * PackedDeviceQueue). The log's layout must be the ring's.
 *
 * @throws {VirtioError} `QUEUE_CONFIG` if the ring does not fit the memory
 *   (size, alignment, not inside one region) or its resume state does not
 *   fit the ring: the ring does not start.
 * @throws {RangeError} for an inflight log of the other layout.
 */
export function openRing(
  memory: GuestMemory,
  start: RingStart,
  onBroken?: (err: VirtioError) => void,
  inflight?: RingInflightLog | null,
): DeviceRing {
  const log = inflight ?? null;
  if (isPackedRing(start.features)) {
    if (log !== null && !isPackedLog(log))
      throw new RangeError("a packed ring keeps the packed layout's inflight log");
    return openPacked(memory, start, onBroken, log);
  }
  if (log !== null && isPackedLog(log))
    throw new RangeError("a split ring keeps the split layout's inflight log");
  return new DeviceQueue(memory, {
    size: start.size,
    descAddr: start.descAddr,
    availAddr: start.availAddr,
    usedAddr: start.usedAddr,
    eventIdx: hasFeature(start.features, VIRTIO_RING_F_EVENT_IDX),
    indirect: hasFeature(start.features, VIRTIO_RING_F_INDIRECT_DESC),
    nextAvail: start.base ?? 0,
    ...(start.usedIdxFromMemory === true ? { usedIdxFromMemory: true } : {}),
    ...(start.maxIndirectEntries === undefined
      ? {}
      : { maxIndirectEntries: start.maxIndirectEntries }),
    ...(onBroken === undefined ? {} : { onBroken }),
    ...(log === null ? {} : { inflight: log }),
  });
}

function openPacked(
  memory: GuestMemory,
  start: RingStart,
  onBroken: ((err: VirtioError) => void) | undefined,
  inflight: PackedInflightTracker | null,
): PackedDeviceQueue {
  return new PackedDeviceQueue(memory, {
    size: start.size,
    descAddr: start.descAddr,
    driverEventAddr: start.availAddr,
    deviceEventAddr: start.usedAddr,
    eventIdx: hasFeature(start.features, VIRTIO_RING_F_EVENT_IDX),
    indirect: hasFeature(start.features, VIRTIO_RING_F_INDIRECT_DESC),
    ...(start.base === undefined ? {} : { resume: decodePackedVringBase(start.base) }),
    ...(start.maxIndirectEntries === undefined
      ? {}
      : { maxIndirectEntries: start.maxIndirectEntries }),
    ...(onBroken === undefined ? {} : { onBroken }),
    ...(inflight === null ? {} : { inflight }),
  });
}

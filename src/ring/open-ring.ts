/**
 * Where a device-side ring lies and how to resume it, and the one place a
 * device-side queue is built from negotiated feature bits. VIRTIO 1.2 §2.7
 * (split virtqueues), §6 (reserved feature bits: VIRTIO_F_INDIRECT_DESC,
 * VIRTIO_F_EVENT_IDX select the ring's behaviour).
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

/**
 * One ring to start, as plain data (structured-cloneable: it crosses to
 * dataplane workers). Addresses are guest-physical.
 */
export interface RingStart {
  /** Queue size: a power of two in 1..32768. */
  readonly size: number;
  readonly descAddr: number;
  readonly availAddr: number;
  readonly usedAddr: number;
  /** Negotiated feature bits (they select the ring's behaviour). */
  readonly features: bigint;
  /** The next available-ring index to consume (0 after a reset; vhost-user SET_VRING_BASE). */
  readonly nextAvail: number;
  /** Take `used.idx` from guest memory (a ring resumed by a new back-end) instead of 0. */
  readonly usedIdxFromMemory?: boolean;
  /** Largest indirect table accepted, in entries (DeviceQueue's default when absent). */
  readonly maxIndirectEntries?: number;
}

/**
 * Builds the device side of a ring from its start description, keeping
 * `inflight` (the transport's inflight log for this queue) if given: the
 * ring then resumes where the log says (DeviceQueue `recovery`).
 *
 * @throws {VirtioError} `QUEUE_CONFIG` if the ring does not fit the memory
 *   (size, alignment, not inside one region): the ring does not start.
 */
export function openRing(
  memory: GuestMemory,
  start: RingStart,
  onBroken?: (err: VirtioError) => void,
  inflight?: InflightTracker | null,
): DeviceQueue {
  return new DeviceQueue(memory, {
    size: start.size,
    descAddr: start.descAddr,
    availAddr: start.availAddr,
    usedAddr: start.usedAddr,
    eventIdx: hasFeature(start.features, VIRTIO_RING_F_EVENT_IDX),
    indirect: hasFeature(start.features, VIRTIO_RING_F_INDIRECT_DESC),
    nextAvail: start.nextAvail,
    ...(start.usedIdxFromMemory === true ? { usedIdxFromMemory: true } : {}),
    ...(start.maxIndirectEntries === undefined
      ? {}
      : { maxIndirectEntries: start.maxIndirectEntries }),
    ...(onBroken === undefined ? {} : { onBroken }),
    ...(inflight === undefined || inflight === null ? {} : { inflight }),
  });
}

/**
 * The configuration of a device-side packed virtqueue and its checks: queue
 * size, the placement and alignment of its three parts, where the ring
 * resumes. VIRTIO 1.2 §2.8 ("Packed virtqueues support up to 2^15 entries
 * each"; the three parts: Descriptor Ring, Driver Event Suppression, Device
 * Event Suppression), §2.8.10.1 (alignment and size: Descriptor Ring 16 and
 * 16·size bytes, each Event Suppression structure 4 and 4 bytes; "The Queue
 * Size value does not have to be a power of 2"), §2.8.11 ("The driver MUST
 * ensure that the physical address of the first byte of each virtqueue part
 * is a multiple of the specified alignment value in the above table":
 * `QUEUE_CONFIG` otherwise).
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../errors.ts";
import type { GuestMemory, GuestSlice } from "../memory/guest-memory.ts";
import {
  PVIRTQ_DESC_ALIGN,
  PVIRTQ_EVENT_ALIGN,
  PVIRTQ_EVENT_SIZE,
  isValidPackedQueueSize,
  packedDescRingSize,
} from "../spec/packed-virtqueue.ts";
import { DEFAULT_MAX_INDIRECT_ENTRIES, mapRingPart } from "./device-queue-config.ts";
import type { PackedInflightTracker } from "./inflight-packed.ts";
import {
  PACKED_RING_START,
  checkPackedRingState,
  type PackedRingState,
} from "./packed-ring-state.ts";

/** Configuration of one device-side packed queue (what the driver, or a vhost-user frontend, set up). */
export interface PackedDeviceQueueConfig {
  /** Queue size: an integer in 1..32768 (not necessarily a power of two). */
  size: number;
  /** Guest-physical address of the Descriptor Ring (Descriptor Area; 16-aligned, 16·size bytes). */
  descAddr: number;
  /** Guest-physical address of the Driver Event Suppression structure (Driver Area; 4-aligned, 4 bytes). */
  driverEventAddr: number;
  /** Guest-physical address of the Device Event Suppression structure (Device Area; 4-aligned, 4 bytes). */
  deviceEventAddr: number;
  /** VIRTIO_F_EVENT_IDX was negotiated (RING_EVENT_FLAGS_DESC is meaningful). */
  eventIdx?: boolean;
  /** VIRTIO_F_INDIRECT_DESC was negotiated. */
  indirect?: boolean;
  /** Largest accepted indirect table, in entries (1..65535, default 65535; the queue size caps it too). */
  maxIndirectEntries?: number;
  /**
   * Where the ring resumes (vhost-user SET_VRING_BASE, see
   * `decodePackedVringBase`); default: a fresh ring, positions 0, wrap counters 1.
   */
  resume?: PackedRingState;
  /**
   * The inflight log to keep (vhost-user inflight I/O tracking); a log that
   * holds lists an earlier device left in flight overrides `resume` (see
   * `PackedDeviceQueue.recovery`).
   */
  inflight?: PackedInflightTracker;
  /** Called once, when the queue becomes broken. */
  onBroken?: (err: VirtioError) => void;
}

/** A checked configuration with its three parts mapped. */
export interface PackedDeviceQueueParts {
  readonly size: number;
  readonly desc: GuestSlice;
  readonly driverEvent: GuestSlice;
  readonly deviceEvent: GuestSlice;
  readonly maxIndirect: number;
  readonly resume: PackedRingState;
}

const configError = (msg: string, details: Record<string, number>): VirtioError =>
  new VirtioError(ErrorCode.QUEUE_CONFIG, msg, details);

/**
 * Validates the configuration and maps the three ring parts.
 *
 * @throws {VirtioError} `QUEUE_CONFIG` if the size is not an integer in
 *   1..32768, a part is misaligned (16/4/4) or not inside one guest memory
 *   region, or the resume state does not fit the ring.
 * @throws {RangeError} for a bad `maxIndirectEntries`.
 */
export function mapPackedDeviceQueue(
  memory: GuestMemory,
  config: PackedDeviceQueueConfig,
): PackedDeviceQueueParts {
  const { size } = config;
  // §2.8: "Packed virtqueues support up to 2^15 entries each"; §2.8.10.1: not necessarily a power of 2.
  if (!isValidPackedQueueSize(size))
    throw configError(`queue size ${size} is not an integer in 1..32768`, { size });
  const maxIndirect = config.maxIndirectEntries ?? DEFAULT_MAX_INDIRECT_ENTRIES;
  if (!Number.isInteger(maxIndirect) || maxIndirect < 1 || maxIndirect > 65535)
    throw new RangeError(`maxIndirectEntries must be an integer in 1..65535, got ${maxIndirect}`);
  const resume = config.resume ?? PACKED_RING_START;
  const bad = checkPackedRingState(resume, size);
  if (bad !== null) {
    throw configError(`resume state: ${bad}`, {
      size,
      availPos: resume.availPos,
      availWrap: resume.availWrap,
      usedPos: resume.usedPos,
      usedWrap: resume.usedWrap,
    });
  }
  // §2.8.10.1 alignment table: Descriptor Ring 16, Device and Driver Event Suppression 4.
  const desc = mapRingPart(
    memory,
    "descriptor ring",
    config.descAddr,
    packedDescRingSize(size),
    PVIRTQ_DESC_ALIGN,
  );
  const driverEvent = mapRingPart(
    memory,
    "driver event suppression",
    config.driverEventAddr,
    PVIRTQ_EVENT_SIZE,
    PVIRTQ_EVENT_ALIGN,
  );
  const deviceEvent = mapRingPart(
    memory,
    "device event suppression",
    config.deviceEventAddr,
    PVIRTQ_EVENT_SIZE,
    PVIRTQ_EVENT_ALIGN,
  );
  return { size, desc, driverEvent, deviceEvent, maxIndirect, resume };
}

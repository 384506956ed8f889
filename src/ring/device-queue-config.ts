/**
 * The configuration of a device-side split virtqueue and its checks: queue
 * size, the placement and alignment of its three parts, where indexes start.
 * VIRTIO 1.2 §2.7 (queue size; the alignment table: descriptor table 16,
 * available ring 2, used ring 4), §2.7.5 / §2.7.6 / §2.7.8 (the parts' sizes).
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../errors.ts";
import type { GuestMemory, GuestSlice } from "../memory/guest-memory.ts";
import type { InflightTracker } from "./in-flight-chains.ts";
import {
  VIRTQ_AVAIL_ALIGN,
  VIRTQ_DESC_ALIGN,
  VIRTQ_USED_ALIGN,
  availRingSize,
  descTableSize,
  isValidQueueSize,
  usedRingSize,
} from "../spec/virtqueue.ts";

/** Default cap on the entries of one indirect table (the largest a le32 length / 16 allows in a u16-indexed table). */
export const DEFAULT_MAX_INDIRECT_ENTRIES = 65535;

/** Configuration of one device-side queue (what the driver, or a vhost-user frontend, set up). */
export interface DeviceQueueConfig {
  /** Queue size: a power of two in 1..32768. */
  size: number;
  /** Guest-physical address of the descriptor table (16-aligned, 16·size bytes). */
  descAddr: number;
  /** Guest-physical address of the available ring (2-aligned, 6 + 2·size bytes). */
  availAddr: number;
  /** Guest-physical address of the used ring (4-aligned, 6 + 8·size bytes). */
  usedAddr: number;
  /** VIRTIO_F_EVENT_IDX was negotiated. */
  eventIdx?: boolean;
  /** VIRTIO_F_INDIRECT_DESC was negotiated. */
  indirect?: boolean;
  /** Largest accepted indirect table, in entries (1..65535, default {@link DEFAULT_MAX_INDIRECT_ENTRIES}). */
  maxIndirectEntries?: number;
  /** Initial last_avail_idx (e.g. vhost-user SET_VRING_BASE), 0..65535; default 0. */
  nextAvail?: number;
  /** Start `nextUsed` from `used.idx` in guest memory (vhost-user reconnect) instead of 0. */
  usedIdxFromMemory?: boolean;
  /**
   * The inflight log to keep (vhost-user inflight I/O tracking). Implies
   * `usedIdxFromMemory`; a log that holds chains an earlier device left in
   * flight overrides `nextAvail` (see `DeviceQueue.recovery`).
   */
  inflight?: InflightTracker;
  /** Called once, when the queue becomes broken. */
  onBroken?: (err: VirtioError) => void;
}

const configError = (msg: string, details: Record<string, number>): VirtioError =>
  new VirtioError(ErrorCode.QUEUE_CONFIG, msg, details);

const hex = (v: number): string => `0x${v.toString(16)}`;

/** A checked configuration with its three parts mapped. */
export interface DeviceQueueParts {
  readonly size: number;
  readonly desc: GuestSlice;
  readonly avail: GuestSlice;
  readonly used: GuestSlice;
  readonly maxIndirect: number;
  readonly nextAvail: number;
}

/**
 * Validates the configuration and maps the three ring parts.
 *
 * @throws {VirtioError} `QUEUE_CONFIG` if the size is not a power of two in
 *   1..32768, a part is misaligned (16/2/4) or not inside one guest memory
 *   region, or `nextAvail` is not a u16.
 * @throws {RangeError} for a bad `maxIndirectEntries`.
 */
export function mapDeviceQueue(memory: GuestMemory, config: DeviceQueueConfig): DeviceQueueParts {
  const { size, descAddr, availAddr, usedAddr } = config;
  // §2.7: "Queue Size ... is always a power of 2. The maximum Queue Size value is 32768."
  if (!isValidQueueSize(size))
    throw configError(`queue size ${size} is not a power of two in 1..32768`, { size });
  const maxIndirect = config.maxIndirectEntries ?? DEFAULT_MAX_INDIRECT_ENTRIES;
  if (!Number.isInteger(maxIndirect) || maxIndirect < 1 || maxIndirect > 65535)
    throw new RangeError(`maxIndirectEntries must be an integer in 1..65535, got ${maxIndirect}`);
  const nextAvail = config.nextAvail ?? 0;
  if (!Number.isInteger(nextAvail) || nextAvail < 0 || nextAvail > 0xffff)
    throw configError(`initial avail index ${nextAvail} is not a u16`, { nextAvail });
  // §2.7 alignment table: descriptor table 16, available ring 2, used ring 4.
  const desc = mapRingPart(
    memory,
    "descriptor table",
    descAddr,
    descTableSize(size),
    VIRTQ_DESC_ALIGN,
  );
  const avail = mapRingPart(
    memory,
    "available ring",
    availAddr,
    availRingSize(size),
    VIRTQ_AVAIL_ALIGN,
  );
  const used = mapRingPart(memory, "used ring", usedAddr, usedRingSize(size), VIRTQ_USED_ALIGN);
  return { size, desc, avail, used, maxIndirect, nextAvail };
}

/**
 * Maps one ring part, split or packed: aligned, inside one region (the
 * split and packed alignment tables, §2.7 and §2.8.10.1).
 *
 * @throws {VirtioError} `QUEUE_CONFIG` otherwise.
 */
export function mapRingPart(
  memory: GuestMemory,
  name: string,
  addr: number,
  len: number,
  align: number,
): GuestSlice {
  if (!Number.isSafeInteger(addr) || addr < 0)
    throw configError(`${name} address ${addr} is not a guest address`, { addr });
  // §2.7 / §2.8.10.1: the driver MUST align each part (split: 16, 2, 4; packed: 16, 4, 4).
  if (addr % align !== 0)
    throw configError(`${name} at ${hex(addr)} is not ${align}-aligned`, { addr, align });
  if (!memory.isInOneRegion(addr, len)) {
    throw configError(`${name} [${hex(addr)}, +${len}) is not inside one guest memory region`, {
      addr,
      len,
    });
  }
  return memory.slice(addr, len);
}

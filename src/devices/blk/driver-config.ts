/**
 * virtio-blk driver side: which features to accept and what the device's
 * configuration space says. VIRTIO 1.2 §5.2.3 (feature bits), §5.2.4
 * (device configuration layout), §5.2.5 / §5.2.5.1 (device initialization,
 * driver requirements), §3.1.1 (driver initialization).
 *
 * The configuration space comes from the device and is untrusted: every
 * field is read little-endian from a copy, checked, and replaced by a safe
 * value where the spec or common practice gives one (the choices follow
 * Linux's virtio_blk probe):
 *
 * | field | when absent / out of range |
 * |---|---|
 * | `capacity` | above 2^53 bytes: `BLK_BAD_CONFIG` (not addressable with doubles) |
 * | `blk_size` | not a power of two in 512..65536: `BLK_BAD_CONFIG`; feature absent: 512 |
 * | `size_max` | feature absent: no limit (2^32 − 1); below 512: 512 (a sector per segment is always allowed) |
 * | `seg_max` | feature absent or 0: no limit from the device (the queue size still bounds it) |
 * | `num_queues` | feature absent: 1; 0: `BLK_BAD_CONFIG` |
 * | `max_discard_sectors`, `max_write_zeroes_sectors` | 0: no limit (2^32 − 1) |
 * | `max_discard_seg`, `max_write_zeroes_seg` | 0: 1 |
 * | `discard_sector_alignment` | 0: the logical block size |
 * | `writeback` | CONFIG_WCE absent: writeback iff FLUSH was negotiated (§5.2.5.1) |
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../../errors.ts";
import {
  BlkConfig,
  VIRTIO_BLK_CONFIG_SIZE,
  VIRTIO_BLK_F_BLK_SIZE,
  VIRTIO_BLK_F_CONFIG_WCE,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_MQ,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_SEG_MAX,
  VIRTIO_BLK_F_SIZE_MAX,
  VIRTIO_BLK_F_TOPOLOGY,
  VIRTIO_BLK_F_WRITE_ZEROES,
  VIRTIO_BLK_SECTOR_SIZE,
} from "../../spec/blk.ts";
import { VIRTIO_F_VERSION_1, featureBit, hasFeature } from "../../spec/virtio.ts";
import { BLK_FEATURES, type BlkFeatureName } from "./config.ts";

/**
 * Features this driver can use (everything in {@link BLK_FEATURES} except
 * GEOMETRY, which it ignores). RING_PACKED: the rings are packed (§2.8)
 * when the device offers them; `exclude: ["RING_PACKED"]` keeps split ones.
 */
export const BLK_DRIVER_FEATURE_NAMES: readonly BlkFeatureName[] = [
  "VERSION_1",
  "RING_INDIRECT_DESC",
  "RING_EVENT_IDX",
  "RING_PACKED",
  "SEG_MAX",
  "SIZE_MAX",
  "BLK_SIZE",
  "TOPOLOGY",
  "FLUSH",
  "CONFIG_WCE",
  "RO",
  "MQ",
  "DISCARD",
  "WRITE_ZEROES",
];

/** The feature mask of {@link BLK_DRIVER_FEATURE_NAMES}. */
export const BLK_DRIVER_FEATURES: bigint = BLK_DRIVER_FEATURE_NAMES.reduce(
  (m, name) => m | featureBit(BLK_FEATURES[name]),
  0n,
);

/** Options of {@link selectBlkFeatures}. */
export interface BlkFeatureSelection {
  /** Features not to accept even if offered (e.g. `["MQ"]` for one queue, `["RING_EVENT_IDX"]`, `["RING_PACKED"]` for split rings). */
  readonly exclude?: readonly BlkFeatureName[];
}

/**
 * Picks the features to accept: what the driver can use ∩ what the device
 * offers, minus `exclude`. VIRTIO_BLK_F_RO is always accepted when offered
 * (§5.2.6.1 "A driver SHOULD accept the VIRTIO_BLK_F_RO feature if
 * offered"), and CONFIG_WCE only together with FLUSH (the driver can only
 * use a writeback cache it can flush).
 *
 * @throws {VirtioError} `FEATURES_REFUSED` if the device does not offer
 *   VIRTIO_F_VERSION_1 (this driver speaks the modern interface only).
 * @throws {RangeError} for an unknown name in `exclude`, or for excluding
 *   VERSION_1 or RO.
 */
export function selectBlkFeatures(offered: bigint, selection: BlkFeatureSelection = {}): bigint {
  let wanted = BLK_DRIVER_FEATURES;
  for (const name of selection.exclude ?? []) {
    if (!BLK_DRIVER_FEATURE_NAMES.includes(name))
      throw new RangeError(`unknown or unused virtio-blk feature ${String(name)}`);
    if (name === "VERSION_1" || name === "RO")
      throw new RangeError(`${name} cannot be excluded (the driver relies on it)`);
    wanted &= ~featureBit(BLK_FEATURES[name]);
  }
  if (!hasFeature(offered, VIRTIO_F_VERSION_1))
    throw new VirtioError(
      ErrorCode.FEATURES_REFUSED,
      "device does not offer VIRTIO_F_VERSION_1 (legacy devices are not supported)",
      { offered },
    );
  let accepted = wanted & offered;
  if (!hasFeature(accepted, VIRTIO_BLK_F_FLUSH)) accepted &= ~featureBit(VIRTIO_BLK_F_CONFIG_WCE);
  return accepted;
}

/** The device's configuration as the driver uses it, after the checks above. */
export interface BlkDriverConfig {
  /** The negotiated features this configuration was read under. */
  readonly features: bigint;
  /** Disk size in 512-byte sectors. */
  readonly capacity: number;
  /** Disk size in bytes (capacity × 512). */
  readonly capacityBytes: number;
  /** Logical block size in bytes: offsets and lengths must be multiples of it (512 without BLK_SIZE). */
  readonly blockSize: number;
  /** Largest data segment in bytes (2^32 − 1 without SIZE_MAX). */
  readonly sizeMax: number;
  /** Most data segments per request (`Infinity` without SEG_MAX). */
  readonly segMax: number;
  /** Number of request queues (1 without MQ). */
  readonly numQueues: number;
  /** VIRTIO_BLK_F_RO offered: every write-type request fails. */
  readonly readOnly: boolean;
  /** VIRTIO_BLK_F_FLUSH negotiated. */
  readonly flush: boolean;
  /** The device has a writeback cache: completed writes are stable only after a FLUSH. */
  readonly writeback: boolean;
  /** VIRTIO_BLK_F_TOPOLOGY fields (0 when not negotiated). */
  readonly physicalBlockExp: number;
  readonly alignmentOffset: number;
  /** In logical blocks. */
  readonly minIoSize: number;
  /** In logical blocks. */
  readonly optIoSize: number;
  /** VIRTIO_BLK_F_DISCARD negotiated, and its limits. */
  readonly discard: boolean;
  readonly maxDiscardSectors: number;
  readonly maxDiscardSeg: number;
  /** In 512-byte sectors. */
  readonly discardSectorAlignment: number;
  /** VIRTIO_BLK_F_WRITE_ZEROES negotiated, and its limits. */
  readonly writeZeroes: boolean;
  readonly maxWriteZeroesSectors: number;
  readonly maxWriteZeroesSeg: number;
  readonly writeZeroesMayUnmap: boolean;
}

const U32_MAX = 0xffff_ffff;

const u32 = (dv: DataView, off: number): number => dv.getUint32(off, true);
const orNoLimit = (v: number): number => (v === 0 ? U32_MAX : v);

function badConfig(message: string, details: Record<string, number | bigint>): VirtioError {
  return new VirtioError(ErrorCode.BLK_BAD_CONFIG, `virtio-blk config: ${message}`, details);
}

/**
 * Parses `struct virtio_blk_config` as read from the device (after
 * FEATURES_OK: §5.2.5.1 "The driver MUST NOT read writeback before setting
 * the FEATURES_OK device status bit"). Bytes past the end of `bytes` read as
 * 0. Fields of features not in `features` are ignored.
 *
 * @throws {VirtioError} `BLK_BAD_CONFIG` for a capacity, block size or
 *   queue count the driver cannot use (see the table in the module header).
 */
export function parseBlkConfig(bytes: Uint8Array, features: bigint): BlkDriverConfig {
  const raw = new Uint8Array(VIRTIO_BLK_CONFIG_SIZE);
  raw.set(bytes.subarray(0, VIRTIO_BLK_CONFIG_SIZE));
  const dv = new DataView(raw.buffer);
  const has = (bit: number): boolean => hasFeature(features, bit);
  const capacity = readCapacity(dv);
  const blockSize = has(VIRTIO_BLK_F_BLK_SIZE) ? readBlockSize(dv) : VIRTIO_BLK_SECTOR_SIZE;
  const numQueues = has(VIRTIO_BLK_F_MQ) ? readNumQueues(dv) : 1;
  const segMaxRaw = has(VIRTIO_BLK_F_SEG_MAX) ? u32(dv, BlkConfig.seg_max) : 0;
  const flush = has(VIRTIO_BLK_F_FLUSH);
  return {
    features,
    capacity,
    capacityBytes: capacity * VIRTIO_BLK_SECTOR_SIZE,
    blockSize,
    sizeMax: has(VIRTIO_BLK_F_SIZE_MAX) ? Math.max(512, u32(dv, BlkConfig.size_max)) : U32_MAX,
    segMax: segMaxRaw === 0 ? Infinity : segMaxRaw,
    numQueues,
    readOnly: has(VIRTIO_BLK_F_RO),
    flush,
    // §5.2.5.1: without CONFIG_WCE "If VIRTIO_BLK_F_CONFIG_WCE was not negotiated but
    // VIRTIO_BLK_F_FLUSH was, the driver SHOULD assume presence of a writeback cache."
    writeback: has(VIRTIO_BLK_F_CONFIG_WCE) ? raw[BlkConfig.writeback] !== 0 : flush,
    ...topologyFields(dv, has(VIRTIO_BLK_F_TOPOLOGY)),
    ...discardFields(dv, has(VIRTIO_BLK_F_DISCARD), blockSize / VIRTIO_BLK_SECTOR_SIZE),
    ...writeZeroesFields(dv, has(VIRTIO_BLK_F_WRITE_ZEROES)),
  };
}

/** `capacity` in sectors, at most 2^53 bytes. */
function readCapacity(dv: DataView): number {
  const capacity64 = dv.getBigUint64(BlkConfig.capacity, true);
  if (capacity64 * BigInt(VIRTIO_BLK_SECTOR_SIZE) > BigInt(Number.MAX_SAFE_INTEGER))
    throw badConfig(`capacity ${capacity64} sectors is beyond 2^53 bytes`, {
      capacity: capacity64,
    });
  return Number(capacity64);
}

/** `blk_size`: a power of two in 512..65536. */
function readBlockSize(dv: DataView): number {
  const blockSize = u32(dv, BlkConfig.blk_size);
  if (blockSize < 512 || blockSize > 65536 || (blockSize & (blockSize - 1)) !== 0)
    throw badConfig(`blk_size ${blockSize} is not a power of two in 512..65536`, { blockSize });
  return blockSize;
}

/** `num_queues` (MQ negotiated): at least 1. */
function readNumQueues(dv: DataView): number {
  const numQueues = dv.getUint16(BlkConfig.num_queues, true);
  if (numQueues === 0) throw badConfig("MQ negotiated but num_queues is 0", { numQueues });
  return numQueues;
}

type TopologyFields = Pick<
  BlkDriverConfig,
  "physicalBlockExp" | "alignmentOffset" | "minIoSize" | "optIoSize"
>;

/** The TOPOLOGY fields (0 when not negotiated). */
function topologyFields(dv: DataView, topology: boolean): TopologyFields {
  return {
    physicalBlockExp: topology ? dv.getUint8(BlkConfig.physical_block_exp) : 0,
    alignmentOffset: topology ? dv.getUint8(BlkConfig.alignment_offset) : 0,
    minIoSize: topology ? dv.getUint16(BlkConfig.min_io_size, true) : 0,
    optIoSize: topology ? u32(dv, BlkConfig.opt_io_size) : 0,
  };
}

type DiscardFields = Pick<
  BlkDriverConfig,
  "discard" | "maxDiscardSectors" | "maxDiscardSeg" | "discardSectorAlignment"
>;

/** The DISCARD limits; the alignment defaults to the logical block size. */
function discardFields(dv: DataView, discard: boolean, blockSectors: number): DiscardFields {
  return {
    discard,
    maxDiscardSectors: discard ? orNoLimit(u32(dv, BlkConfig.max_discard_sectors)) : 0,
    maxDiscardSeg: discard ? Math.max(1, u32(dv, BlkConfig.max_discard_seg)) : 0,
    discardSectorAlignment: discard
      ? u32(dv, BlkConfig.discard_sector_alignment) || blockSectors
      : blockSectors,
  };
}

type WriteZeroesFields = Pick<
  BlkDriverConfig,
  "writeZeroes" | "maxWriteZeroesSectors" | "maxWriteZeroesSeg" | "writeZeroesMayUnmap"
>;

/** The WRITE_ZEROES limits. */
function writeZeroesFields(dv: DataView, writeZeroes: boolean): WriteZeroesFields {
  return {
    writeZeroes,
    maxWriteZeroesSectors: writeZeroes ? orNoLimit(u32(dv, BlkConfig.max_write_zeroes_sectors)) : 0,
    maxWriteZeroesSeg: writeZeroes ? Math.max(1, u32(dv, BlkConfig.max_write_zeroes_seg)) : 0,
    writeZeroesMayUnmap: writeZeroes && dv.getUint8(BlkConfig.write_zeroes_may_unmap) !== 0,
  };
}

/**
 * virtio-blk device options: what an embedder may ask for, checked and
 * completed with defaults, and the feature bits they make the device offer.
 * VIRTIO 1.2 §5.2.3 (Feature bits), §5.2.4 (Device configuration layout:
 * the limits' fields), §5.2.5.2 (FLUSH must be offered with CONFIG_WCE).
 *
 * Every limit has a default; a value outside what its field can hold, or
 * what a driver can honour (seg_max ≤ queue size − 2, sector limits in whole
 * logical blocks), is a RangeError when the device is created.
 *
 * @module
 */
import { VIRTIO_BLK_ID_BYTES } from "../../spec/blk.ts";
import * as blk from "../../spec/blk.ts";
import {
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  featureBit,
} from "../../spec/virtio.ts";

/** Feature bit of each switchable feature, by its spec name without the prefix. */
export const BLK_FEATURES = {
  VERSION_1: VIRTIO_F_VERSION_1,
  RING_INDIRECT_DESC: VIRTIO_RING_F_INDIRECT_DESC,
  RING_EVENT_IDX: VIRTIO_RING_F_EVENT_IDX,
  RING_PACKED: VIRTIO_F_RING_PACKED,
  SIZE_MAX: blk.VIRTIO_BLK_F_SIZE_MAX,
  SEG_MAX: blk.VIRTIO_BLK_F_SEG_MAX,
  GEOMETRY: blk.VIRTIO_BLK_F_GEOMETRY,
  RO: blk.VIRTIO_BLK_F_RO,
  BLK_SIZE: blk.VIRTIO_BLK_F_BLK_SIZE,
  FLUSH: blk.VIRTIO_BLK_F_FLUSH,
  TOPOLOGY: blk.VIRTIO_BLK_F_TOPOLOGY,
  CONFIG_WCE: blk.VIRTIO_BLK_F_CONFIG_WCE,
  MQ: blk.VIRTIO_BLK_F_MQ,
  DISCARD: blk.VIRTIO_BLK_F_DISCARD,
  WRITE_ZEROES: blk.VIRTIO_BLK_F_WRITE_ZEROES,
} as const;

/** A switchable feature's name, e.g. `"DISCARD"`. */
export type BlkFeatureName = keyof typeof BLK_FEATURES;

/** Disk geometry (legacy; offered only when given). */
export interface BlkGeometry {
  readonly cylinders: number;
  readonly heads: number;
  readonly sectors: number;
}

/** Options for {@link BlkDeviceConfig}. Every limit has a sensible default. */
export interface BlkDeviceOptions {
  /** Disk size in bytes: a multiple of the logical block size (usually the backing store's size). */
  readonly capacityBytes: number;
  /** Offer VIRTIO_BLK_F_RO: every write-type request fails with IOERR (default false). */
  readonly readOnly?: boolean;
  /** Queue size the transport will use; seg_max must stay ≤ queueSize − 2 (default 256). */
  readonly queueSize?: number;
  /** Logical block size in bytes: a power of two, 512 … 65536 (default 512). */
  readonly logicalBlockSize?: number;
  /** log2(physical block / logical block) (default 0). */
  readonly physicalBlockExp?: number;
  /** Offset of the first aligned logical block (default 0). */
  readonly alignmentOffset?: number;
  /** Suggested minimum I/O size in logical blocks (default 0: no hint). */
  readonly minIoSize?: number;
  /** Optimal I/O size in logical blocks (default 0: no hint). */
  readonly optIoSize?: number;
  /** Maximum segments per request (default queueSize − 2). */
  readonly segMax?: number;
  /** Maximum bytes per segment; must be > 0 (default 1 MiB; 0 would make Linux clamp to 4 KiB). */
  readonly sizeMax?: number;
  /** Number of request queues (default 1). */
  readonly numQueues?: number;
  /** Cache mode after reset: true = writeback, false = write-through (default true). */
  readonly writeback?: boolean;
  /** Offer VIRTIO_BLK_F_GEOMETRY with these values. */
  readonly geometry?: BlkGeometry;
  /** In 512-byte sectors (default: the largest multiple of the block size ≤ 0x3fffff). */
  readonly maxDiscardSectors?: number;
  /** Default 1. */
  readonly maxDiscardSeg?: number;
  /**
   * In 512-byte sectors; DISCARD segments not aligned to it fail with IOERR.
   * Default: the logical block size. Linux aligns discards only to the
   * logical block size, so a larger value makes some guest discards fail.
   */
  readonly discardSectorAlignment?: number;
  /** In 512-byte sectors (default as for discard). */
  readonly maxWriteZeroesSectors?: number;
  /** Default 1. */
  readonly maxWriteZeroesSeg?: number;
  /** Advertise that WRITE_ZEROES with UNMAP may deallocate (default true). */
  readonly writeZeroesMayUnmap?: boolean;
  /** Device ID for GET_ID: ASCII, at most 20 bytes (default empty). */
  readonly serial?: string;
  /** Turn single offered features on or off (defaults: all on; RO follows readOnly; GEOMETRY follows geometry). */
  readonly features?: Partial<Readonly<Record<BlkFeatureName, boolean>>>;
}

const DEFAULT_MAX_SECTORS = 0x3fffff;

/** `v` if it is an integer in min..max, else a RangeError naming the option. */
export function checkInt(name: string, v: number, min: number, max: number): number {
  if (!Number.isSafeInteger(v) || v < min || v > max)
    throw new RangeError(`${name} must be an integer in ${min}..${max}, got ${v}`);
  return v;
}

const isPowerOfTwo = (v: number): boolean => v > 0 && (v & (v - 1)) === 0;

/** Validated numbers, after defaults. */
export interface Settings {
  readonly blockSectors: number;
  readonly queueSize: number;
  readonly segMax: number;
  readonly sizeMax: number;
  readonly numQueues: number;
  readonly physicalBlockExp: number;
  readonly alignmentOffset: number;
  readonly minIoSize: number;
  readonly optIoSize: number;
  readonly maxDiscardSectors: number;
  readonly maxDiscardSeg: number;
  readonly discardSectorAlignment: number;
  readonly maxWriteZeroesSectors: number;
  readonly maxWriteZeroesSeg: number;
  readonly writeZeroesMayUnmap: boolean;
  readonly writeback: boolean;
}

/** The options' numbers, checked and completed with defaults. */
export function settings(o: BlkDeviceOptions): Settings {
  const lbs = o.logicalBlockSize ?? 512;
  if (!isPowerOfTwo(lbs) || lbs < 512 || lbs > 65536)
    throw new RangeError(`logicalBlockSize must be a power of two in 512..65536, got ${lbs}`);
  const blockSectors = lbs / 512;
  const queueSize = checkInt("queueSize", o.queueSize ?? 256, 3, 32768);
  const align = discardAlignment(o.discardSectorAlignment, blockSectors);
  return {
    blockSectors,
    queueSize,
    // seg_max ≤ queue size − 2 (as QEMU reports): a driver that honours it never builds a chain the ring refuses.
    segMax: checkInt("segMax", o.segMax ?? queueSize - 2, 1, queueSize - 2),
    sizeMax: checkInt("sizeMax", o.sizeMax ?? 1 << 20, 512, 0xffffffff),
    numQueues: checkInt("numQueues", o.numQueues ?? 1, 1, 0xffff),
    physicalBlockExp: checkInt("physicalBlockExp", o.physicalBlockExp ?? 0, 0, 15),
    alignmentOffset: checkInt("alignmentOffset", o.alignmentOffset ?? 0, 0, 0xff),
    minIoSize: checkInt("minIoSize", o.minIoSize ?? 0, 0, 0xffff),
    optIoSize: checkInt("optIoSize", o.optIoSize ?? 0, 0, 0xffffffff),
    maxDiscardSectors: sectorLimit("maxDiscardSectors", o.maxDiscardSectors, blockSectors),
    maxDiscardSeg: checkInt("maxDiscardSeg", o.maxDiscardSeg ?? 1, 1, 0xffff),
    discardSectorAlignment: align,
    maxWriteZeroesSectors: sectorLimit(
      "maxWriteZeroesSectors",
      o.maxWriteZeroesSectors,
      blockSectors,
    ),
    maxWriteZeroesSeg: checkInt("maxWriteZeroesSeg", o.maxWriteZeroesSeg ?? 1, 1, 0xffff),
    writeZeroesMayUnmap: o.writeZeroesMayUnmap ?? true,
    writeback: o.writeback ?? true,
  };
}

/** A sector limit: whole logical blocks, by default the largest such multiple ≤ 0x3fffff. */
function sectorLimit(name: string, v: number | undefined, blockSectors: number): number {
  const maxSectors = DEFAULT_MAX_SECTORS - (DEFAULT_MAX_SECTORS % blockSectors);
  const n = checkInt(name, v ?? maxSectors, 0, 0xffffffff);
  if (n % blockSectors !== 0)
    throw new RangeError(`${name} must be a multiple of the logical block size in sectors`);
  return n;
}

/** `discard_sector_alignment`: whole logical blocks, by default one. */
function discardAlignment(v: number | undefined, blockSectors: number): number {
  const align = checkInt("discardSectorAlignment", v ?? blockSectors, 1, 0xffffffff);
  if (align % blockSectors !== 0)
    throw new RangeError("discardSectorAlignment must be a multiple of the logical block size");
  return align;
}

/** The GET_ID string as its 20 bytes (zero-padded; printable ASCII only). */
export function serialId(serial: string | undefined): Uint8Array {
  const id = new Uint8Array(VIRTIO_BLK_ID_BYTES);
  const s = serial ?? "";
  if (s.length > VIRTIO_BLK_ID_BYTES || !/^[\x20-\x7e]*$/.test(s))
    throw new RangeError(
      `serial must be at most 20 printable ASCII characters, got ${JSON.stringify(s)}`,
    );
  for (let i = 0; i < s.length; i++) id[i] = s.charCodeAt(i);
  return id;
}

/** The feature bits the options make the device offer, and whether it is read-only. */
export function offeredFeatures(o: BlkDeviceOptions): { features: bigint; readOnly: boolean } {
  const sw = o.features ?? {};
  const readOnly = sw.RO ?? o.readOnly ?? false;
  if (o.readOnly === true && sw.RO === false)
    throw new RangeError("a read-only device must offer VIRTIO_BLK_F_RO");
  const on: Record<BlkFeatureName, boolean> = {
    VERSION_1: true,
    RING_INDIRECT_DESC: true,
    RING_EVENT_IDX: true,
    RING_PACKED: true,
    SIZE_MAX: true,
    SEG_MAX: true,
    GEOMETRY: o.geometry !== undefined,
    RO: readOnly,
    BLK_SIZE: true,
    FLUSH: true,
    TOPOLOGY: true,
    CONFIG_WCE: sw.FLUSH ?? true,
    MQ: true,
    DISCARD: true,
    WRITE_ZEROES: true,
  };
  for (const name of Object.keys(sw) as BlkFeatureName[]) {
    if (!(name in BLK_FEATURES)) throw new RangeError(`unknown feature ${name}`);
    const v = sw[name];
    if (v !== undefined) on[name] = v;
  }
  // §5.2.5.2: "Devices SHOULD always offer VIRTIO_BLK_F_FLUSH, and MUST offer it if they offer
  // VIRTIO_BLK_F_CONFIG_WCE."
  if (on.CONFIG_WCE && !on.FLUSH) throw new RangeError("CONFIG_WCE needs FLUSH to be offered");
  if (on.GEOMETRY && o.geometry === undefined)
    throw new RangeError("GEOMETRY needs the geometry option");
  if (!on.MQ && (o.numQueues ?? 1) > 1) throw new RangeError("numQueues > 1 needs MQ");
  let features = 0n;
  for (const name of Object.keys(BLK_FEATURES) as BlkFeatureName[])
    if (on[name]) features |= featureBit(BLK_FEATURES[name]);
  return { features, readOnly };
}

/**
 * virtio-blk device configuration: offered features and the
 * `struct virtio_blk_config` bytes. VIRTIO 1.2 §5.2.3 (Feature bits), §5.2.4
 * (Device configuration layout), §5.2.5 (Device Initialization), §5.2.6.2
 * (cache modes: when a write is stable).
 *
 * The config space is the device's own buffer (not guest memory), written
 * little-endian through a DataView at the offsets of `BlkConfig` in spec/blk.ts.
 * Fields whose feature is not offered read as 0.
 *
 * @module
 */
import { BlkConfig, VIRTIO_BLK_CONFIG_SIZE, VIRTIO_BLK_ID_BYTES } from "../../spec/blk.ts";
import * as blk from "../../spec/blk.ts";
import {
  VIRTIO_F_VERSION_1,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  featureBit,
} from "../../spec/virtio.ts";
import type { BlkRequestPolicy } from "./request.ts";

/** Feature bit of each switchable feature, by its spec name without the prefix. */
export const BLK_FEATURES = {
  VERSION_1: VIRTIO_F_VERSION_1,
  RING_INDIRECT_DESC: VIRTIO_RING_F_INDIRECT_DESC,
  RING_EVENT_IDX: VIRTIO_RING_F_EVENT_IDX,
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

function checkInt(name: string, v: number, min: number, max: number): number {
  if (!Number.isSafeInteger(v) || v < min || v > max)
    throw new RangeError(`${name} must be an integer in ${min}..${max}, got ${v}`);
  return v;
}

const isPowerOfTwo = (v: number): boolean => v > 0 && (v & (v - 1)) === 0;

/** Validated numbers, after defaults. */
interface Settings {
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

function settings(o: BlkDeviceOptions): Settings {
  const lbs = o.logicalBlockSize ?? 512;
  if (!isPowerOfTwo(lbs) || lbs < 512 || lbs > 65536)
    throw new RangeError(`logicalBlockSize must be a power of two in 512..65536, got ${lbs}`);
  const blockSectors = lbs / 512;
  const queueSize = checkInt("queueSize", o.queueSize ?? 256, 3, 32768);
  const maxSectors = DEFAULT_MAX_SECTORS - (DEFAULT_MAX_SECTORS % blockSectors);
  const sectorLimit = (name: string, v: number | undefined): number => {
    const n = checkInt(name, v ?? maxSectors, 0, 0xffffffff);
    if (n % blockSectors !== 0)
      throw new RangeError(`${name} must be a multiple of the logical block size in sectors`);
    return n;
  };
  const align = checkInt(
    "discardSectorAlignment",
    o.discardSectorAlignment ?? blockSectors,
    1,
    0xffffffff,
  );
  if (align % blockSectors !== 0)
    throw new RangeError("discardSectorAlignment must be a multiple of the logical block size");
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
    maxDiscardSectors: sectorLimit("maxDiscardSectors", o.maxDiscardSectors),
    maxDiscardSeg: checkInt("maxDiscardSeg", o.maxDiscardSeg ?? 1, 1, 0xffff),
    discardSectorAlignment: align,
    maxWriteZeroesSectors: sectorLimit("maxWriteZeroesSectors", o.maxWriteZeroesSectors),
    maxWriteZeroesSeg: checkInt("maxWriteZeroesSeg", o.maxWriteZeroesSeg ?? 1, 1, 0xffff),
    writeZeroesMayUnmap: o.writeZeroesMayUnmap ?? true,
    writeback: o.writeback ?? true,
  };
}

function serialId(serial: string | undefined): Uint8Array {
  const id = new Uint8Array(VIRTIO_BLK_ID_BYTES);
  const s = serial ?? "";
  if (s.length > VIRTIO_BLK_ID_BYTES || !/^[\x20-\x7e]*$/.test(s))
    throw new RangeError(
      `serial must be at most 20 printable ASCII characters, got ${JSON.stringify(s)}`,
    );
  for (let i = 0; i < s.length; i++) id[i] = s.charCodeAt(i);
  return id;
}

function offeredFeatures(o: BlkDeviceOptions): { features: bigint; readOnly: boolean } {
  const sw = o.features ?? {};
  const readOnly = sw.RO ?? o.readOnly ?? false;
  if (o.readOnly === true && sw.RO === false)
    throw new RangeError("a read-only device must offer VIRTIO_BLK_F_RO");
  const on: Record<BlkFeatureName, boolean> = {
    VERSION_1: true,
    RING_INDIRECT_DESC: true,
    RING_EVENT_IDX: true,
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

/**
 * The device's configuration and negotiated state, and the policy the
 * request parser follows.
 *
 * @example
 * ```ts
 * const cfg = new BlkDeviceConfig({ capacityBytes: backing.size, serial: "disk0" });
 * cfg.negotiate(driverFeatures);
 * cfg.readConfig(0, out); // for the transport
 * ```
 */
export class BlkDeviceConfig implements BlkRequestPolicy {
  /** Features the device offers. */
  readonly offeredFeatures: bigint;
  readonly readOnly: boolean;
  readonly blockSectors: number;
  readonly maxDiscardSectors: number;
  readonly maxDiscardSeg: number;
  readonly discardSectorAlignment: number;
  readonly maxWriteZeroesSectors: number;
  readonly maxWriteZeroesSeg: number;
  readonly id: Uint8Array;
  readonly numQueues: number;
  readonly #s: Settings;
  readonly #bytes = new Uint8Array(VIRTIO_BLK_CONFIG_SIZE);
  readonly #dv = new DataView(this.#bytes.buffer);
  #capacity = 0;
  #negotiated = 0n;
  #writeback: boolean;
  // Negotiated bits the data path asks about per request, cached as booleans.
  #flushNeg = false;
  #discardNeg = false;
  #wzNeg = false;
  #wceNeg = false;

  constructor(options: BlkDeviceOptions) {
    const s = settings(options);
    const { features, readOnly } = offeredFeatures(options);
    this.#s = s;
    this.offeredFeatures = features;
    this.readOnly = readOnly;
    this.blockSectors = s.blockSectors;
    this.maxDiscardSectors = s.maxDiscardSectors;
    this.maxDiscardSeg = s.maxDiscardSeg;
    this.discardSectorAlignment = s.discardSectorAlignment;
    this.maxWriteZeroesSectors = s.maxWriteZeroesSectors;
    this.maxWriteZeroesSeg = s.maxWriteZeroesSeg;
    this.numQueues = s.numQueues;
    this.id = serialId(options.serial);
    this.#writeback = s.writeback;
    this.#fill(options.geometry);
    this.resize(options.capacityBytes);
  }

  #offers(bit: number): boolean {
    return (this.offeredFeatures & featureBit(bit)) !== 0n;
  }

  /** True if `bit` was negotiated. */
  negotiated(bit: number): boolean {
    return (this.#negotiated & featureBit(bit)) !== 0n;
  }

  /** Writes every field except capacity and writeback (those change at run time). */
  #fill(geometry: BlkGeometry | undefined): void {
    const s = this.#s;
    const dv = this.#dv;
    const has = (bit: number): boolean => this.#offers(bit);
    if (has(blk.VIRTIO_BLK_F_SIZE_MAX)) dv.setUint32(BlkConfig.size_max, s.sizeMax, true);
    if (has(blk.VIRTIO_BLK_F_SEG_MAX)) dv.setUint32(BlkConfig.seg_max, s.segMax, true);
    if (geometry !== undefined && has(blk.VIRTIO_BLK_F_GEOMETRY)) {
      dv.setUint16(
        BlkConfig.geometry_cylinders,
        checkInt("cylinders", geometry.cylinders, 0, 0xffff),
        true,
      );
      dv.setUint8(BlkConfig.geometry_heads, checkInt("heads", geometry.heads, 0, 0xff));
      dv.setUint8(BlkConfig.geometry_sectors, checkInt("sectors", geometry.sectors, 0, 0xff));
    }
    if (has(blk.VIRTIO_BLK_F_BLK_SIZE))
      dv.setUint32(BlkConfig.blk_size, s.blockSectors * 512, true);
    if (has(blk.VIRTIO_BLK_F_TOPOLOGY)) {
      dv.setUint8(BlkConfig.physical_block_exp, s.physicalBlockExp);
      dv.setUint8(BlkConfig.alignment_offset, s.alignmentOffset);
      dv.setUint16(BlkConfig.min_io_size, s.minIoSize, true);
      dv.setUint32(BlkConfig.opt_io_size, s.optIoSize, true);
    }
    if (has(blk.VIRTIO_BLK_F_MQ)) dv.setUint16(BlkConfig.num_queues, s.numQueues, true);
    if (has(blk.VIRTIO_BLK_F_DISCARD)) {
      dv.setUint32(BlkConfig.max_discard_sectors, s.maxDiscardSectors, true);
      dv.setUint32(BlkConfig.max_discard_seg, s.maxDiscardSeg, true);
      dv.setUint32(BlkConfig.discard_sector_alignment, s.discardSectorAlignment, true);
    }
    if (has(blk.VIRTIO_BLK_F_WRITE_ZEROES)) {
      dv.setUint32(BlkConfig.max_write_zeroes_sectors, s.maxWriteZeroesSectors, true);
      dv.setUint32(BlkConfig.max_write_zeroes_seg, s.maxWriteZeroesSeg, true);
      dv.setUint8(BlkConfig.write_zeroes_may_unmap, s.writeZeroesMayUnmap ? 1 : 0);
    }
    // §5.2.5.2: "The device MUST initialize padding bytes unused0 and unused1 to 0." (never written)
    this.#storeWriteback();
  }

  #storeWriteback(): void {
    if (this.#offers(blk.VIRTIO_BLK_F_CONFIG_WCE))
      this.#dv.setUint8(BlkConfig.writeback, this.#writeback ? 1 : 0);
  }

  /** Capacity in 512-byte sectors. */
  get capacity(): number {
    return this.#capacity;
  }

  /** Size of the config space in bytes. */
  get size(): number {
    return this.#bytes.length;
  }

  /** Features both sides agreed on (0 before {@link negotiate}). */
  get negotiatedFeatures(): bigint {
    return this.#negotiated;
  }

  get flushNegotiated(): boolean {
    return this.#flushNeg;
  }
  get discardNegotiated(): boolean {
    return this.#discardNeg;
  }
  get writeZeroesNegotiated(): boolean {
    return this.#wzNeg;
  }

  /** Current cache mode: true = writeback (the `writeback` field). */
  get writeback(): boolean {
    return this.#writeback;
  }

  /**
   * True when every write must be stable before it completes. §5.2.6.2: a
   * write is stable once completed if neither CONFIG_WCE nor FLUSH was
   * negotiated (FLUSH offered), or CONFIG_WCE was negotiated and `writeback`
   * is 0; without FLUSH offered we commit before completion too (allowed,
   * and the only safe choice since the driver cannot flush).
   */
  get writeThrough(): boolean {
    return this.#wceNeg ? !this.#writeback : !this.#flushNeg;
  }

  /** Whether WRITE_ZEROES with UNMAP may deallocate. */
  get writeZeroesMayUnmap(): boolean {
    return this.#s.writeZeroesMayUnmap;
  }

  #setNegotiated(features: bigint): void {
    this.#negotiated = features;
    this.#flushNeg = this.negotiated(blk.VIRTIO_BLK_F_FLUSH);
    this.#discardNeg = this.negotiated(blk.VIRTIO_BLK_F_DISCARD);
    this.#wzNeg = this.negotiated(blk.VIRTIO_BLK_F_WRITE_ZEROES);
    this.#wceNeg = this.negotiated(blk.VIRTIO_BLK_F_CONFIG_WCE);
  }

  /** Records the driver's features (masked to what is offered) and returns the result. */
  negotiate(driverFeatures: bigint): bigint {
    this.#setNegotiated(driverFeatures & this.offeredFeatures);
    if (this.#wceNeg && !this.#flushNeg) {
      // §5.2.5.2: "If VIRTIO_BLK_F_CONFIG_WCE is negotiated but VIRTIO_BLK_F_FLUSH is not, the
      // device MUST initialize writeback to 0."
      this.#writeback = false;
      this.#storeWriteback();
    }
    return this.#negotiated;
  }

  /** Device reset: no features, cache mode back to its initial value. */
  reset(): void {
    this.#setNegotiated(0n);
    this.#writeback = this.#s.writeback;
    this.#storeWriteback();
  }

  /**
   * Checks a new disk size before anything is resized.
   *
   * @throws {RangeError} unless `capacityBytes` is a non-negative multiple of
   *   the logical block size.
   */
  checkCapacity(capacityBytes: number): void {
    const blockBytes = this.blockSectors * 512;
    if (
      !Number.isSafeInteger(capacityBytes) ||
      capacityBytes < 0 ||
      capacityBytes % blockBytes !== 0
    )
      throw new RangeError(
        `capacity must be a non-negative multiple of ${blockBytes} bytes, got ${capacityBytes}`,
      );
  }

  /**
   * Sets a new capacity (bytes, a multiple of the logical block size). The
   * caller bumps the config generation and sends a config-change notification.
   */
  resize(capacityBytes: number): void {
    this.checkCapacity(capacityBytes);
    this.#capacity = capacityBytes / 512;
    this.#dv.setUint32(BlkConfig.capacity, this.#capacity >>> 0, true);
    this.#dv.setUint32(BlkConfig.capacity + 4, Math.floor(this.#capacity / 0x1_0000_0000), true);
  }

  /**
   * Copies config bytes from `offset` into `dst`; bytes past the end read as
   * 0. `offset` may come from the driver: anything outside reads as zeroes.
   */
  readConfig(offset: number, dst: Uint8Array): void {
    dst.fill(0);
    if (!Number.isSafeInteger(offset) || offset < 0 || offset >= this.#bytes.length) return;
    dst.set(this.#bytes.subarray(offset, Math.min(this.#bytes.length, offset + dst.length)));
  }

  /** A copy of the whole config space. */
  configBytes(): Uint8Array {
    return this.#bytes.slice();
  }

  /**
   * A driver write to config space. Only `writeback` is writable, and only
   * when CONFIG_WCE was negotiated; other bytes are ignored. Returns true if
   * the cache mode changed.
   */
  writeConfig(offset: number, src: Uint8Array): boolean {
    const at = BlkConfig.writeback - offset;
    if (!Number.isSafeInteger(offset) || at < 0 || at >= src.length) return false;
    if (!this.#wceNeg) return false;
    const wb = src[at] !== 0;
    if (wb === this.#writeback) return false;
    this.#writeback = wb;
    this.#storeWriteback();
    return true;
  }
}

/**
 * virtio-blk device configuration: offered features and the
 * `struct virtio_blk_config` bytes. VIRTIO 1.2 §5.2.3 (Feature bits), §5.2.4
 * (Device configuration layout), §5.2.5 (Device Initialization), §5.2.6.2
 * (cache modes: when a write is stable).
 *
 * The config space is the device's own buffer (not guest memory), written
 * little-endian through a DataView at the offsets of `BlkConfig` in spec/blk.ts.
 * Fields whose feature is not offered read as 0. The options it is built
 * from, their checks and defaults are ./config-options.ts.
 *
 * @module
 */
import { BlkConfig, VIRTIO_BLK_CONFIG_SIZE } from "../../spec/blk.ts";
import * as blk from "../../spec/blk.ts";
import { featureBit } from "../../spec/virtio.ts";
import {
  checkInt,
  offeredFeatures,
  serialId,
  settings,
  type BlkDeviceOptions,
  type BlkGeometry,
  type Settings,
} from "./config-options.ts";
import type { BlkRequestPolicy } from "./request.ts";

export {
  BLK_FEATURES,
  type BlkDeviceOptions,
  type BlkFeatureName,
  type BlkGeometry,
} from "./config-options.ts";

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

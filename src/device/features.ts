/**
 * 64-bit feature negotiation. VIRTIO 1.2 §2.2 (Feature Bits), §3.1.1 (driver
 * initialization steps 4–6), §6 (reserved feature bits).
 *
 * The device offers a set of bits; the driver writes the subset it accepts.
 * The set the driver wrote is kept as written, unoffered bits included, so
 * that FEATURES_OK can be refused for it (§2.2.2 "The device SHOULD accept
 * any valid subset of features the driver accepts, otherwise it MUST fail to
 * set the FEATURES_OK device status bit when the driver writes it"). Once
 * FEATURES_OK is accepted the set is frozen until reset.
 *
 * @module
 */

const U64_MASK = (1n << 64n) - 1n;

/** Masks any bigint into an unsigned 64-bit feature word. */
function toU64(v: bigint): bigint {
  return v & U64_MASK;
}

/**
 * One device's feature negotiation state. The values written by the driver
 * are untrusted: they are masked to 64 bits and never throw.
 */
export class FeatureNegotiation {
  /** Bits the device offers. */
  readonly offered: bigint;
  #driver = 0n;
  #frozen = false;

  /**
   * @param offered the device feature bits (0 ≤ offered < 2^64).
   * @throws {RangeError} if `offered` is not a 64-bit unsigned value.
   */
  constructor(offered: bigint) {
    if (typeof offered !== "bigint" || offered < 0n || offered > U64_MASK)
      throw new RangeError(`offered features must be a 64-bit unsigned bigint, got ${offered}`);
    this.offered = offered;
  }

  /** The bits the driver wrote (unoffered ones included; see {@link unoffered}). */
  get driverFeatures(): bigint {
    return this.#driver;
  }

  /** The negotiated set: what the driver accepted, restricted to what was offered. */
  get negotiated(): bigint {
    return this.#driver & this.offered;
  }

  /** Bits the driver accepted that the device never offered (0n if none). */
  get unoffered(): bigint {
    return this.#driver & ~this.offered & U64_MASK;
  }

  /** True once FEATURES_OK was accepted (no more writes until {@link reset}). */
  get frozen(): boolean {
    return this.#frozen;
  }

  /** True if `bit` is in the negotiated set. */
  has(bit: number): boolean {
    return bit >= 0 && bit < 64 && ((this.negotiated >> BigInt(bit)) & 1n) === 1n;
  }

  /** 32 bits of the offered set: `select` 0 = bits 0..31, 1 = bits 32..63, anything else 0. */
  deviceFeaturesWord(select: number): number {
    if (select !== 0 && select !== 1) return 0;
    return Number((this.offered >> BigInt(32 * select)) & 0xffff_ffffn);
  }

  /**
   * The driver writes the whole 64-bit set it accepts.
   *
   * @returns false (and nothing changes) once frozen.
   */
  setDriverFeatures(v: bigint): boolean {
    if (this.#frozen) return false;
    this.#driver = toU64(v);
    return true;
  }

  /**
   * The driver writes 32 bits of the set (`select` 0 = low, 1 = high word),
   * as virtio-mmio's DriverFeaturesSel/DriverFeatures do.
   *
   * @returns false (nothing changes) once frozen or for a `select` other than 0/1.
   */
  setDriverFeaturesWord(select: number, value: number): boolean {
    if (this.#frozen || (select !== 0 && select !== 1)) return false;
    const shift = BigInt(32 * select);
    const word = BigInt(value >>> 0) << shift;
    const keep = this.#driver & ~(0xffff_ffffn << shift) & U64_MASK;
    this.#driver = keep | word;
    return true;
  }

  /**
   * True if the written set is acceptable: no unoffered bit (§2.2.1 "The
   * driver MUST NOT accept a feature which the device did not offer").
   */
  acceptable(): boolean {
    return this.unoffered === 0n;
  }

  /** Freezes the set (FEATURES_OK accepted). */
  freeze(): void {
    this.#frozen = true;
  }

  /** Back to nothing accepted and writable (device reset). */
  reset(): void {
    this.#driver = 0n;
    this.#frozen = false;
  }
}

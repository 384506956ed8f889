/**
 * Device configuration space with a generation counter. VIRTIO 1.2 §2.5
 * (Device Configuration Space), §2.5.1 (driver requirements: read
 * config_generation before and after a multi-byte read).
 *
 * The device owns the bytes and changes them with {@link ConfigSpace.update},
 * which bumps the generation and tells the listener (the device framework
 * then sends a configuration change notification, §2.5 "the device ...
 * MUST send a configuration change notification" when DRIVER_OK is set).
 * The driver reads and writes through {@link ConfigSpace.driverRead} /
 * {@link ConfigSpace.driverWrite}, which are bounded and never throw:
 *
 * - bytes read beyond the end read as 0xff (as QEMU answers out-of-range
 *   config reads);
 * - bytes written beyond the end are dropped; the in-range part goes to the
 *   device's write hook (without a hook the space is read-only and writes
 *   are dropped).
 *
 * Multi-byte fields are little-endian (§2.5 "fields ... are little-endian").
 *
 * @module
 */

/** Called with the in-range part of a driver write: offset and bytes. */
export type ConfigWriteHook = (offset: number, data: Uint8Array, config: ConfigSpace) => void;

/** A device's configuration space. */
export class ConfigSpace {
  readonly #bytes: Uint8Array;
  readonly #dv: DataView;
  #generation = 0;
  #listener: (() => void) | null = null;

  /**
   * @param init the size in bytes (zero-filled) or the initial bytes (copied).
   * @throws {RangeError} for a size that is not an integer in 0..4096.
   */
  constructor(init: number | Uint8Array) {
    const size = typeof init === "number" ? init : init.length;
    if (!Number.isInteger(size) || size < 0 || size > 4096)
      throw new RangeError(`config space size ${size} must be an integer in 0..4096`);
    this.#bytes = new Uint8Array(size);
    if (typeof init !== "number") this.#bytes.set(init);
    this.#dv = new DataView(this.#bytes.buffer);
  }

  /** Size in bytes. */
  get size(): number {
    return this.#bytes.length;
  }

  /** §2.5 config_generation: changes whenever the device changes the bytes. */
  get generation(): number {
    return this.#generation;
  }

  /** @internal the device framework listens for device-side changes. */
  setChangeListener(fn: (() => void) | null): void {
    this.#listener = fn;
  }

  /**
   * Device-side change: `fn` edits the bytes through a DataView, then the
   * generation is bumped (mod 2^32) and the listener runs once.
   */
  update(fn: (view: DataView) => void): void {
    fn(this.#dv);
    this.#generation = (this.#generation + 1) >>> 0;
    this.#listener?.();
  }

  /**
   * Stores bytes without bumping the generation: for write hooks applying a
   * field the driver itself wrote (nothing changed behind the driver's back).
   *
   * @throws {RangeError} if the range is outside the space (a device bug).
   */
  store(offset: number, data: Uint8Array): void {
    if (!(Number.isInteger(offset) && offset >= 0 && offset + data.length <= this.size))
      throw new RangeError(`config store [${offset}, +${data.length}) is outside ${this.size}`);
    this.#bytes.set(data, offset);
  }

  /** A read-only look at the bytes for device code (a copy). */
  snapshot(): Uint8Array {
    return this.#bytes.slice();
  }

  getU8(offset: number): number {
    return this.#dv.getUint8(offset);
  }
  getU16(offset: number): number {
    return this.#dv.getUint16(offset, true);
  }
  getU32(offset: number): number {
    return this.#dv.getUint32(offset, true);
  }
  getU64(offset: number): bigint {
    return this.#dv.getBigUint64(offset, true);
  }

  /**
   * Driver read of `dst.length` bytes at `offset`. Out-of-range bytes (and
   * any byte of a read at a non-integer or negative offset) read as 0xff.
   */
  driverRead(offset: number, dst: Uint8Array): void {
    dst.fill(0xff);
    if (!Number.isSafeInteger(offset) || offset < 0 || offset >= this.size) return;
    const n = Math.min(dst.length, this.size - offset);
    dst.set(this.#bytes.subarray(offset, offset + n));
  }

  /**
   * Driver write of `src` at `offset`: the in-range part goes to `hook`; the
   * rest is dropped. Returns the number of bytes handed to the hook.
   */
  driverWrite(offset: number, src: Uint8Array, hook: ConfigWriteHook | undefined): number {
    if (hook === undefined) return 0;
    if (!Number.isSafeInteger(offset) || offset < 0 || offset >= this.size) return 0;
    const n = Math.min(src.length, this.size - offset);
    if (n === 0) return 0;
    hook(offset, src.subarray(0, n), this);
    return n;
  }
}

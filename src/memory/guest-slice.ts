/**
 * A validated window of guest memory inside one region: little-endian
 * accessors bounds-checked against the window, and sequentially consistent
 * 16-bit loads and stores for ring indexes and event fields. VIRTIO 1.2 §2.7
 * (all ring fields are little-endian; the index fields are what the two
 * sides publish to each other).
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../errors.ts";
import { outOfRange, type MemoryRegion } from "./region.ts";

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  // Atomics on Uint16Array use host byte order; virtio rings are little-endian.
  throw new Error("virtio-ts requires a little-endian host");
}

/**
 * A bounds-checked window [addr, addr + length) of guest memory that lies in
 * one region, validated once (e.g. a ring part at queue setup). Offsets are
 * relative to the window; every access checks them.
 */
export class GuestSlice {
  /** Guest-physical address of the window's first byte. */
  readonly addr: number;
  readonly length: number;
  readonly #dv: DataView;
  readonly #u8: Uint8Array;
  readonly #u16: Uint16Array;

  /** @internal use {@link GuestMemory.slice}. */
  constructor(region: MemoryRegion, addr: number, length: number) {
    this.addr = addr;
    this.length = length;
    const byteOffset = region.bufferOffset + (addr - region.gpa);
    this.#dv = new DataView(region.buffer, byteOffset, length);
    this.#u8 = new Uint8Array(region.buffer, byteOffset, length);
    // A 16-bit view for Atomics exists only when the window is 2-aligned.
    this.#u16 =
      byteOffset % 2 === 0
        ? new Uint16Array(region.buffer, byteOffset, length >>> 1)
        : new Uint16Array(0);
  }

  #check(off: number, n: number): void {
    // Offsets come from validated indexes; a bad one is still an error with a code.
    if (!(off >= 0 && off + n <= this.length)) throw outOfRange(this.addr + off, n);
  }

  readU8(off: number): number {
    this.#check(off, 1);
    return this.#dv.getUint8(off);
  }
  readU16(off: number): number {
    this.#check(off, 2);
    return this.#dv.getUint16(off, true);
  }
  readU32(off: number): number {
    this.#check(off, 4);
    return this.#dv.getUint32(off, true);
  }
  /** Reads a le64 as a double: exact below 2^53, and any larger value is outside guest memory anyway. */
  readU64AsNumber(off: number): number {
    this.#check(off, 8);
    return this.#dv.getUint32(off, true) + this.#dv.getUint32(off + 4, true) * 0x1_0000_0000;
  }
  readU64(off: number): bigint {
    this.#check(off, 8);
    return this.#dv.getBigUint64(off, true);
  }
  writeU8(off: number, v: number): void {
    this.#check(off, 1);
    this.#dv.setUint8(off, v);
  }
  writeU16(off: number, v: number): void {
    this.#check(off, 2);
    this.#dv.setUint16(off, v, true);
  }
  writeU32(off: number, v: number): void {
    this.#check(off, 4);
    this.#dv.setUint32(off, v, true);
  }
  /** Writes a le64 from a non-negative safe integer. */
  writeU64(off: number, v: number | bigint): void {
    this.#check(off, 8);
    if (typeof v === "bigint") {
      this.#dv.setBigUint64(off, v, true);
    } else {
      this.#dv.setUint32(off, v >>> 0, true);
      this.#dv.setUint32(off + 4, Math.floor(v / 0x1_0000_0000) >>> 0, true);
    }
  }
  /** Copies `dst.length` bytes from offset `off` into `dst`. */
  readBytes(off: number, dst: Uint8Array): void {
    this.#check(off, dst.length);
    dst.set(this.#u8.subarray(off, off + dst.length));
  }
  /** Copies `src` to offset `off`. */
  writeBytes(off: number, src: Uint8Array): void {
    this.#check(off, src.length);
    this.#u8.set(src, off);
  }
  fill(off: number, len: number, value = 0): void {
    this.#check(off, len);
    this.#u8.fill(value, off, off + len);
  }

  #checkAtomic16(off: number): number {
    this.#check(off, 2);
    if (off % 2 !== 0 || this.#u16.length === 0) {
      throw new VirtioError(
        ErrorCode.MEM_MISALIGNED,
        `atomic 16-bit access at unaligned guest address 0x${(this.addr + off).toString(16)}`,
        {
          addr: this.addr + off,
        },
      );
    }
    return off >>> 1;
  }
  /** Sequentially consistent 16-bit load (a ring index or event field). */
  atomicLoadU16(off: number): number {
    // Atomics.load: SeqCst load; later plain reads of what this index publishes are not hoisted above it.
    return Atomics.load(this.#u16, this.#checkAtomic16(off));
  }
  /** Sequentially consistent 16-bit store (a ring index or event field). */
  atomicStoreU16(off: number, v: number): void {
    // Atomics.store: SeqCst store; earlier plain writes (payload, ring entries) become visible first.
    Atomics.store(this.#u16, this.#checkAtomic16(off), v);
  }
}

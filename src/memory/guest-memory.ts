/**
 * Guest memory: regions of guest-physical address space backed by
 * ArrayBuffers (SharedArrayBuffer for the in-process transport, mmap'd
 * external buffers for vhost-user).
 *
 * This module, {@link GuestSlice} (./guest-slice.ts) and the regions
 * (./region.ts) are the only code in virtio-ts that indexes raw buffers.
 * Every address and length given to them is untrusted: anything outside the
 * regions is a {@link VirtioError} with code `VIRTIO_ERR_MEM_OUT_OF_RANGE`,
 * never a typed-array RangeError and never a silent wrap. Addresses are JS numbers; a region must end at or below 2^53,
 * so any 64-bit guest address at or above 2^53 (which a double cannot hold
 * exactly) is simply outside every region.
 *
 * VIRTIO 1.2 §2.7: all ring fields are little-endian; the ring index fields are
 * accessed with `Atomics` through {@link GuestSlice}.
 *
 * @module
 */
import { GuestSlice } from "./guest-slice.ts";
import { MAX_GUEST_ADDRESS, MemoryRegion, outOfRange, type RegionDescriptor } from "./region.ts";

export { GuestSlice } from "./guest-slice.ts";
export { MAX_GUEST_ADDRESS, MemoryRegion, type RegionDescriptor } from "./region.ts";

/** What {@link GuestMemory.toTransferable} returns: structured-cloneable when buffers are SharedArrayBuffers. */
export interface TransferableGuestMemory {
  readonly regions: readonly Required<RegionDescriptor>[];
}

/**
 * Guest-physical memory made of one or more non-overlapping regions, with
 * holes allowed between them.
 *
 * @example
 * ```ts
 * const mem = GuestMemory.createShared([{ guestPhysAddr: 0, size: 1 << 20 }]);
 * mem.writeU32(0x100, 0xdeadbeef);
 * mem.readU32(0x100); // 0xdeadbeef
 * ```
 */
export class GuestMemory {
  readonly #regions: MemoryRegion[];
  #last: MemoryRegion;

  constructor(regions: readonly RegionDescriptor[]) {
    if (regions.length === 0) throw new RangeError("guest memory needs at least one region");
    const rs = regions.map((d) => new MemoryRegion(d)).sort((a, b) => a.gpa - b.gpa);
    for (let i = 1; i < rs.length; i++) {
      const prev = rs[i - 1]!;
      const cur = rs[i]!;
      if (cur.gpa < prev.end) {
        throw new RangeError(
          `regions overlap: [0x${prev.gpa.toString(16)}, 0x${prev.end.toString(16)}) and 0x${cur.gpa.toString(16)}`,
        );
      }
    }
    this.#regions = rs;
    this.#last = rs[0]!;
  }

  /** Allocates SharedArrayBuffer-backed regions (zero-filled). */
  static createShared(layout: readonly { guestPhysAddr: number; size: number }[]): GuestMemory {
    return new GuestMemory(
      layout.map((l) => ({ ...l, buffer: new SharedArrayBuffer(l.size), bufferOffset: 0 })),
    );
  }

  /** Rebuilds a GuestMemory from {@link toTransferable} output (e.g. in a worker). */
  static fromTransferable(t: TransferableGuestMemory): GuestMemory {
    return new GuestMemory(t.regions);
  }

  /** A structured-cloneable description of the regions (share it with a worker). */
  toTransferable(): TransferableGuestMemory {
    return {
      regions: this.#regions.map((r) => ({
        guestPhysAddr: r.gpa,
        size: r.size,
        buffer: r.buffer,
        bufferOffset: r.bufferOffset,
      })),
    };
  }

  /** The regions as (guestPhysAddr, size) pairs, ascending. */
  get layout(): readonly { guestPhysAddr: number; size: number }[] {
    return this.#regions.map((r) => ({ guestPhysAddr: r.gpa, size: r.size }));
  }

  /**
   * The region holding all of [addr, addr + len), or undefined. `len` may be 0
   * (then `addr` must still lie inside a region). Non-numbers, negatives and
   * NaN are never inside.
   */
  #find(addr: number, len: number): MemoryRegion | undefined {
    const last = this.#last;
    // Written so that NaN and negative inputs fail every comparison.
    if (addr >= last.gpa && len >= 0 && addr + len <= last.end && addr < last.end) return last;
    if (!(addr >= 0 && len >= 0)) return undefined;
    const rs = this.#regions;
    let lo = 0;
    let hi = rs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const r = rs[mid]!;
      if (addr < r.gpa) hi = mid - 1;
      else if (addr >= r.end) lo = mid + 1;
      else {
        if (addr + len > r.end) return undefined;
        this.#last = r;
        return r;
      }
    }
    return undefined;
  }

  /**
   * Walks [addr, addr + len) region by region (contiguous regions may be
   * crossed), calling `fn(region, offsetInRegion, n, done)` per piece. Throws
   * MEM_OUT_OF_RANGE before calling anything if any byte is outside.
   */
  #walk(
    addr: number,
    len: number,
    fn: (r: MemoryRegion, off: number, n: number, done: number) => void,
  ): void {
    const r = this.#find(addr, len);
    if (r !== undefined) {
      fn(r, addr - r.gpa, len, 0);
      return;
    }
    if (!this.isValidRange(addr, len)) throw outOfRange(addr, len);
    let done = 0;
    while (done < len) {
      const a = addr + done;
      const piece = this.#find(a, 0)!;
      const n = Math.min(len - done, piece.end - a);
      fn(piece, a - piece.gpa, n, done);
      done += n;
    }
  }

  /**
   * True if every byte of [addr, addr + len) is guest memory. Contiguous
   * regions may be crossed; a hole or anything past 2^53 is outside. The
   * number of steps is bounded by the number of regions.
   */
  isValidRange(addr: number, len: number): boolean {
    if (!(Number.isSafeInteger(addr) && Number.isSafeInteger(len) && addr >= 0 && len >= 0))
      return false;
    if (addr + len > MAX_GUEST_ADDRESS) return false;
    let a = addr;
    const end = addr + len;
    for (let steps = 0; steps <= this.#regions.length; steps++) {
      const r = this.#find(a, 0);
      if (r === undefined) return false;
      if (end <= r.end) return true;
      a = r.end;
    }
    return false;
  }

  /** Throws MEM_OUT_OF_RANGE unless [addr, addr + len) is guest memory. */
  checkRange(addr: number, len: number): void {
    if (!this.isValidRange(addr, len)) throw outOfRange(addr, len);
  }

  /** A validated window in one region; throws MEM_OUT_OF_RANGE otherwise. */
  slice(addr: number, len: number): GuestSlice {
    const r =
      Number.isSafeInteger(addr) && Number.isSafeInteger(len) ? this.#find(addr, len) : undefined;
    if (r === undefined) throw outOfRange(addr, len);
    return new GuestSlice(r, addr, len);
  }

  /** True if [addr, addr + len) lies inside a single region (what {@link slice} needs). */
  isInOneRegion(addr: number, len: number): boolean {
    return (
      Number.isSafeInteger(addr) && Number.isSafeInteger(len) && this.#find(addr, len) !== undefined
    );
  }

  /** Copies guest bytes at `addr` into `dst`. */
  read(addr: number, dst: Uint8Array): void {
    this.#walk(addr, dst.length, (r, off, n, done) => dst.set(r.u8.subarray(off, off + n), done));
  }

  /** Copies `src` into guest memory at `addr`. */
  write(addr: number, src: Uint8Array): void {
    this.#walk(addr, src.length, (r, off, n, done) => r.u8.set(src.subarray(done, done + n), off));
  }

  /** Fills [addr, addr + len) with `value`. */
  fill(addr: number, len: number, value = 0): void {
    this.#walk(addr, len, (r, off, n) => r.u8.fill(value, off, off + n));
  }

  /**
   * Appends to `out` zero-copy views covering [addr, addr + len) (one per
   * region crossed) and returns how many were appended. Views alias guest
   * memory: the caller must not keep them past the request's completion.
   */
  views(addr: number, len: number, out: Uint8Array[]): number {
    let count = 0;
    this.#walk(addr, len, (r, off, n) => {
      out.push(new Uint8Array(r.buffer, r.bufferOffset + off, n));
      count++;
    });
    return count;
  }

  #scalar(addr: number, n: number): { r: MemoryRegion; off: number } | undefined {
    const r = Number.isSafeInteger(addr) ? this.#find(addr, n) : undefined;
    return r === undefined ? undefined : { r, off: addr - r.gpa };
  }

  #slowRead(addr: number, n: number): DataView {
    const tmp = new Uint8Array(n);
    this.read(addr, tmp);
    return new DataView(tmp.buffer);
  }

  readU8(addr: number): number {
    const s = this.#scalar(addr, 1);
    if (s === undefined) throw outOfRange(addr, 1);
    return s.r.u8[s.off]!;
  }
  readU16(addr: number): number {
    const s = this.#scalar(addr, 2);
    return s !== undefined
      ? s.r.dv.getUint16(s.off, true)
      : this.#slowRead(addr, 2).getUint16(0, true);
  }
  readU32(addr: number): number {
    const s = this.#scalar(addr, 4);
    return s !== undefined
      ? s.r.dv.getUint32(s.off, true)
      : this.#slowRead(addr, 4).getUint32(0, true);
  }
  readU64(addr: number): bigint {
    const s = this.#scalar(addr, 8);
    return s !== undefined
      ? s.r.dv.getBigUint64(s.off, true)
      : this.#slowRead(addr, 8).getBigUint64(0, true);
  }

  #slowWrite(addr: number, n: number, set: (dv: DataView) => void): void {
    const tmp = new Uint8Array(n);
    set(new DataView(tmp.buffer));
    this.write(addr, tmp);
  }
  writeU8(addr: number, v: number): void {
    const s = this.#scalar(addr, 1);
    if (s === undefined) throw outOfRange(addr, 1);
    s.r.u8[s.off] = v;
  }
  writeU16(addr: number, v: number): void {
    const s = this.#scalar(addr, 2);
    if (s !== undefined) s.r.dv.setUint16(s.off, v, true);
    else this.#slowWrite(addr, 2, (dv) => dv.setUint16(0, v, true));
  }
  writeU32(addr: number, v: number): void {
    const s = this.#scalar(addr, 4);
    if (s !== undefined) s.r.dv.setUint32(s.off, v, true);
    else this.#slowWrite(addr, 4, (dv) => dv.setUint32(0, v, true));
  }
  writeU64(addr: number, v: bigint): void {
    const s = this.#scalar(addr, 8);
    if (s !== undefined) s.r.dv.setBigUint64(s.off, v, true);
    else this.#slowWrite(addr, 8, (dv) => dv.setBigUint64(0, v, true));
  }

  /** Sequentially consistent 16-bit load at a 2-aligned guest address. */
  atomicLoadU16(addr: number): number {
    return this.slice(addr, 2).atomicLoadU16(0);
  }
  /** Sequentially consistent 16-bit store at a 2-aligned guest address. */
  atomicStoreU16(addr: number, v: number): void {
    this.slice(addr, 2).atomicStoreU16(0, v);
  }
}

/**
 * Where the device reads an indirect descriptor table, for both ring
 * layouts: VIRTIO 1.2 §2.7.5.3 (split: a table of `struct virtq_desc`) and
 * §2.8.7 (packed: a table of `struct pvirtq_desc`). Both are 16-byte entries
 * at a driver-chosen address with no alignment requirement.
 *
 * Tables are read in place through a cached whole-region {@link GuestSlice}
 * (no allocation, no copy: each entry is read once into locals by the walk,
 * so a copy would buy no extra consistency). A table that straddles two
 * contiguous regions (legal, rare) is copied once into a private buffer.
 *
 * @module
 */
import { GuestMemory, type GuestSlice } from "../memory/guest-memory.ts";

/** Where an indirect table is read: a slice, the table's offset in it, its entries. */
export interface TableRef {
  slice: GuestSlice;
  base: number;
  entries: number;
}

/** Bytes of one table entry (§2.7.5 `virtq_desc` and §2.8.13 `pvirtq_desc` alike). */
const ENTRY_SIZE = 16;

/** Maps indirect tables of one guest memory (region slices created lazily, kept). */
export class IndirectTables {
  readonly #memory: GuestMemory;
  readonly #regionStart: number[];
  readonly #regionEnd: number[];
  readonly #regionSlice: (GuestSlice | undefined)[];
  /** Reused result of {@link map} (no allocation per indirect chain). */
  readonly #ref: TableRef;

  constructor(memory: GuestMemory) {
    this.#memory = memory;
    const layout = memory.layout;
    this.#regionStart = layout.map((r) => r.guestPhysAddr);
    this.#regionEnd = layout.map((r) => r.guestPhysAddr + r.size);
    this.#regionSlice = layout.map(() => undefined);
    this.#ref = { slice: memory.slice(layout[0]!.guestPhysAddr, 0), base: 0, entries: 0 };
  }

  /**
   * Where to read the table [addr, addr + len) (`len` a non-zero multiple of
   * 16, checked by the caller), or null if it is not inside guest memory. The
   * result is reused by the next call unless the table straddles regions.
   */
  map(addr: number, len: number): TableRef | null {
    const entries = len / ENTRY_SIZE;
    const r = this.#regionOf(addr, len);
    if (r >= 0) {
      let slice = this.#regionSlice[r];
      if (slice === undefined) {
        const start = this.#regionStart[r]!;
        slice = this.#memory.slice(start, this.#regionEnd[r]! - start);
        this.#regionSlice[r] = slice;
      }
      this.#ref.slice = slice;
      this.#ref.base = addr - this.#regionStart[r]!;
      this.#ref.entries = entries;
      return this.#ref;
    }
    if (!this.#memory.isValidRange(addr, len)) return null;
    return { slice: copyTable(this.#memory, addr, len), base: 0, entries };
  }

  /** Index of the region holding all of [addr, addr + len), or -1. */
  #regionOf(addr: number, len: number): number {
    const starts = this.#regionStart;
    let lo = 0;
    let hi = starts.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (addr < starts[mid]!) hi = mid - 1;
      else if (addr >= this.#regionEnd[mid]!) lo = mid + 1;
      else return addr + len <= this.#regionEnd[mid]! ? mid : -1;
    }
    return -1;
  }
}

/**
 * Copies an indirect table that straddles contiguous regions into a private
 * buffer (rare; allocates) so it can be read through one slice.
 */
function copyTable(memory: GuestMemory, addr: number, len: number): GuestSlice {
  const bytes = new Uint8Array(len);
  memory.read(addr, bytes);
  return new GuestMemory([{ guestPhysAddr: 0, size: len, buffer: bytes.buffer }]).slice(0, len);
}

/**
 * The front-end's memory region table of one connection: validation and
 * front-end-virtual (uva) → guest-physical (gpa) translation. It holds only
 * numbers; the mappings themselves belong to the dataplane.
 * qemu/qemu docs/interop/vhost-user.rst "Memory access" ("User addresses map
 * to the vhost memory region containing that user address"),
 * VHOST_USER_SET_MEM_TABLE / ADD_MEM_REG / REM_MEM_REG ("identified by its
 * guest address, user address and size. The mmap offset is ignored").
 *
 * Limits: a region must be non-empty, must not wrap 2^64 in either address
 * space, must end at or below 2^53 in guest-physical space and in the file
 * (GuestMemory uses exact doubles), its guest address and mmap offset must
 * be 8-aligned (QEMU sends page-aligned ones), and
 * no two regions may overlap in guest-physical or in user address space.
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../errors.ts";
import { MAX_GUEST_ADDRESS } from "../memory/guest-memory.ts";
import type { MemRegion } from "./codec.ts";

/** A validated region. `gpa`, `size` and `mmapOffset` are exact numbers. */
export interface RegionInfo {
  /** Guest-physical address of the first byte. */
  readonly gpa: number;
  /** Length in bytes (> 0). */
  readonly size: number;
  /** Front-end virtual address of the first byte. */
  readonly uva: bigint;
  /** Offset of the region in the fd. */
  readonly mmapOffset: number;
}

const U64_END = 1n << 64n;
const hex = (v: number | bigint): string => `0x${v.toString(16)}`;

function memError(message: string, r: MemRegion): VirtioError {
  return new VirtioError(ErrorCode.VHOST_USER_PROTOCOL, message, {
    gpa: r.guestPhysAddr,
    size: r.memorySize,
    uva: r.userspaceAddr,
    mmapOffset: r.mmapOffset,
  });
}

/**
 * Checks a region as received and converts it.
 *
 * @throws {VirtioError} `VIRTIO_ERR_VHOST_USER_PROTOCOL` for a region the back-end cannot use.
 */
export function validateRegion(r: MemRegion): RegionInfo {
  const where = `region gpa ${hex(r.guestPhysAddr)} size ${hex(r.memorySize)} uva ${hex(r.userspaceAddr)}`;
  if (r.memorySize === 0n) throw memError(`${where}: size 0`, r);
  if (r.guestPhysAddr + r.memorySize > U64_END || r.userspaceAddr + r.memorySize > U64_END)
    throw memError(`${where}: overflows 2^64`, r);
  const max = BigInt(MAX_GUEST_ADDRESS);
  if (r.guestPhysAddr + r.memorySize > max || r.mmapOffset + r.memorySize > max)
    throw memError(`${where}: ends above 2^53, which this back-end cannot address`, r);
  if (r.guestPhysAddr % 8n !== 0n || r.mmapOffset % 8n !== 0n)
    throw memError(`${where}: guest address or mmap offset not 8-aligned`, r);
  return {
    gpa: Number(r.guestPhysAddr),
    size: Number(r.memorySize),
    uva: r.userspaceAddr,
    mmapOffset: Number(r.mmapOffset),
  };
}

function overlaps(a: RegionInfo, b: RegionInfo): "guest-physical" | "user" | undefined {
  if (a.gpa < b.gpa + b.size && b.gpa < a.gpa + a.size) return "guest-physical";
  const size = (r: RegionInfo) => BigInt(r.size);
  if (a.uva < b.uva + size(b) && b.uva < a.uva + size(a)) return "user";
  return undefined;
}

/** The region table. Not thread-safe; owned by one connection. */
export class MemoryTable {
  readonly #maxRegions: number;
  #regions: RegionInfo[] = [];

  /** @param maxRegions the slot count announced in GET_MAX_MEM_SLOTS. */
  constructor(maxRegions: number) {
    if (!Number.isInteger(maxRegions) || maxRegions < 1)
      throw new RangeError(`maxRegions must be a positive integer, got ${maxRegions}`);
    this.#maxRegions = maxRegions;
  }

  /** The regions, in the order they were added. */
  get regions(): readonly RegionInfo[] {
    return this.#regions;
  }

  /**
   * Checks that `add` can join the table after removing `remove` entries;
   * throws otherwise. Does not change the table.
   */
  #checkFits(base: readonly RegionInfo[], add: readonly RegionInfo[]): void {
    if (base.length + add.length > this.#maxRegions) {
      throw new VirtioError(
        ErrorCode.VHOST_USER_PROTOCOL,
        `memory table would hold ${base.length + add.length} regions, at most ${this.#maxRegions}`,
        { regions: base.length + add.length, max: this.#maxRegions },
      );
    }
    const all = [...base];
    for (const r of add) {
      for (const o of all) {
        const space = overlaps(r, o);
        if (space !== undefined) {
          throw new VirtioError(
            ErrorCode.VHOST_USER_PROTOCOL,
            `region gpa ${hex(r.gpa)} uva ${hex(r.uva)} overlaps region gpa ${hex(o.gpa)} uva ${hex(o.uva)} in ${space} space`,
            { gpa: r.gpa, otherGpa: o.gpa },
          );
        }
      }
      all.push(r);
    }
  }

  /** Validates a whole new table (SET_MEM_TABLE) without installing it. */
  checkReplace(regions: readonly RegionInfo[]): void {
    this.#checkFits([], regions);
  }

  /** Installs a table already checked with {@link checkReplace}. */
  replace(regions: readonly RegionInfo[]): void {
    this.#checkFits([], regions);
    this.#regions = [...regions];
  }

  /** Validates one more region (ADD_MEM_REG) without adding it. */
  checkAdd(r: RegionInfo): void {
    this.#checkFits(this.#regions, [r]);
  }

  /** Adds a region already checked with {@link checkAdd}. */
  add(r: RegionInfo): void {
    this.checkAdd(r);
    this.#regions.push(r);
  }

  /** The region with this guest address, user address and size (REM_MEM_REG), if any. */
  find(r: RegionInfo): RegionInfo | undefined {
    return this.#regions.find((o) => o.gpa === r.gpa && o.uva === r.uva && o.size === r.size);
  }

  /** Removes `r` (an entry returned by {@link find}). */
  remove(r: RegionInfo): void {
    this.#regions = this.#regions.filter((o) => o !== r);
  }

  /** Empties the table. */
  clear(): void {
    this.#regions = [];
  }

  /**
   * Translates [uva, uva + len) to a guest-physical address, if the whole
   * range lies in one region.
   */
  uvaToGpa(uva: bigint, len: number): number | undefined {
    const n = BigInt(len);
    for (const r of this.#regions) {
      if (uva >= r.uva && uva + n <= r.uva + BigInt(r.size)) return r.gpa + Number(uva - r.uva);
    }
    return undefined;
  }
}

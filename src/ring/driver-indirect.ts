/**
 * The guest memory a driver owns for indirect descriptor tables: one table
 * slot per head, `entriesPerChain` descriptors each. VIRTIO 1.2 §2.7.5.3
 * (indirect descriptors), §2.7.5.3.1 (driver requirements) — the slots carry
 * no layout of their own: a packed-ring driver queue can use the same arena
 * (it writes its own descriptor format into the slots).
 *
 * A request goes indirect when it has more than one segment and fits a slot;
 * the table of the chain at head `h` is slot `h`, so a slot is reused only
 * once its chain is used.
 *
 * @module
 */
import type { GuestMemory, GuestSlice } from "../memory/guest-memory.ts";
import { VIRTQ_DESC_ALIGN, VIRTQ_DESC_SIZE } from "../spec/virtqueue.ts";

/** Guest memory the driver owns for indirect tables: one table slot per head. */
export interface IndirectArena {
  /** Guest-physical address (16-aligned) of `size * entriesPerChain * 16` bytes in one region. */
  readonly addr: number;
  /** Descriptors per table (2..32768, at most the queue size). */
  readonly entriesPerChain: number;
}

/** Bytes of the indirect arena for `size` heads of `entriesPerChain` descriptors. */
export function indirectArenaBytes(size: number, entriesPerChain: number): number {
  return size * entriesPerChain * VIRTQ_DESC_SIZE;
}

/**
 * A window of guest memory the driver owns, checked once: aligned and inside
 * one region.
 *
 * @throws {RangeError} naming `what` otherwise.
 */
export function checkedSlice(
  memory: GuestMemory,
  what: string,
  addr: number,
  len: number,
  align: number,
): GuestSlice {
  if (!Number.isSafeInteger(addr) || addr < 0 || addr % align !== 0)
    throw new RangeError(`${what} address ${addr} is not a ${align}-aligned guest address`);
  if (!memory.isInOneRegion(addr, len))
    throw new RangeError(
      `${what} [0x${addr.toString(16)}, +${len}) is not inside one guest memory region`,
    );
  return memory.slice(addr, len);
}

/** The table slots of a queue of `size` heads, checked. */
export class IndirectTables {
  /** The whole arena (offset 0 = {@link addr}). */
  readonly slice: GuestSlice;
  /** Guest-physical address of slot 0. */
  readonly addr: number;
  /** Descriptors per table. */
  readonly entriesPerChain: number;

  /**
   * @throws {RangeError} without an arena, for `entriesPerChain` outside
   *   2..size, or an arena that is misaligned or not inside one region.
   */
  constructor(memory: GuestMemory, arena: IndirectArena | undefined, size: number) {
    if (arena === undefined) throw new RangeError("indirect descriptors need an indirectArena");
    const e = arena.entriesPerChain;
    if (!Number.isInteger(e) || e < 2 || e > size)
      throw new RangeError(
        `indirectArena.entriesPerChain ${e} must be an integer in 2..${size} (queue size)`,
      );
    this.slice = checkedSlice(
      memory,
      "indirect arena",
      arena.addr,
      indirectArenaBytes(size, e),
      VIRTQ_DESC_ALIGN,
    );
    this.addr = arena.addr;
    this.entriesPerChain = e;
  }

  /** Byte offset in {@link slice} of the table of the chain at `head`. */
  offset(head: number): number {
    return head * this.entriesPerChain * VIRTQ_DESC_SIZE;
  }
}

/**
 * The device side's walk of one descriptor chain: every descriptor read once
 * into locals, validated, and recorded as a segment of a
 * {@link DescriptorChain}. VIRTIO 1.2 §2.7.5 (descriptor table), §2.7.5.2
 * (chain length), §2.7.5.3 (indirect descriptors), §2.7.4.2 (readable
 * before writable).
 *
 * Everything the driver wrote is untrusted (docs/conformance.md "Ring
 * violations"): a violation breaks the queue (through its `markBroken`) and
 * is thrown as a {@link VirtioError} with a stable code. Decisions where the
 * spec leaves room (see docs/conformance.md):
 * - Chain length: at most `size` buffer descriptors per chain, direct and
 *   indirect entries counted together (§2.7.5.3.1 "A driver MUST NOT create a
 *   descriptor chain longer than the Queue Size of the device"); the
 *   descriptor that points to an indirect table is not a buffer and is not
 *   counted. Inside an indirect table, also at most `table length` entries
 *   (an in-table loop is caught early). Both surface as `DESC_LOOP`. A device
 *   that advertises a segment limit (virtio-blk `seg_max`) must keep it at or
 *   below `size - 2`, as QEMU does.
 * - INDIRECT when VIRTIO_F_INDIRECT_DESC was not negotiated: `INDIRECT_TABLE`.
 * - Indirect tables are read where {@link IndirectTables} (indirect-tables.ts)
 *   maps them: in place, each entry read once into locals.
 * - Zero-length buffers are accepted whatever their address (nothing is ever
 *   accessed through them) and are not recorded as chain segments.
 *
 * @module
 */
import { ErrorCode, VirtioError, type ErrorCodeValue } from "../errors.ts";
import type { GuestMemory, GuestSlice } from "../memory/guest-memory.ts";
import {
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_DESC_OFF_FLAGS,
  VIRTQ_DESC_OFF_LEN,
  VIRTQ_DESC_OFF_NEXT,
  VIRTQ_DESC_SIZE,
} from "../spec/virtqueue.ts";
import type { DescriptorChain } from "./chain.ts";
import { IndirectTables, type TableRef } from "./indirect-tables.ts";

/** The largest total chain length in bytes (§2.7.5.2: "Drivers MUST NOT add a descriptor chain longer than 2^32 bytes in total"). */
export const MAX_CHAIN_BYTES = 0xffff_ffff;

const hex = (v: number): string => `0x${v.toString(16)}`;

/** The queue a walk belongs to: a violation breaks it. */
export interface WalkedQueue {
  markBroken(err: VirtioError): void;
}

/** Walks and validates the chains of one queue's descriptor table (see the module header). */
export class ChainWalker {
  readonly #queue: WalkedQueue;
  readonly #memory: GuestMemory;
  readonly #desc: GuestSlice;
  readonly #size: number;
  readonly #indirect: boolean;
  readonly #maxIndirect: number;
  readonly #tables: IndirectTables;

  /**
   * @param desc the descriptor table (`size` entries).
   * @param indirect VIRTIO_F_INDIRECT_DESC was negotiated.
   * @param maxIndirect largest accepted indirect table, in entries.
   */
  constructor(
    queue: WalkedQueue,
    memory: GuestMemory,
    desc: GuestSlice,
    size: number,
    indirect: boolean,
    maxIndirect: number,
  ) {
    this.#queue = queue;
    this.#memory = memory;
    this.#desc = desc;
    this.#size = size;
    this.#indirect = indirect;
    this.#maxIndirect = maxIndirect;
    this.#tables = new IndirectTables(memory);
  }

  /**
   * Walks the chain starting at `chain.head` (reset by the caller) through
   * the descriptor table and fills `chain` with its buffers; an INDIRECT
   * descriptor hands the rest of the chain to {@link #walkTable}. Bounded:
   * each iteration records a buffer (at most `size`, else DESC_LOOP) or ends
   * the walk. Both walks check a buffer the same way; the errors are built
   * apart ({@link #bufferError}, {@link #nextError}).
   */
  walk(chain: DescriptorChain): void {
    const head = chain.head;
    const desc = this.#desc;
    const mem = this.#memory;
    const size = this.#size;
    let buffers = 0;
    let total = 0;
    let writable = false;
    let i = head;
    for (;;) {
      const off = VIRTQ_DESC_SIZE * i;
      const addr = desc.readU64AsNumber(off);
      const len = desc.readU32(off + VIRTQ_DESC_OFF_LEN);
      const flags = desc.readU16(off + VIRTQ_DESC_OFF_FLAGS);
      const next = desc.readU16(off + VIRTQ_DESC_OFF_NEXT);
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        this.#checkIndirect(head, i, flags, len);
        const t = this.#indirectTable(head, i, addr, len);
        chain.descCount++;
        this.#walkTable(chain, i, t, buffers, writable);
        return;
      }
      buffers++;
      chain.descCount++;
      const readAfterWrite = writable && (flags & VIRTQ_DESC_F_WRITE) === 0;
      total += len;
      if (readAfterWrite || (len > 0 && !mem.isValidRange(addr, len)) || total > MAX_CHAIN_BYTES)
        throw this.#bufferError(head, i, -1, addr, len, total, readAfterWrite);
      writable ||= (flags & VIRTQ_DESC_F_WRITE) !== 0;
      chain.pushSegment(addr, len, writable);
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) return;
      // In the descriptor table, every buffer so far was walked in this table.
      if (next >= size || buffers >= size)
        throw this.#nextError(head, i, -1, next, size, buffers, buffers);
      i = next;
    }
  }

  /**
   * Walks the indirect table `t` of the INDIRECT descriptor `at` from entry
   * 0: the rest of the chain. `buffers` and `writable` carry over from the
   * direct descriptors before it (their bytes are in `chain`). Bounded by the
   * queue size and the table length (DESC_LOOP).
   */
  #walkTable(
    chain: DescriptorChain,
    at: number,
    t: TableRef,
    buffers: number,
    writable: boolean,
  ): void {
    const head = chain.head;
    const mem = this.#memory;
    const { slice: table, base, entries } = t;
    let total = chain.readableBytes + chain.writableBytes;
    let walked = 0;
    let i = 0;
    for (;;) {
      const off = base + VIRTQ_DESC_SIZE * i;
      const addr = table.readU64AsNumber(off);
      const len = table.readU32(off + VIRTQ_DESC_OFF_LEN);
      const flags = table.readU16(off + VIRTQ_DESC_OFF_FLAGS);
      const next = table.readU16(off + VIRTQ_DESC_OFF_NEXT);
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) throw this.#nestedError(head, i, at);
      buffers++;
      walked++;
      chain.descCount++;
      const readAfterWrite = writable && (flags & VIRTQ_DESC_F_WRITE) === 0;
      total += len;
      if (readAfterWrite || (len > 0 && !mem.isValidRange(addr, len)) || total > MAX_CHAIN_BYTES)
        throw this.#bufferError(head, i, at, addr, len, total, readAfterWrite);
      writable ||= (flags & VIRTQ_DESC_F_WRITE) !== 0;
      chain.pushSegment(addr, len, writable);
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) return;
      if (next >= entries || buffers >= this.#size || walked >= entries)
        throw this.#nextError(head, i, at, next, entries, buffers, walked);
      i = next;
    }
  }

  /** INDIRECT_NESTED for entry `i` of the indirect table of descriptor `at` (breaks the queue). */
  #nestedError(head: number, i: number, at: number): VirtioError {
    // §2.7.5.3.1: "The driver MUST NOT set the VIRTQ_DESC_F_INDIRECT flag within an indirect descriptor".
    const what = "sets INDIRECT inside an indirect table";
    return this.#failDesc(ErrorCode.INDIRECT_NESTED, head, i, at, what, {});
  }

  /**
   * The error of buffer descriptor `i` (of the indirect table of descriptor
   * `at`, or of the descriptor table when `at` is -1) that failed a check,
   * in the order they are made; `total` is the chain's bytes with this
   * buffer. Breaks the queue.
   */
  #bufferError(
    head: number,
    i: number,
    at: number,
    addr: number,
    len: number,
    total: number,
    readAfterWrite: boolean,
  ): VirtioError {
    if (readAfterWrite) {
      // §2.7.4.2: "The driver MUST place any device-writable descriptor elements after any device-readable descriptor elements."
      const what = "is device-readable but follows a device-writable one";
      return this.#failDesc(ErrorCode.READ_AFTER_WRITE, head, i, at, what, {});
    }
    if (len > 0 && !this.#memory.isValidRange(addr, len)) {
      const what = `buffer [${hex(addr)}, +${len}) is not inside guest memory`;
      return this.#failDesc(ErrorCode.DESC_OUT_OF_BOUNDS, head, i, at, what, { addr, len });
    }
    // §2.7.5.2: "Drivers MUST NOT add a descriptor chain longer than 2^32 bytes in total".
    const what = `brings the chain to ${total} bytes, above 2^32 - 1`;
    return this.#failDesc(ErrorCode.CHAIN_TOO_LONG, head, i, at, what, { total });
  }

  /**
   * The error of descriptor `i` whose `next` failed a check: outside its
   * table of `tableLen` entries (NEXT_OUT_OF_RANGE), or past `buffers` in
   * all (the queue size at most) or `walked` in this table (its length at
   * most): DESC_LOOP. Breaks the queue.
   */
  #nextError(
    head: number,
    i: number,
    at: number,
    next: number,
    tableLen: number,
    buffers: number,
    walked: number,
  ): VirtioError {
    if (next >= tableLen) {
      const what = `has next ${next}, table has ${tableLen} entries`;
      return this.#failDesc(ErrorCode.NEXT_OUT_OF_RANGE, head, i, at, what, { next, tableLen });
    }
    // §2.7.5.3.1: "A driver MUST NOT create a descriptor chain longer than the Queue Size of the device."
    const size = this.#size;
    return this.#failDesc(
      ErrorCode.DESC_LOOP,
      head,
      i,
      at,
      `continues to ${next} after ${buffers} buffers (${walked} in this table of ${tableLen}); queue size is ${size}: loop or chain too long`,
      { next, buffers, tableLen, size },
    );
  }

  /** Checks the flags of descriptor `i` of the descriptor table, which has INDIRECT set. */
  #checkIndirect(head: number, i: number, flags: number, len: number): void {
    if (!this.#indirect) {
      // §2.7.5.3.1: "The driver MUST NOT set the VIRTQ_DESC_F_INDIRECT flag unless the VIRTIO_F_INDIRECT_DESC feature was negotiated."
      throw this.#failDesc(
        ErrorCode.INDIRECT_TABLE,
        head,
        i,
        -1,
        "sets INDIRECT but VIRTIO_F_INDIRECT_DESC was not negotiated",
        { len },
      );
    }
    if ((flags & VIRTQ_DESC_F_NEXT) !== 0) {
      // §2.7.5.3.1: "A driver MUST NOT set both VIRTQ_DESC_F_INDIRECT and VIRTQ_DESC_F_NEXT in flags."
      throw this.#failDesc(ErrorCode.INDIRECT_NEXT, head, i, -1, "sets both INDIRECT and NEXT", {});
    }
    // The WRITE flag on an INDIRECT descriptor is ignored (§2.7.5.3.2: "The device MUST ignore the write-only flag").
  }

  /** Validates an indirect table and returns where to read it. */
  #indirectTable(head: number, i: number, addr: number, len: number): TableRef {
    const entries = len / VIRTQ_DESC_SIZE;
    if (len === 0 || len % VIRTQ_DESC_SIZE !== 0 || entries > this.#maxIndirect) {
      throw this.#failDesc(
        ErrorCode.INDIRECT_TABLE,
        head,
        i,
        -1,
        `points to an indirect table of ${len} bytes: not a non-zero multiple of 16 of at most ${this.#maxIndirect} entries`,
        { len, maxEntries: this.#maxIndirect },
      );
    }
    const t = this.#tables.map(addr, len);
    if (t === null) {
      throw this.#failDesc(
        ErrorCode.INDIRECT_TABLE,
        head,
        i,
        -1,
        `points to an indirect table [${hex(addr)}, +${len}) that is not inside guest memory`,
        { addr, len },
      );
    }
    return t;
  }

  /** Breaks the queue with a message naming the descriptor (queue-relative) and returns the error to throw. */
  #failDesc(
    code: ErrorCodeValue,
    head: number,
    i: number,
    indirectAt: number,
    what: string,
    details: Record<string, number>,
  ): VirtioError {
    const where =
      indirectAt < 0
        ? `descriptor ${i}`
        : `entry ${i} of the indirect table of descriptor ${indirectAt}`;
    const err = new VirtioError(code, `chain with head ${head}: ${where} ${what}`, {
      head,
      desc: i,
      indirectOf: indirectAt,
      ...details,
    });
    this.#queue.markBroken(err);
    return err;
  }
}

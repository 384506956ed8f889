/**
 * The device side's walk of one packed-ring descriptor chain: every
 * descriptor read once into locals, validated, and recorded as a segment of
 * a {@link DescriptorChain}. VIRTIO 1.2 §2.8.1 (wrap counters, the AVAIL and
 * USED flags), §2.8.5 (scatter-gather), §2.8.6 (chaining with NEXT through
 * consecutive ring descriptors, "Buffer ID is included in the last
 * descriptor in the list"), §2.8.7 (indirect tables of `struct
 * pvirtq_desc`), §2.8.13 (the descriptor format), and the requirements
 * §2.8.17 (driver, scatter-gather), §2.8.18 (device, scatter-gather: "The
 * device MUST use descriptors in a list chained by the VIRTQ_DESC_F_NEXT
 * flag in the same order that they were made available by the driver"),
 * §2.8.19 (driver, indirect descriptors).
 *
 * Everything the driver wrote is untrusted (docs/conformance.md "Packed
 * ring"): a violation breaks the queue (through its `markBroken`) and is
 * thrown as a {@link VirtioError} with a stable code. Requirements enforced:
 * - "all flags, including VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED,
 *   VIRTQ_DESC_F_WRITE must be set/cleared correctly in all descriptors in
 *   the list" and "A driver MUST NOT make the first descriptor in the list
 *   available before all subsequent descriptors comprising the list are made
 *   available": every descriptor after the first must be available for the
 *   wrap counter at its position (the counter flips where the chain crosses
 *   the ring end), else `DESC_NOT_AVAIL`.
 * - "A driver MUST NOT create a descriptor list longer than the Queue Size"
 *   and "A driver MUST make sure there's enough space in the ring for the
 *   whole list before making the first descriptor in the list available":
 *   a chain may only use ring descriptors that are not outstanding
 *   (`CHAIN_TOO_LONG`); an indirect table has at most queue-size entries.
 * - "The driver MUST place any device-writable descriptor elements after any
 *   device-readable descriptor elements" (`READ_AFTER_WRITE`).
 * - "The driver MUST NOT set the VIRTQ_DESC_F_INDIRECT flag unless the
 *   VIRTIO_F_INDIRECT_DESC feature was negotiated" (`INDIRECT_TABLE`).
 * - "A driver MUST NOT write direct descriptors with VIRTQ_DESC_F_INDIRECT
 *   set in a scatter-gather list linked by VIRTQ_DESC_F_NEXT": INDIRECT
 *   with NEXT, or after a NEXT, is `INDIRECT_NEXT`.
 * - "The driver MUST NOT set any flags except DESC_F_WRITE within an
 *   indirect descriptor": INDIRECT inside a table is `INDIRECT_NESTED`.
 *
 * A list an earlier device took is walked again from the copy of its ring
 * descriptors that the vhost-user inflight log kept ({@link
 * PackedChainWalker.walkCopy}; qemu/qemu docs/interop/vhost-user.rst
 * "Inflight I/O tracking": the log's DescStatePacked entries hold "The
 * buffer address", "The buffer length", "The descriptor flags", "The buffer
 * id"), with the same checks but availability: the ring slots may hold used
 * descriptors by then. Violations name the log entry instead of a ring
 * position.
 *
 * Decisions where the spec leaves room (see docs/conformance.md):
 * - Inside an indirect table every entry is a buffer, in table order; NEXT,
 *   AVAIL, USED and the buffer ID there are ignored (§2.8.7: "Others are
 *   reserved and are ignored by the device. Buffer ID is also reserved and
 *   is ignored by the device"). WRITE on the INDIRECT descriptor itself is
 *   ignored ("reserved and is ignored by the device").
 * - The buffer ID is the last descriptor's (§2.8.6); ids in earlier
 *   descriptors of the list are not looked at.
 * - Zero-length buffers are accepted whatever their address and are not
 *   recorded as chain segments, as on the split ring.
 * - Chain bytes above 2^32 - 1 are `CHAIN_TOO_LONG`, as on the split ring.
 *
 * @module
 */
import { ErrorCode, VirtioError, type ErrorCodeValue } from "../errors.ts";
import type { GuestMemory, GuestSlice } from "../memory/guest-memory.ts";
import {
  PVIRTQ_DESC_OFF_FLAGS,
  PVIRTQ_DESC_OFF_ID,
  PVIRTQ_DESC_OFF_LEN,
  PVIRTQ_DESC_SIZE,
  isPackedDescAvail,
} from "../spec/packed-virtqueue.ts";
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from "../spec/virtqueue.ts";
import type { DescriptorChain } from "./chain.ts";
import { MAX_CHAIN_BYTES, type WalkedQueue } from "./chain-walk.ts";
import { IndirectTables } from "./indirect-tables.ts";
import type { PackedListCopy } from "./packed-list-copy.ts";

const hex = (v: number): string => `0x${v.toString(16)}`;

/** Walks and validates the chains of one packed descriptor ring (see the module header). */
export class PackedChainWalker {
  /** Buffer ID of the chain last walked. */
  id = 0;
  readonly #queue: WalkedQueue;
  readonly #memory: GuestMemory;
  readonly #desc: GuestSlice;
  readonly #size: number;
  readonly #indirect: boolean;
  readonly #maxIndirect: number;
  readonly #tables: IndirectTables;
  /** Bytes of the chain so far, and whether a device-writable descriptor was seen (the walk in progress). */
  #total = 0;
  #writable = false;
  /** The inflight log entry whose copy is being walked, or -1 for a walk of the ring. */
  #fromLog = -1;

  /**
   * @param desc the descriptor ring (`size` descriptors).
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
   * Walks the chain whose first descriptor is at ring position `pos` (wrap
   * counter `wrap`), whose `flags` the caller loaded and found available, and
   * fills `chain` (reset by the caller) with its buffers; sets {@link id}.
   * `free` (≥ 1): ring descriptors the chain may use, those not outstanding.
   * `copy`, if given, receives the ring descriptors as read (for the
   * inflight log). Returns the ring descriptors the chain uses. Bounded:
   * each iteration records one ring descriptor, at most `free` (≤ size).
   */
  walk(
    chain: DescriptorChain,
    pos: number,
    wrap: number,
    flags: number,
    free: number,
    copy: PackedListCopy | null,
  ): number {
    const desc = this.#desc;
    let p = pos;
    let w = wrap;
    let f = flags;
    this.#begin(-1);
    if (copy !== null) copy.count = 0;
    for (let k = 0; ; k++) {
      const off = PVIRTQ_DESC_SIZE * p;
      if (k > 0) {
        if (k >= free) throw this.#tooLong(pos, p, k, free);
        // Plain read, ordered after the caller's Atomics.load of the first descriptor's flags.
        f = desc.readU16(off + PVIRTQ_DESC_OFF_FLAGS);
        if (!isPackedDescAvail(f, w)) throw this.#notAvail(pos, p, w, f);
      }
      const addr = desc.readU64AsNumber(off);
      const len = desc.readU32(off + PVIRTQ_DESC_OFF_LEN);
      const id = desc.readU16(off + PVIRTQ_DESC_OFF_ID);
      copy?.push(addr, len, f, id);
      if (this.#descriptor(chain, pos, p, k, f, addr, len)) {
        this.id = id;
        return k + 1;
      }
      if (++p === this.#size) {
        p = 0;
        w ^= 1;
      }
    }
  }

  /**
   * Walks a list an earlier device took, from the copy of its ring
   * descriptors that the inflight log kept (log entry `entry` heads it),
   * with the checks of {@link walk} but for availability (the ring slots
   * may hold used descriptors by now). Fills `chain`, sets {@link id} (the
   * last descriptor's); returns the ring descriptors of the list. Bounded
   * by the copy's length (≤ size).
   */
  walkCopy(chain: DescriptorChain, copy: PackedListCopy, entry: number): number {
    this.#begin(entry);
    const n = copy.count;
    for (let k = 0; k < n; k++) {
      const f = copy.flags[k]!;
      if (this.#descriptor(chain, entry, k, k, f, copy.addr[k]!, copy.len[k]!)) break;
    }
    this.id = copy.bufferId;
    this.#fromLog = -1;
    return n;
  }

  /** Starts a walk: of the ring (`entry` -1) or of the copy the log keeps under `entry`. */
  #begin(entry: number): void {
    this.#fromLog = entry;
    this.#total = 0;
    this.#writable = false;
  }

  /**
   * Records the `k`-th descriptor of the list at `pos` (ring position `p`,
   * flags `f`): its buffer, or its whole indirect table. True if it ends the
   * list (no NEXT, or INDIRECT).
   */
  #descriptor(
    chain: DescriptorChain,
    pos: number,
    p: number,
    k: number,
    f: number,
    addr: number,
    len: number,
  ): boolean {
    chain.descCount++;
    if ((f & VIRTQ_DESC_F_INDIRECT) !== 0) {
      this.#walkTable(chain, pos, p, k, f, addr, len);
      return true;
    }
    const readAfterWrite = this.#writable && (f & VIRTQ_DESC_F_WRITE) === 0;
    const total = (this.#total += len);
    if (
      readAfterWrite ||
      (len > 0 && !this.#memory.isValidRange(addr, len)) ||
      total > MAX_CHAIN_BYTES
    )
      throw this.#bufferError(pos, p, -1, addr, len, total, readAfterWrite);
    this.#writable ||= (f & VIRTQ_DESC_F_WRITE) !== 0;
    chain.pushSegment(addr, len, this.#writable);
    return (f & VIRTQ_DESC_F_NEXT) === 0;
  }

  /**
   * Walks the indirect table of the INDIRECT descriptor at ring position
   * `p` (the `k`-th of the list at `pos`, flags `f`): all `len / 16`
   * entries, in order, are the chain's buffers. Bounded by the table length
   * (≤ size).
   */
  #walkTable(
    chain: DescriptorChain,
    pos: number,
    p: number,
    k: number,
    f: number,
    addr: number,
    len: number,
  ): void {
    this.#checkIndirect(pos, p, k, f, len);
    const t = this.#tables.map(addr, len);
    if (t === null) {
      const what = `points to an indirect table [${hex(addr)}, +${len}) that is not inside guest memory`;
      throw this.#fail(ErrorCode.INDIRECT_TABLE, pos, p, -1, what, { addr, len });
    }
    const { slice: table, base, entries } = t;
    const mem = this.#memory;
    let total = 0;
    let writable = false;
    for (let i = 0; i < entries; i++) {
      const off = base + PVIRTQ_DESC_SIZE * i;
      const a = table.readU64AsNumber(off);
      const n = table.readU32(off + PVIRTQ_DESC_OFF_LEN);
      const flags = table.readU16(off + PVIRTQ_DESC_OFF_FLAGS);
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        // §2.8.19: "The driver MUST NOT set any flags except DESC_F_WRITE within an indirect descriptor."
        const what = "sets INDIRECT inside an indirect table";
        throw this.#fail(ErrorCode.INDIRECT_NESTED, pos, p, i, what, { flags });
      }
      chain.descCount++;
      const readAfterWrite = writable && (flags & VIRTQ_DESC_F_WRITE) === 0;
      total += n;
      if (readAfterWrite || (n > 0 && !mem.isValidRange(a, n)) || total > MAX_CHAIN_BYTES)
        throw this.#bufferError(pos, p, i, a, n, total, readAfterWrite);
      writable ||= (flags & VIRTQ_DESC_F_WRITE) !== 0;
      chain.pushSegment(a, n, writable);
    }
  }

  /** Checks an INDIRECT descriptor (the `k`-th of its list at `pos`, at `p`, flags `f`) and its table length. */
  #checkIndirect(pos: number, p: number, k: number, f: number, len: number): void {
    if (!this.#indirect) {
      // §2.8.19: "The driver MUST NOT set the VIRTQ_DESC_F_INDIRECT flag unless the VIRTIO_F_INDIRECT_DESC feature was negotiated."
      const what = "sets INDIRECT but VIRTIO_F_INDIRECT_DESC was not negotiated";
      throw this.#fail(ErrorCode.INDIRECT_TABLE, pos, p, -1, what, { len });
    }
    if (k > 0 || (f & VIRTQ_DESC_F_NEXT) !== 0) {
      // §2.8.19: "A driver MUST NOT write direct descriptors with VIRTQ_DESC_F_INDIRECT set in a scatter-gather list linked by VIRTQ_DESC_F_NEXT."
      const what =
        k > 0 ? "sets INDIRECT after a descriptor with NEXT" : "sets both INDIRECT and NEXT";
      throw this.#fail(ErrorCode.INDIRECT_NEXT, pos, p, -1, what, {});
    }
    const entries = len / PVIRTQ_DESC_SIZE;
    if (len === 0 || len % PVIRTQ_DESC_SIZE !== 0 || entries > this.#maxIndirect) {
      const what = `points to an indirect table of ${len} bytes: not a non-zero multiple of 16 of at most ${this.#maxIndirect} entries`;
      throw this.#fail(ErrorCode.INDIRECT_TABLE, pos, p, -1, what, {
        len,
        maxEntries: this.#maxIndirect,
      });
    }
    if (entries > this.#size) {
      // §2.8.17: "A driver MUST NOT create a descriptor list longer than the Queue Size."
      const what = `points to an indirect table of ${entries} entries, more than the queue size ${this.#size}`;
      throw this.#fail(ErrorCode.CHAIN_TOO_LONG, pos, p, -1, what, { entries, size: this.#size });
    }
  }

  /** CHAIN_TOO_LONG: the `k`-th descriptor (at `p`) of the list at `pos` is past the `free` ones. */
  #tooLong(pos: number, p: number, k: number, free: number): VirtioError {
    // §2.8.17: "A driver MUST make sure there's enough space in the ring for the whole list
    // before making the first descriptor in the list available to the device."
    const size = this.#size;
    const what = `continues the list past its ${free} free ring descriptors (queue size ${size}, ${size - free} outstanding)`;
    return this.#fail(ErrorCode.CHAIN_TOO_LONG, pos, p, -1, what, { descriptors: k, free, size });
  }

  /** DESC_NOT_AVAIL: descriptor `p` of the list at `pos` is not available for wrap counter `w`. */
  #notAvail(pos: number, p: number, w: number, flags: number): VirtioError {
    // §2.8.6: "all flags, including VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED, VIRTQ_DESC_F_WRITE must be set/cleared
    // correctly in all descriptors in the list"; §2.8.17: "A driver MUST NOT make the first descriptor in the list
    // available before all subsequent descriptors comprising the list are made available."
    const what = `follows a NEXT but its flags ${hex(flags)} do not mark it available for wrap counter ${w}`;
    return this.#fail(ErrorCode.DESC_NOT_AVAIL, pos, p, -1, what, { flags, wrap: w });
  }

  /**
   * The error of buffer descriptor `p` (entry `entry` of the indirect table at
   * `pos`, or a ring descriptor when `entry` is -1) that failed a check, in
   * the order they are made; `total` is the chain's bytes with this buffer.
   */
  #bufferError(
    pos: number,
    p: number,
    entry: number,
    addr: number,
    len: number,
    total: number,
    readAfterWrite: boolean,
  ): VirtioError {
    if (readAfterWrite) {
      // §2.8.17: "The driver MUST place any device-writable descriptor elements after any device-readable descriptor elements."
      const what = "is device-readable but follows a device-writable one";
      return this.#fail(ErrorCode.READ_AFTER_WRITE, pos, p, entry, what, {});
    }
    if (len > 0 && !this.#memory.isValidRange(addr, len)) {
      const what = `buffer [${hex(addr)}, +${len}) is not inside guest memory`;
      return this.#fail(ErrorCode.DESC_OUT_OF_BOUNDS, pos, p, entry, what, { addr, len });
    }
    const what = `brings the chain to ${total} bytes, above 2^32 - 1`;
    return this.#fail(ErrorCode.CHAIN_TOO_LONG, pos, p, entry, what, { total });
  }

  /**
   * Breaks the queue with a message naming the list (its first ring
   * position, or the inflight log entry it is resubmitted from) and the
   * descriptor.
   */
  #fail(
    code: ErrorCodeValue,
    pos: number,
    p: number,
    entry: number,
    what: string,
    details: Record<string, number>,
  ): VirtioError {
    const logged = this.#fromLog >= 0;
    const list = logged
      ? `list resubmitted from inflight log entry ${pos}`
      : `list at ring position ${pos}`;
    const where =
      entry >= 0
        ? `entry ${entry} of its indirect table`
        : logged
          ? `its descriptor ${p}`
          : `descriptor at ring position ${p}`;
    const err = new VirtioError(code, `${list}: ${where} ${what}`, {
      pos,
      desc: p,
      entry,
      ...details,
    });
    this.#queue.markBroken(err);
    return err;
  }
}

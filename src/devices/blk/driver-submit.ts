/**
 * Submission of one virtio-blk request: the next piece of an operation
 * becomes a descriptor chain on a queue. VIRTIO 1.2 §5.2.6 (a request is a
 * 16-byte header the device reads, the data, and a status byte it writes;
 * DISCARD / WRITE_ZEROES carry a table of 16-byte segments), §5.2.6.1 (the
 * driver requirements quoted where they apply), §2.7.13 (supplying buffers:
 * descriptors and the available ring, through the queue's ring),
 * §2.7.13.3.1 (the header and payload are written before the ring publishes
 * the request).
 *
 * Every resource a request needs (a request slot, descriptors, bounce
 * memory) is checked before anything is taken, so a request either starts
 * or leaves no trace. The next request's pieces and descriptor lists are
 * built in scratch owned here: nothing is allocated per request.
 *
 * @module
 */
import { VirtioError } from "../../errors.ts";
import type { GuestSlice } from "../../memory/guest-memory.ts";
import type { Segment } from "../../ring/driver-queue.ts";
import {
  VIRTIO_BLK_DWZ_SEG_SIZE,
  VIRTIO_BLK_ID_BYTES,
  VIRTIO_BLK_REQ_HDR_SIZE,
  VIRTIO_BLK_SECTOR_SIZE,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
} from "../../spec/blk.ts";
import type { FairBounce } from "./driver-bounce.ts";
import { maxPieces, rangeLimitsOf, type BlkDriverLimits } from "./driver-limits.ts";
import { BLK_DRIVER_SLOT_STATUS, type BlkDriverArenaMap } from "./driver-memory.ts";
import {
  nextDataPieces,
  nextRangePieces,
  pieceScratch,
  rangesLeft,
  type PieceScratch,
  type PlanCursor,
} from "./driver-plan.ts";
import type { QueueState } from "./driver-queues.ts";
import type { BlkOp, BlkSlot } from "./driver-request.ts";
import type { DriverRing } from "../../ring/driver-ring.ts";
import type { BlkDriverStats } from "./driver-types.ts";

/** Outcomes of {@link BlkSubmitter.submit}. */
export const STARTED = 0;
export const BLOCKED = 1;
export const DROPPED = 2;

/** Preset in the status byte so that a status the device never wrote is seen. */
const STATUS_UNSET = 0xff;

/** Builds and stages requests (see the module header). */
export class BlkSubmitter {
  readonly #limits: BlkDriverLimits;
  readonly #slotArea: GuestSlice;
  readonly #bounceArea: GuestSlice;
  readonly #bounce: FairBounce;
  readonly #stats: BlkDriverStats;

  // The request being built (scratch: no allocation per request).
  #sector = 0;
  #dataLen = 0;
  #bounceBytes = 0;
  #dataSegs = 0;
  readonly #pieces: PieceScratch;
  readonly #cur: PlanCursor = { index: 0, off: 0 };
  readonly #segPool: { addr: number; len: number }[];
  readonly #rd: Segment[] = [];
  readonly #wr: Segment[] = [];

  constructor(
    limits: BlkDriverLimits,
    arena: BlkDriverArenaMap,
    bounce: FairBounce,
    stats: BlkDriverStats,
  ) {
    this.#limits = limits;
    this.#slotArea = arena.slotArea;
    this.#bounceArea = arena.bounceArea;
    this.#bounce = bounce;
    this.#stats = stats;
    this.#pieces = pieceScratch(maxPieces(limits));
    const segs = limits.data.maxSegs + 2;
    this.#segPool = Array.from({ length: segs }, () => ({ addr: 0, len: 0 }));
  }

  /**
   * Builds and stages the next request of `op` on `q`: STARTED, BLOCKED
   * (a slot, descriptors or bounce memory is missing: nothing was taken), or
   * DROPPED (staging found the ring broken; the caller breaks the queue).
   */
  submit(q: QueueState, op: BlkOp): number {
    if (q.freeSlots.length === 0) {
      this.#stats.slotWaits++;
      return BLOCKED;
    }
    const slot = q.slots[q.freeSlots[q.freeSlots.length - 1]!]!;
    this.#plan(op);
    if (!this.#descriptorsFit(q.ring)) {
      this.#stats.descriptorWaits++;
      return BLOCKED;
    }
    const bounceBytes = this.#bounceBytes;
    let bounceAddr = -1;
    if (bounceBytes > 0) {
      bounceAddr = this.#bounce.alloc(q, bounceBytes);
      if (bounceAddr < 0) {
        this.#stats.bounceWaits++;
        return BLOCKED;
      }
    }
    this.#fill(op, slot, bounceAddr);
    let ok: boolean;
    try {
      ok = q.ring.stage(this.#rd, this.#wr, slot.index);
    } catch (e) {
      this.#bounce.undo(bounceAddr, bounceBytes);
      if (e instanceof VirtioError && q.ring.broken !== null) return DROPPED;
      throw e;
    }
    if (!ok) {
      // Not expected (descriptors were counted above); leave no trace and wait.
      this.#bounce.undo(bounceAddr, bounceBytes);
      this.#stats.descriptorWaits++;
      return BLOCKED;
    }
    q.freeSlots.pop();
    this.#commit(op, slot, bounceAddr);
    return STARTED;
  }

  /** The ring has the descriptors the planned request takes (one when it fits an indirect table). */
  #descriptorsFit(ring: DriverRing<number>): boolean {
    const total = this.#dataSegs + 2;
    const needed = ring.indirect && total <= this.#limits.indirectEntries ? 1 : total;
    return ring.numFree >= needed;
  }

  /** Sizes the next request of `op` from its position and cursor (neither is advanced yet). */
  #plan(op: BlkOp): void {
    const cur = this.#cur;
    cur.index = op.cur.index;
    cur.off = op.cur.off;
    this.#sector = 0;
    this.#dataLen = 0;
    this.#bounceBytes = 0;
    this.#dataSegs = 0;
    switch (op.type) {
      case VIRTIO_BLK_T_IN:
      case VIRTIO_BLK_T_OUT:
        this.#sector = (op.offset + op.pos) / VIRTIO_BLK_SECTOR_SIZE;
        if (op.user !== null) {
          const dataLen = Math.min(op.length - op.pos, this.#limits.copyChunk);
          this.#dataLen = dataLen;
          this.#bounceBytes = dataLen;
          this.#dataSegs = Math.ceil(dataLen / this.#limits.data.sizeMax);
        } else {
          this.#dataLen = nextDataPieces(op.segs!, cur, this.#limits.data, this.#pieces);
          this.#dataSegs = this.#pieces.count;
        }
        break;
      case VIRTIO_BLK_T_GET_ID:
        // §5.2.6.1 "The length of data MUST be 20 bytes for VIRTIO_BLK_T_GET_ID requests."
        this.#bounceBytes = VIRTIO_BLK_ID_BYTES;
        this.#dataSegs = 1;
        break;
      case VIRTIO_BLK_T_DISCARD:
      case VIRTIO_BLK_T_WRITE_ZEROES: {
        const lim = rangeLimitsOf(this.#limits, op.type);
        this.#bounceBytes =
          VIRTIO_BLK_DWZ_SEG_SIZE * nextRangePieces(op.ranges!, cur, lim, this.#pieces);
        this.#dataSegs = 1;
        break;
      }
      default: // FLUSH: §5.2.6.1 "A driver MUST set sector to 0 for a VIRTIO_BLK_T_FLUSH request."
        break;
    }
  }

  /**
   * Writes the header, the status preset and the payload into guest memory
   * and builds the descriptor lists. Plain writes: the avail.idx store when
   * the ring publishes orders them before the device sees the request
   * (§2.7.13.3.1).
   */
  #fill(op: BlkOp, slot: BlkSlot, bounceAddr: number): void {
    const hdr = this.#slotArea;
    const rd = this.#rd;
    const wr = this.#wr;
    rd.length = 0;
    wr.length = 0;
    hdr.writeU32(slot.off, op.type);
    hdr.writeU32(slot.off + 4, 0);
    hdr.writeU64(slot.off + 8, this.#sector);
    hdr.writeU8(slot.off + BLK_DRIVER_SLOT_STATUS, STATUS_UNSET);
    let k = 0;
    rd.push(this.#seg(k++, slot.addr, VIRTIO_BLK_REQ_HDR_SIZE));
    switch (op.type) {
      case VIRTIO_BLK_T_IN:
      case VIRTIO_BLK_T_OUT:
        k = this.#fillData(op, bounceAddr, k);
        break;
      case VIRTIO_BLK_T_GET_ID:
        wr.push(this.#seg(k++, bounceAddr, VIRTIO_BLK_ID_BYTES));
        break;
      case VIRTIO_BLK_T_DISCARD:
      case VIRTIO_BLK_T_WRITE_ZEROES:
        k = this.#fillRanges(op, bounceAddr, k);
        break;
      default:
        break;
    }
    wr.push(this.#seg(k, slot.addr + BLK_DRIVER_SLOT_STATUS, 1));
  }

  /** IN / OUT data descriptors from pooled segment `k` on (OUT copies the caller's bytes in); the next `k`. */
  #fillData(op: BlkOp, bounceAddr: number, k: number): number {
    const out = op.type === VIRTIO_BLK_T_OUT;
    const list = out ? this.#rd : this.#wr;
    if (op.user !== null) {
      const dataLen = this.#dataLen;
      if (out)
        this.#bounceArea.writeBytes(
          bounceAddr - this.#bounce.pool.addr,
          op.user.subarray(op.pos, op.pos + dataLen),
        );
      const sizeMax = this.#limits.data.sizeMax;
      for (let at = 0; at < dataLen; at += sizeMax)
        list.push(this.#seg(k++, bounceAddr + at, Math.min(sizeMax, dataLen - at)));
    } else {
      const p = this.#pieces;
      for (let i = 0; i < p.count; i++) list.push(this.#seg(k++, p.a[i]!, p.len[i]!));
    }
    return k;
  }

  /** The DISCARD / WRITE_ZEROES segment table in the bounce run and its descriptor; the next `k`. */
  #fillRanges(op: BlkOp, bounceAddr: number, k: number): number {
    const p = this.#pieces;
    const area = this.#bounceArea;
    const boff = bounceAddr - this.#bounce.pool.addr;
    // §5.2.6.1 "The unmap bit MUST be zero for discard commands."
    const flags = op.type === VIRTIO_BLK_T_WRITE_ZEROES && op.unmap ? 1 : 0;
    for (let i = 0; i < p.count; i++) {
      const at = boff + i * VIRTIO_BLK_DWZ_SEG_SIZE;
      area.writeU64(at, p.a[i]! / VIRTIO_BLK_SECTOR_SIZE);
      area.writeU32(at + 8, p.len[i]! / VIRTIO_BLK_SECTOR_SIZE);
      area.writeU32(at + 12, flags === 1 ? VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP : 0);
    }
    this.#rd.push(this.#seg(k++, bounceAddr, p.count * VIRTIO_BLK_DWZ_SEG_SIZE));
    return k;
  }

  #seg(i: number, addr: number, len: number): Segment {
    const s = this.#segPool[i]!;
    s.addr = addr;
    s.len = len;
    return s;
  }

  /** The request is on the ring: records it in its slot and advances `op`. */
  #commit(op: BlkOp, slot: BlkSlot, bounceAddr: number): void {
    const dataLen = this.#dataLen;
    slot.op = op;
    slot.type = op.type;
    slot.offset = this.#sector * VIRTIO_BLK_SECTOR_SIZE;
    slot.dataLen = dataLen;
    slot.userPos = op.pos;
    slot.bounceAddr = bounceAddr;
    slot.bounceBytes = this.#bounceBytes;
    op.inFlight++;
    op.pos += dataLen;
    op.cur.index = this.#cur.index;
    op.cur.off = this.#cur.off;
    op.allSubmitted = this.#lastRequest(op);
    this.#stats.requests++;
  }

  /** True if `op` has no more requests to submit (cursors already advanced). */
  #lastRequest(op: BlkOp): boolean {
    switch (op.type) {
      case VIRTIO_BLK_T_IN:
      case VIRTIO_BLK_T_OUT:
        return op.pos >= op.length;
      case VIRTIO_BLK_T_DISCARD:
      case VIRTIO_BLK_T_WRITE_ZEROES:
        return !rangesLeft(op.ranges!, op.cur, rangeLimitsOf(this.#limits, op.type).align);
      default:
        return true;
    }
  }
}

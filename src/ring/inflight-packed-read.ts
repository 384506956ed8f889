/**
 * Reading a used packed-layout inflight log at a queue start: settling the
 * batch a killed back-end was publishing, the free list, and the descriptor
 * lists still in flight. qemu/qemu docs/interop/vhost-user.rst "Inflight
 * I/O tracking", packed virtqueue, "When reconnecting":
 *
 * 1. "If used_idx does not match old_used_idx (means the inflight field of
 *    DescStatePacked entries in last batch may be incorrect), a. Get the
 *    next descriptor ring entry through old_used_idx, d b. Use
 *    old_used_wrap_counter to calculate the available flags c. If d.flags
 *    is not equal to the calculated flags value (means back-end has
 *    submitted the buffer to guest driver before crash, so it has to commit
 *    the in-progres update), set old_free_head, old_used_idx,
 *    old_used_wrap_counter to free_head, used_idx, used_wrap_counter"
 *    ({@link settleBatch}; a batch of exactly a ring's worth moves used_idx
 *    back to where it was, so the wrap counters are compared too);
 * 2. "Set free_head, used_idx, used_wrap_counter to old_free_head,
 *    old_used_idx, old_used_wrap_counter (roll back any in-progress update)"
 *    ({@link settleBatch});
 * 3. "Set the inflight field of each DescStatePacked entry in free list to
 *    0" ({@link walkFreeList});
 * 4. "Resubmit inflight DescStatePacked entries in order of their counter
 *    value" ({@link inflightLists}: each list read back from its head
 *    through `next`, `num` entries, ending at `last`).
 *
 * One step more than the spec's: a rolled-back batch may have had its later
 * used descriptors marked already (the first one is marked last, §2.8.9, so
 * the driver sees a batch at once). Those marks are undone in the ring — the
 * AVAIL/USED bits set back to available ({@link unmarkBatch}) — or the
 * driver would read them as soon as the first used descriptor is written
 * anew.
 *
 * Everything here was in memory the front-end can write: every index is
 * bounds-checked before use, every walk is bounded (the free list by its
 * entries, each visited once; a list by its `num` ≤ ring size) and a value
 * that does not fit is returned as the reason to start the log afresh.
 * Nothing is written until the whole log is found sound, and the writes
 * are ordered so that a back-end killed while recovering recovers the same
 * way the next time (the ring's marks first, then the settlement, then the
 * rebuild of the free list).
 *
 * @module
 */
import {
  INFLIGHT_OFF_DESC_NUM,
  INFLIGHT_OFF_VERSION,
  INFLIGHT_PACKED_DESC_OFF_ADDR,
  INFLIGHT_PACKED_DESC_OFF_COUNTER,
  INFLIGHT_PACKED_DESC_OFF_FLAGS,
  INFLIGHT_PACKED_DESC_OFF_ID,
  INFLIGHT_PACKED_DESC_OFF_INFLIGHT,
  INFLIGHT_PACKED_DESC_OFF_LAST,
  INFLIGHT_PACKED_DESC_OFF_LEN,
  INFLIGHT_PACKED_DESC_OFF_NEXT,
  INFLIGHT_PACKED_DESC_OFF_NUM,
  INFLIGHT_PACKED_DESC_SIZE,
  INFLIGHT_PACKED_OFF_DESC,
  INFLIGHT_PACKED_OFF_FREE_HEAD,
  INFLIGHT_PACKED_OFF_OLD_FREE_HEAD,
  INFLIGHT_PACKED_OFF_OLD_USED_IDX,
  INFLIGHT_PACKED_OFF_OLD_USED_WRAP,
  INFLIGHT_PACKED_OFF_USED_IDX,
  INFLIGHT_PACKED_OFF_USED_WRAP,
  INFLIGHT_VERSION,
} from "../spec/vhost-user.ts";
import {
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_USED,
  isPackedDescAvail,
  isPackedDescUsed,
} from "../spec/packed-virtqueue.ts";
import { VIRTQ_DESC_F_NEXT } from "../spec/virtqueue.ts";
import { PackedListCopy } from "./packed-list-copy.ts";
import { cyclePos, type WrapCounter } from "./packed-ring-state.ts";

const U32 = 0x1_0000_0000;

/** The flags of the ring's descriptors, for the batch check and its repair. */
export interface PackedRingFlags {
  /** Flags of the descriptor at ring position `pos` (0..size-1). */
  flagsAt(pos: number): number;
  /** Stores `flags` into the descriptor at ring position `pos`. */
  setFlagsAt(pos: number, flags: number): void;
}

/** A descriptor list the log holds in flight. */
export interface LoggedList {
  /** The log entry heading it. */
  readonly entry: number;
  /** The log entries of its descriptors, in list order (the first heads it, the last is its `last`). */
  readonly entries: readonly number[];
  /** Its fetch order (kept below 2^53). */
  readonly counter: number;
  /** Its ring descriptors as fetched. */
  readonly copy: PackedListCopy;
}

/** Byte offset of log entry `e`. */
export const entryAt = (e: number): number =>
  INFLIGHT_PACKED_OFF_DESC + INFLIGHT_PACKED_DESC_SIZE * e;

/** Why the header of a used log cannot be trusted for a ring of `size` and `descNum` entries, or null. */
export function checkPackedHeader(dv: DataView, descNum: number, size: number): string | null {
  const version = dv.getUint16(INFLIGHT_OFF_VERSION, true);
  if (version !== INFLIGHT_VERSION) return `version ${version}`;
  const n = dv.getUint16(INFLIGHT_OFF_DESC_NUM, true);
  if (n !== descNum) return `desc_num ${n}, expected ${descNum}`;
  for (const [name, off] of [
    ["free_head", INFLIGHT_PACKED_OFF_FREE_HEAD],
    ["old_free_head", INFLIGHT_PACKED_OFF_OLD_FREE_HEAD],
  ] as const) {
    const v = dv.getUint16(off, true);
    if (v > descNum) return `${name} ${v} out of range`;
  }
  for (const [name, off] of [
    ["used_idx", INFLIGHT_PACKED_OFF_USED_IDX],
    ["old_used_idx", INFLIGHT_PACKED_OFF_OLD_USED_IDX],
  ] as const) {
    const v = dv.getUint16(off, true);
    if (v >= size) return `${name} ${v} is not a position of a ring of ${size}`;
  }
  for (const [name, off] of [
    ["used_wrap_counter", INFLIGHT_PACKED_OFF_USED_WRAP],
    ["old_used_wrap_counter", INFLIGHT_PACKED_OFF_OLD_USED_WRAP],
  ] as const) {
    const v = dv.getUint8(off);
    if (v > 1) return `${name} ${v}`;
  }
  return null;
}

/** How step 1 settles the batch that was in progress, read from a log and the ring (nothing written yet). */
export interface BatchSettlement {
  /** Where the used descriptors resume: used_idx / used_wrap_counter after step 2. */
  readonly usedPos: number;
  readonly usedWrap: WrapCounter;
  /** The head of the free list after step 2. */
  readonly freeHead: number;
  /** The batch was published (1c): the old_ fields take the current ones. */
  readonly commit: boolean;
  /** Ring descriptors of a batch rolled back from `usedPos` (0 if none), for {@link unmarkBatch}. */
  readonly rolledBack: number;
}

/**
 * Step 1's decision on a log whose header passed {@link checkPackedHeader},
 * or why the log cannot be trusted (a batch of more than a ring). Reads
 * only: {@link applySettlement} writes it once the whole log is found sound.
 */
export function settleBatch(
  dv: DataView,
  size: number,
  ring: PackedRingFlags,
): BatchSettlement | string {
  const usedIdx = dv.getUint16(INFLIGHT_PACKED_OFF_USED_IDX, true);
  const usedWrap = dv.getUint8(INFLIGHT_PACKED_OFF_USED_WRAP) as WrapCounter;
  const oldIdx = dv.getUint16(INFLIGHT_PACKED_OFF_OLD_USED_IDX, true);
  const oldWrap = dv.getUint8(INFLIGHT_PACKED_OFF_OLD_USED_WRAP) as WrapCounter;
  const oldFree = dv.getUint16(INFLIGHT_PACKED_OFF_OLD_FREE_HEAD, true);
  const rollBack = { usedPos: oldIdx, usedWrap: oldWrap, freeHead: oldFree, commit: false };
  if (usedIdx === oldIdx && usedWrap === oldWrap) return { ...rollBack, rolledBack: 0 };
  const span = 2 * size;
  const batch = (cyclePos(usedIdx, usedWrap, size) - cyclePos(oldIdx, oldWrap, size) + span) % span;
  if (batch > size) return `used_idx ${usedIdx} is more than a ring past old_used_idx ${oldIdx}`;
  // 1a–1b: the batch's first used descriptor, and the flags it has while still available.
  if (isPackedDescAvail(ring.flagsAt(oldIdx), oldWrap)) return { ...rollBack, rolledBack: batch };
  // 1c: it is marked: the batch was published; commit it.
  const freeHead = dv.getUint16(INFLIGHT_PACKED_OFF_FREE_HEAD, true);
  return { usedPos: usedIdx, usedWrap, freeHead, commit: true, rolledBack: 0 };
}

/** Index of the 8-byte word at offset 16 that holds used_idx, old_used_idx, used_wrap_counter, old_used_wrap_counter (and 2 padding bytes). */
const USED_WORD = INFLIGHT_PACKED_OFF_USED_IDX / 8;

/**
 * Stores used_idx / used_wrap_counter and old_used_idx /
 * old_used_wrap_counter at once (`word`: the region's first 32 bytes as
 * u64s). A position apart from its wrap counter is ambiguous to step 1 —
 * a batch that crossed the ring's end would look a ring long, or more — so
 * the four never go out one by one.
 */
export function storeUsedWord(
  word: BigUint64Array,
  usedIdx: number,
  usedWrap: number,
  oldIdx: number,
  oldWrap: number,
): void {
  const lo = (usedIdx | (oldIdx << 16)) >>> 0;
  const hi = usedWrap | (oldWrap << 8);
  // Atomics.store (SeqCst): one 8-byte store (a kill lands before or after it, never inside); it follows the
  // log's earlier stores and precedes its later ones and the ring's.
  Atomics.store(word, USED_WORD, BigInt(lo) | (BigInt(hi) << 32n));
}

/**
 * Writes step 1c (commit: old_free_head, then the old_ positions) or step 2
 * (roll back: free_head, then the positions); the positions go in one store
 * ({@link storeUsedWord}), so the next start, if this one is killed, settles
 * the batch the same way.
 */
export function applySettlement(dv: DataView, word: BigUint64Array, s: BatchSettlement): void {
  const free = s.commit ? INFLIGHT_PACKED_OFF_OLD_FREE_HEAD : INFLIGHT_PACKED_OFF_FREE_HEAD;
  dv.setUint16(free, s.freeHead, true);
  storeUsedWord(word, s.usedPos, s.usedWrap, s.usedPos, s.usedWrap);
}

/**
 * The `batch` ring descriptors from `pos` (wrap counter `wrap`) belong to a
 * batch that was not published: any of them marked used is set back to
 * available (only the AVAIL/USED bits change). Bounded by `batch` ≤ size.
 */
export function unmarkBatch(
  ring: PackedRingFlags,
  size: number,
  pos: number,
  wrap: number,
  batch: number,
): void {
  let p = pos;
  let w = wrap;
  const bits = VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED;
  for (let k = 0; k < batch; k++) {
    const f = ring.flagsAt(p);
    if (isPackedDescUsed(f, w))
      ring.setFlagsAt(p, (f & ~bits) | (w === 1 ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED));
    if (++p === size) {
      p = 0;
      w ^= 1;
    }
  }
}

/**
 * The free list of step 3, from its settled head `head`: the entries on it
 * (1 each; their inflight marks are cleared with the log's rebuild), or why
 * the list cannot be trusted. The list ends at `desc_num`; bounded: each
 * entry is visited at most once.
 */
export function walkFreeList(dv: DataView, descNum: number, head: number): Uint8Array | string {
  const free = new Uint8Array(descNum);
  let e = head;
  while (e !== descNum) {
    if (e > descNum) return `the free list reaches entry ${e}`;
    if (free[e] !== 0) return `the free list loops at entry ${e}`;
    free[e] = 1;
    e = dv.getUint16(entryAt(e) + INFLIGHT_PACKED_DESC_OFF_NEXT, true);
  }
  return free;
}

/**
 * Step 4 (reads only): the lists still marked in flight (heads not on the free list),
 * oldest first. `taken` holds the free entries and receives each list's
 * (so no entry serves twice). Null-free result or why the lists cannot be
 * trusted: a list leaving the table or running into a taken entry, a
 * `num` outside 1..size, a `last` that is not where the list ends, NEXT on
 * the last descriptor or missing on another, a buffer ID outside the ring
 * or held twice, or more ring descriptors than the ring has.
 */
export function inflightLists(
  dv: DataView,
  descNum: number,
  size: number,
  taken: Uint8Array,
): LoggedList[] | string {
  const lists: LoggedList[] = [];
  const ids = new Uint8Array(size);
  let slots = 0;
  for (let h = 0; h < descNum; h++) {
    if (taken[h] !== 0 || dv.getUint8(entryAt(h) + INFLIGHT_PACKED_DESC_OFF_INFLIGHT) === 0)
      continue;
    const list = readList(dv, descNum, size, h, taken);
    if (typeof list === "string") return `entry ${h}: ${list}`;
    const id = list.copy.bufferId;
    if (id >= size) return `entry ${h}: buffer ID ${id} is not an ID of a ring of ${size}`;
    if (ids[id] !== 0) return `entry ${h}: buffer ID ${id} is in flight twice`;
    ids[id] = 1;
    slots += list.copy.count;
    if (slots > size) return "more descriptors in flight than the ring holds";
    lists.push(list);
  }
  lists.sort((a, b) => a.counter - b.counter || a.entry - b.entry);
  return lists;
}

/** The list headed by entry `h`, its entries marked in `taken`, or what is wrong with it. Bounded by `num` ≤ size. */
function readList(
  dv: DataView,
  descNum: number,
  size: number,
  h: number,
  taken: Uint8Array,
): LoggedList | string {
  const num = dv.getUint16(entryAt(h) + INFLIGHT_PACKED_DESC_OFF_NUM, true);
  if (num < 1 || num > size) return `num ${num} is not in 1..${size}`;
  const last = dv.getUint16(entryAt(h) + INFLIGHT_PACKED_DESC_OFF_LAST, true);
  const copy = new PackedListCopy(num);
  const entries: number[] = [];
  let e = h;
  for (let k = 0; ; k++) {
    if (e >= descNum || taken[e] !== 0) return `its list runs into entry ${e}`;
    taken[e] = 1;
    entries.push(e);
    const at = entryAt(e);
    const flags = dv.getUint16(at + INFLIGHT_PACKED_DESC_OFF_FLAGS, true);
    const end = k === num - 1;
    if (((flags & VIRTQ_DESC_F_NEXT) === 0) !== end)
      return `descriptor ${k} of ${num} ${end ? "has" : "lacks"} NEXT`;
    const lo = dv.getUint32(at + INFLIGHT_PACKED_DESC_OFF_ADDR, true);
    const hi = dv.getUint32(at + INFLIGHT_PACKED_DESC_OFF_ADDR + 4, true);
    const len = dv.getUint32(at + INFLIGHT_PACKED_DESC_OFF_LEN, true);
    copy.push(hi * U32 + lo, len, flags, dv.getUint16(at + INFLIGHT_PACKED_DESC_OFF_ID, true));
    if (end) break;
    e = dv.getUint16(at + INFLIGHT_PACKED_DESC_OFF_NEXT, true);
  }
  if (e !== last) return `last ${last}, but the list ends at entry ${e}`;
  const at = entryAt(h) + INFLIGHT_PACKED_DESC_OFF_COUNTER;
  const counter = (dv.getUint32(at + 4, true) % 0x20_0000) * U32 + dv.getUint32(at, true); // below 2^53
  return { entry: h, entries, counter, copy };
}

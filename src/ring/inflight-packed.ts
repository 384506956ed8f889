/**
 * Inflight I/O tracking for one packed virtqueue: a log in memory shared
 * with the vhost-user front-end that records which descriptor lists the
 * device took and has not returned — with copies of their ring descriptors,
 * since used descriptors overwrite the ring — and where the ring stands, so
 * that a restarted back-end resubmits exactly those lists, in the order they
 * were taken, never one that completed, and resumes the ring where it was
 * (nothing in guest memory says where a packed ring's used descriptors go
 * next, and the front-end's SET_VRING_BASE may be stale after a crash).
 * qemu/qemu docs/interop/vhost-user.rst "Inflight I/O tracking", packed
 * virtqueue (QueueRegionPacked, DescStatePacked; layout in
 * ../spec/vhost-user.ts); VIRTIO 1.2 §2.8.1 (wrap counters), §2.8.6 (one
 * used descriptor per list, the position moving by the list's length).
 *
 * "When receiving available buffers from the driver" ({@link fetched}), for
 * each descriptor `d` of a list, in order:
 * 1. "Get the next available descriptor entry from descriptor ring, d"
 * 2. "If d is head descriptor, a. Set desc[old_free_head].num to 0 b. Set
 *    desc[old_free_head].counter to the value of global counter c. Increase
 *    global counter by 1 d. Set desc[old_free_head].inflight to 1"
 * 3. "If d is last descriptor, set desc[old_free_head].last to free_head"
 * 4. "Increase desc[old_free_head].num by 1"
 * 5. "Set desc[free_head].addr, desc[free_head].len, desc[free_head].flags,
 *    desc[free_head].id to d.addr, d.len, d.flags, d.id"
 * 6. "Set free_head to desc[free_head].next"
 * 7. "If d is last descriptor, set old_free_head to free_head"
 *
 * "When supplying used buffers to the driver" ({@link used} names the
 * list; {@link publishing} and {@link published} run around the ring's
 * flag stores, so no list is fetched in the middle of a batch):
 * 1. "Get corresponding used head-descriptor entry from descriptor ring, d"
 * 2. "Get corresponding DescStatePacked entry, e"
 * 3. "Set desc[e.last].next to free_head"
 * 4. "Set free_head to the index of e"
 * 5. "Steps 1,2,3,4 may be performed repeatedly if batching is possible"
 * 6. "Increase used_idx by the size of the batch and update
 *    used_wrap_counter if needed" (the ring's used position after the batch)
 * 7. "Update d.flags" (the ring: PackedUsedBatch.publish)
 * 8. "Set the inflight field of each head DescStatePacked entry in the batch to 0"
 * 9. "Set old_free_head, old_used_idx, old_used_wrap_counter to free_head,
 *    used_idx, used_wrap_counter"
 *
 * "When reconnecting" ({@link recover}; the steps are quoted in
 * inflight-packed-read.ts): the batch in progress is committed or rolled
 * back, the free list's marks cleared, and the lists still marked are
 * resubmitted by counter. The ring resumes with its used descriptors at
 * old_used_idx / old_used_wrap_counter and takes new lists after the ring
 * descriptors of those in flight (each list's `num`), whatever
 * SET_VRING_BASE said. A fresh log (version 0) starts where SET_VRING_BASE
 * says, with every entry on the free list (entry j's next is j + 1, the list
 * ends at desc_num).
 *
 * The front-end writes this memory too: every value read back at a start
 * is checked (inflight-packed-read.ts); a log found inconsistent is started
 * afresh and the caller is told. While the queue runs the shared memory is
 * only written: the free list and the lists' lengths are kept privately.
 *
 * @module
 */
import {
  INFLIGHT_OFF_DESC_NUM,
  INFLIGHT_OFF_FEATURES,
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
  INFLIGHT_PACKED_OFF_FREE_HEAD,
  INFLIGHT_PACKED_OFF_OLD_FREE_HEAD,
  INFLIGHT_VERSION,
  inflightPackedQueueRegionSize,
} from "../spec/vhost-user.ts";
import {
  applySettlement,
  checkPackedHeader,
  entryAt,
  inflightLists,
  settleBatch,
  storeUsedWord,
  unmarkBatch,
  walkFreeList,
  type BatchSettlement,
  type LoggedList,
  type PackedRingFlags,
} from "./inflight-packed-read.ts";
import type { InflightRecovery } from "./inflight-recovery.ts";
import type { PackedListCopy } from "./packed-list-copy.ts";
import type { PackedRingState, WrapCounter } from "./packed-ring-state.ts";

export type { LoggedList, PackedRingFlags } from "./inflight-packed-read.ts";

/** What a packed queue start finds in its log. */
export interface PackedInflightRecovery extends InflightRecovery {
  /** Where the ring resumes (the log's positions, or SET_VRING_BASE's when the log was not trusted). */
  readonly ring: PackedRingState;
  /** The lists to resubmit, oldest first (`resubmit` holds their buffer IDs in the same order). */
  readonly lists: readonly LoggedList[];
}

/**
 * A packed ring's log that survives the device's thread (vhost-user: the
 * GET_INFLIGHT_FD buffer). {@link PackedInflightLog} is one; the calls come
 * in the order the vhost-user spec lists its steps.
 */
export interface PackedInflightTracker {
  /** Tells it apart from a split ring's tracker. */
  readonly layout: "packed";
  /**
   * At the queue's start, with `front` the state SET_VRING_BASE gave and
   * `ring` the descriptor ring's flags: what an earlier device left, or null
   * for a fresh log (the ring then starts at `front`).
   */
  recover(
    front: PackedRingState,
    size: number,
    ring: PackedRingFlags,
  ): PackedInflightRecovery | null;
  /** A list with buffer ID `id` was taken, its ring descriptors in `list` (before its request starts). */
  fetched(list: PackedListCopy, id: number): void;
  /** The used descriptor of buffer `id` was written (not yet published). */
  used(id: number): void;
  /** The batch of used descriptors is about to be marked; the used position will then be `usedPos`/`usedWrap`. */
  publishing(usedPos: number, usedWrap: WrapCounter): void;
  /** The batch is marked used in the ring. */
  published(): void;
}

const U32 = 0x1_0000_0000;

/**
 * The log of one packed queue, over `region` (this queue's
 * `inflightPackedQueueRegionSize(descNum)` bytes of the shared buffer).
 * Single-threaded: the thread that runs the queue.
 */
export class PackedInflightLog implements PackedInflightTracker {
  readonly layout = "packed" as const;
  readonly descNum: number;
  readonly #dv: DataView;
  /** The region's header as u64s, for the one store of the used positions (`storeUsedWord`). */
  readonly #word: BigUint64Array;
  /** Private copies of each entry's `next` (desc_num ends the free list) and of each head's `last` and `num`. */
  readonly #next: Uint16Array;
  readonly #last: Uint16Array;
  readonly #num: Uint16Array;
  /** Head entries of the lists used since the last publish. */
  readonly #batch: Uint16Array;
  #batchLen = 0;
  /** The head entry of each buffer ID in flight, or -1 (sized at recover: the ring's size). */
  #entryOf = new Int32Array(0);
  #freeHead = 0;
  /** Entries on the free list. */
  #freeCount = 0;
  #usedPos = 0;
  #usedWrap: WrapCounter = 1;
  /** The fetch order of the next list taken (JavaScript numbers are exact below 2^53). */
  #counter = 0;
  /** The log cannot cover the ring: nothing is written to it. */
  #off = false;

  /**
   * @throws {RangeError} if `region` is not a whole queue region for
   *   `descNum` entries, 8-byte aligned (queue regions are 64-byte aligned).
   */
  constructor(region: Uint8Array, descNum: number) {
    if (!Number.isInteger(descNum) || descNum < 1 || descNum > 32768)
      throw new RangeError(`inflight desc_num must be in 1..32768, got ${descNum}`);
    if (region.byteLength < inflightPackedQueueRegionSize(descNum) || region.byteOffset % 8 !== 0)
      throw new RangeError(
        `inflight region of ${region.byteLength} bytes at offset ${region.byteOffset} for ${descNum} entries`,
      );
    this.descNum = descNum;
    this.#dv = new DataView(region.buffer, region.byteOffset, region.byteLength);
    this.#word = new BigUint64Array(region.buffer, region.byteOffset, 4);
    this.#next = new Uint16Array(descNum);
    this.#last = new Uint16Array(descNum);
    this.#num = new Uint16Array(descNum);
    this.#batch = new Uint16Array(descNum);
  }

  recover(
    front: PackedRingState,
    size: number,
    ring: PackedRingFlags,
  ): PackedInflightRecovery | null {
    this.#entryOf = new Int32Array(size).fill(-1);
    this.#counter = 0;
    const fresh = (discarded?: string, untracked?: boolean): PackedInflightRecovery => ({
      resubmit: [],
      nextAvail: front.availPos,
      ring: front,
      lists: [],
      ...(discarded === undefined ? {} : { discarded }),
      ...(untracked === true ? { untracked } : {}),
    });
    if (size > this.descNum) {
      // The front-end sized the log (SET_INFLIGHT_FD) smaller than the ring (SET_VRING_NUM).
      this.#off = true;
      return fresh(`ring of ${size} entries, log of ${this.descNum}`, true);
    }
    if (this.#dv.getUint16(INFLIGHT_OFF_VERSION, true) === 0) {
      this.#init(front, new Uint8Array(this.descNum), true);
      return null;
    }
    const r = this.#read(size, ring);
    if (typeof r === "string") {
      this.#entryOf.fill(-1);
      this.#counter = 0;
      this.#init(front, new Uint8Array(this.descNum), true);
      return fresh(r);
    }
    return r;
  }

  /** Steps 1–7 for each descriptor of the list just taken (see the module header). */
  fetched(list: PackedListCopy, id: number): void {
    const n = list.count;
    if (this.#off || id >= this.#entryOf.length || n === 0) return;
    if (n > this.#freeCount) {
      this.#off = true; // cannot happen: the ring never holds more descriptors than the log has entries
      return;
    }
    const dv = this.#dv;
    const head = this.#freeHead; // == old_free_head: a batch is never left half-published
    const h = entryAt(head);
    dv.setUint16(h + INFLIGHT_PACKED_DESC_OFF_NUM, 0, true); // 2a
    this.#writeCounter(h); // 2b, 2c
    dv.setUint8(h + INFLIGHT_PACKED_DESC_OFF_INFLIGHT, 1); // 2d
    let free = head;
    for (let k = 0; k < n; k++) {
      if (k === n - 1) dv.setUint16(h + INFLIGHT_PACKED_DESC_OFF_LAST, free, true); // 3
      dv.setUint16(h + INFLIGHT_PACKED_DESC_OFF_NUM, k + 1, true); // 4
      this.#writeDesc(free, list, k); // 5
      if (k === n - 1) this.#last[head] = free;
      free = this.#next[free]!; // 6
      dv.setUint16(INFLIGHT_PACKED_OFF_FREE_HEAD, free, true);
    }
    dv.setUint16(INFLIGHT_PACKED_OFF_OLD_FREE_HEAD, free, true); // 7
    this.#freeHead = free;
    this.#freeCount -= n;
    this.#num[head] = n;
    this.#entryOf[id] = head;
  }

  /** The used descriptor of `id` was written: its head entry joins the batch (steps 1–2). */
  used(id: number): void {
    if (this.#off || id >= this.#entryOf.length) return;
    const e = this.#entryOf[id]!;
    if (e < 0) return; // not in the log (a ring resumed with descriptors outstanding on a fresh log)
    this.#entryOf[id] = -1;
    this.#batch[this.#batchLen++] = e;
  }

  /** Steps 3–4 for each list of the batch, then 6: the log's used position is the ring's after the batch. */
  publishing(usedPos: number, usedWrap: WrapCounter): void {
    if (this.#off) return;
    const dv = this.#dv;
    for (let i = 0; i < this.#batchLen; i++) {
      const e = this.#batch[i]!;
      const last = this.#last[e]!;
      dv.setUint16(entryAt(last) + INFLIGHT_PACKED_DESC_OFF_NEXT, this.#freeHead, true); // 3
      this.#next[last] = this.#freeHead;
      this.#freeHead = e; // 4
      dv.setUint16(INFLIGHT_PACKED_OFF_FREE_HEAD, e, true);
      this.#freeCount += this.#num[e]!;
    }
    // 6: with the committed position (the last batch's) unchanged, in one store.
    storeUsedWord(this.#word, usedPos, usedWrap, this.#usedPos, this.#usedWrap);
    this.#usedPos = usedPos;
    this.#usedWrap = usedWrap;
  }

  /** Steps 8–9, after the ring's flags were stored. */
  published(): void {
    if (this.#off) return;
    const dv = this.#dv;
    for (let i = 0; i < this.#batchLen; i++)
      dv.setUint8(entryAt(this.#batch[i]!) + INFLIGHT_PACKED_DESC_OFF_INFLIGHT, 0); // 8
    this.#batchLen = 0;
    dv.setUint16(INFLIGHT_PACKED_OFF_OLD_FREE_HEAD, this.#freeHead, true); // 9
    storeUsedWord(this.#word, this.#usedPos, this.#usedWrap, this.#usedPos, this.#usedWrap);
  }

  /**
   * A used log, read and settled ("When reconnecting"), or why it cannot be
   * trusted. Nothing is written before every check passed.
   */
  #read(size: number, ring: PackedRingFlags): PackedInflightRecovery | string {
    const dv = this.#dv;
    const bad = checkPackedHeader(dv, this.descNum, size);
    if (bad !== null) return bad;
    const settled = settleBatch(dv, size, ring);
    if (typeof settled === "string") return settled;
    const free = walkFreeList(dv, this.descNum, settled.freeHead);
    if (typeof free === "string") return free;
    const taken = free.slice();
    const lists = inflightLists(dv, this.descNum, size, taken);
    if (typeof lists === "string") return lists;
    const state = this.#resumeState(settled, lists, size);
    unmarkBatch(ring, size, settled.usedPos, settled.usedWrap, settled.rolledBack);
    applySettlement(dv, this.#word, settled);
    // Step 3, before any link changes: a kill while the free list is rebuilt may leave entries off the
    // list the next start walks, and they must not look in flight then.
    for (let e = 0; e < this.descNum; e++)
      if (free[e] !== 0) dv.setUint8(entryAt(e) + INFLIGHT_PACKED_DESC_OFF_INFLIGHT, 0);
    // Every entry no list holds (on the free list, or lost from it) is free again.
    for (let e = 0; e < this.descNum; e++) taken[e] = taken[e]! & (free[e]! ^ 1);
    this.#init(state, taken, false);
    return {
      resubmit: lists.map((l) => l.copy.bufferId),
      nextAvail: state.availPos,
      ring: state,
      lists,
    };
  }

  /**
   * The ring state after step 2 with `lists` in flight (their ring
   * descriptors follow the used position, ≤ size in all), and the private
   * copies of the lists' links, lengths, last entries and buffer IDs (as
   * checked: the shared memory is not read again).
   */
  #resumeState(
    settled: BatchSettlement,
    lists: readonly LoggedList[],
    size: number,
  ): PackedRingState {
    let availPos = settled.usedPos;
    let availWrap = settled.usedWrap;
    for (const l of lists) {
      availPos += l.copy.count;
      const n = l.entries.length;
      for (let k = 0; k + 1 < n; k++) this.#next[l.entries[k]!] = l.entries[k + 1]!;
      this.#num[l.entry] = n;
      this.#last[l.entry] = l.entries[n - 1]!;
      this.#entryOf[l.copy.bufferId] = l.entry;
      this.#counter = Math.max(this.#counter, l.counter + 1);
    }
    if (availPos >= size) {
      availPos -= size;
      availWrap = (availWrap ^ 1) as WrapCounter;
    }
    return { availPos, availWrap, usedPos: settled.usedPos, usedWrap: settled.usedWrap };
  }

  /**
   * The log made consistent for a ring at `state`: every entry not in
   * `held` (the entries of the lists in flight) goes on the free list
   * (ascending, its inflight mark cleared), and the header says so. A log
   * started afresh (`fresh`) reads version 0 until it is whole, so a kill in
   * between starts it afresh again.
   */
  #init(state: PackedRingState, held: Uint8Array, fresh: boolean): void {
    const dv = this.#dv;
    if (fresh) dv.setUint16(INFLIGHT_OFF_VERSION, 0, true);
    let head = this.descNum;
    this.#freeCount = 0;
    for (let e = this.descNum - 1; e >= 0; e--) {
      if (held[e] !== 0) continue;
      dv.setUint8(entryAt(e) + INFLIGHT_PACKED_DESC_OFF_INFLIGHT, 0);
      dv.setUint16(entryAt(e) + INFLIGHT_PACKED_DESC_OFF_NEXT, head, true);
      this.#next[e] = head;
      head = e;
      this.#freeCount++;
    }
    this.#freeHead = head;
    this.#usedPos = state.usedPos;
    this.#usedWrap = state.usedWrap;
    dv.setBigUint64(INFLIGHT_OFF_FEATURES, 0n, true);
    dv.setUint16(INFLIGHT_OFF_DESC_NUM, this.descNum, true);
    for (const off of [INFLIGHT_PACKED_OFF_FREE_HEAD, INFLIGHT_PACKED_OFF_OLD_FREE_HEAD])
      dv.setUint16(off, head, true);
    storeUsedWord(this.#word, state.usedPos, state.usedWrap, state.usedPos, state.usedWrap);
    dv.setUint16(INFLIGHT_OFF_VERSION, INFLIGHT_VERSION, true);
  }

  /** Steps 2b–2c: the head's counter (u64), then the global counter moves on. */
  #writeCounter(h: number): void {
    const c = this.#counter++;
    const at = h + INFLIGHT_PACKED_DESC_OFF_COUNTER;
    this.#dv.setUint32(at, c % U32, true);
    this.#dv.setUint32(at + 4, Math.floor(c / U32), true);
  }

  /** Step 5: descriptor `k` of `list` into entry `e`. */
  #writeDesc(e: number, list: PackedListCopy, k: number): void {
    const dv = this.#dv;
    const at = entryAt(e);
    const addr = list.addr[k]!;
    dv.setUint32(at + INFLIGHT_PACKED_DESC_OFF_ADDR, addr % U32, true);
    dv.setUint32(at + INFLIGHT_PACKED_DESC_OFF_ADDR + 4, Math.floor(addr / U32) % U32, true);
    dv.setUint32(at + INFLIGHT_PACKED_DESC_OFF_LEN, list.len[k]!, true);
    dv.setUint16(at + INFLIGHT_PACKED_DESC_OFF_FLAGS, list.flags[k]!, true);
    dv.setUint16(at + INFLIGHT_PACKED_DESC_OFF_ID, list.id[k]!, true);
  }
}

/**
 * Inflight I/O tracking for one split virtqueue: a log in memory shared
 * with the vhost-user front-end that records which descriptor chains the
 * device took and has not returned, so that a restarted back-end resubmits
 * exactly those, in the order they were taken, and never one that
 * completed. qemu/qemu docs/interop/vhost-user.rst "Inflight I/O tracking"
 * (split virtqueue layout, "When receiving available buffers", "When
 * supplying used buffers", "When reconnecting"); VIRTIO 1.2 §2.7.8 (the used
 * ring whose index the log follows).
 *
 * The front-end writes this memory too: every value read back is checked
 * (version, desc_num, heads, batch lengths) and every walk is bounded. A
 * log found inconsistent is started afresh, and the caller is told, rather
 * than trusted.
 *
 * @module
 */
import {
  INFLIGHT_DESC_OFF_COUNTER,
  INFLIGHT_DESC_OFF_INFLIGHT,
  INFLIGHT_DESC_OFF_NEXT,
  INFLIGHT_DESC_SIZE,
  INFLIGHT_OFF_DESC,
  INFLIGHT_OFF_DESC_NUM,
  INFLIGHT_OFF_FEATURES,
  INFLIGHT_OFF_LAST_BATCH_HEAD,
  INFLIGHT_OFF_USED_IDX,
  INFLIGHT_OFF_VERSION,
  INFLIGHT_VERSION,
  inflightQueueRegionSize,
} from "../spec/vhost-user.ts";
import type { InflightRecovery } from "./inflight-recovery.ts";

export type { InflightRecovery } from "./inflight-recovery.ts";

const U32 = 0x1_0000_0000;

/**
 * The log of one queue, over `region` (exactly this queue's
 * `inflightQueueRegionSize(descNum)` bytes of the shared buffer).
 * Single-threaded: the thread that runs the queue.
 */
export class SplitInflightLog {
  readonly descNum: number;
  readonly #dv: DataView;
  /** Heads used since the last publish (private: the shared `next` links are never read back here). */
  readonly #batch: Uint16Array;
  #batchLen = 0;
  /** The fetch order of the next head taken (JavaScript numbers are exact below 2^53). */
  #counter = 0;
  /** The log cannot cover the ring: nothing is written to it (see {@link recover}). */
  #off = false;

  /** @throws {RangeError} if `region` is not a whole queue region for `descNum` entries. */
  constructor(region: Uint8Array, descNum: number) {
    if (!Number.isInteger(descNum) || descNum < 1 || descNum > 32768)
      throw new RangeError(`inflight desc_num must be in 1..32768, got ${descNum}`);
    if (region.byteLength < inflightQueueRegionSize(descNum))
      throw new RangeError(`inflight region of ${region.byteLength} bytes for ${descNum} entries`);
    this.descNum = descNum;
    this.#dv = new DataView(region.buffer, region.byteOffset, region.byteLength);
    this.#batch = new Uint16Array(descNum);
  }

  /**
   * At a queue start, with `usedIdx` the used ring's idx in guest memory and
   * `queueSize` the ring's size: a fresh log is initialised (null: nothing
   * to resubmit; take `nextAvail` as the front-end set it); a used one is
   * repaired (a batch published but not cleared) and read.
   */
  recover(usedIdx: number, queueSize: number): InflightRecovery | null {
    const dv = this.#dv;
    if (queueSize > this.descNum) {
      // The front-end sized the log (SET_INFLIGHT_FD) smaller than the ring (SET_VRING_NUM): it cannot
      // say which chains are in flight, so the queue runs without it rather than half-tracked.
      this.#off = true;
      const why = `ring of ${queueSize} entries, log of ${this.descNum}`;
      return { resubmit: [], nextAvail: usedIdx, discarded: why, untracked: true };
    }
    if (dv.getUint16(INFLIGHT_OFF_VERSION, true) === 0) {
      this.#wipe(); // a fresh log holds no marks, whatever the front-end left in it
      this.#init(usedIdx);
      return null;
    }
    const problem = this.#check(usedIdx, queueSize);
    if (problem !== null) {
      this.#wipe();
      this.#init(usedIdx);
      return { resubmit: [], nextAvail: usedIdx, discarded: problem };
    }
    this.#clearLastBatch(usedIdx);
    const heads = this.#inflightHeads(queueSize);
    if (heads === null) {
      this.#wipe();
      this.#init(usedIdx);
      return {
        resubmit: [],
        nextAvail: usedIdx,
        discarded: "more chains in flight than the ring holds",
      };
    }
    return { resubmit: heads, nextAvail: (usedIdx + heads.length) & 0xffff };
  }

  /** "When receiving available buffers": the head's fetch order, then its inflight mark. */
  fetched(head: number): void {
    // The front-end sizes the log (SET_INFLIGHT_FD queue_size) apart from the ring (SET_VRING_NUM): a
    // head past the log's entries has no entry and is not tracked (recover reports the mismatch for a used log).
    if (this.#off || head >= this.descNum) return;
    const at = INFLIGHT_OFF_DESC + head * INFLIGHT_DESC_SIZE;
    const c = this.#counter++;
    this.#dv.setUint32(at + INFLIGHT_DESC_OFF_COUNTER, c % U32, true);
    this.#dv.setUint32(at + INFLIGHT_DESC_OFF_COUNTER + 4, Math.floor(c / U32), true);
    this.#dv.setUint8(at + INFLIGHT_DESC_OFF_INFLIGHT, 1);
  }

  /** "When supplying used buffers", steps 1–3: the head joins the batch list. */
  used(head: number): void {
    if (this.#off || head >= this.descNum) return; // no entry for it (see fetched)
    const dv = this.#dv;
    const at = INFLIGHT_OFF_DESC + head * INFLIGHT_DESC_SIZE;
    dv.setUint16(
      at + INFLIGHT_DESC_OFF_NEXT,
      dv.getUint16(INFLIGHT_OFF_LAST_BATCH_HEAD, true),
      true,
    );
    dv.setUint16(INFLIGHT_OFF_LAST_BATCH_HEAD, head, true);
    if (this.#batchLen < this.#batch.length) this.#batch[this.#batchLen++] = head;
  }

  /**
   * Steps 6–7, after the used ring's idx was stored as `usedIdx`: the
   * batch's inflight marks are cleared, then `used_idx` follows.
   */
  published(usedIdx: number): void {
    if (this.#off) return;
    const dv = this.#dv;
    for (let i = 0; i < this.#batchLen; i++)
      dv.setUint8(
        INFLIGHT_OFF_DESC + this.#batch[i]! * INFLIGHT_DESC_SIZE + INFLIGHT_DESC_OFF_INFLIGHT,
        0,
      );
    this.#batchLen = 0;
    dv.setUint16(INFLIGHT_OFF_USED_IDX, usedIdx, true);
  }

  /** A fresh log: version, size, and `used_idx` equal to the ring's (so no batch looks interrupted). */
  #init(usedIdx: number): void {
    const dv = this.#dv;
    dv.setBigUint64(INFLIGHT_OFF_FEATURES, 0n, true);
    dv.setUint16(INFLIGHT_OFF_DESC_NUM, this.descNum, true);
    dv.setUint16(INFLIGHT_OFF_LAST_BATCH_HEAD, 0, true);
    dv.setUint16(INFLIGHT_OFF_USED_IDX, usedIdx, true);
    dv.setUint16(INFLIGHT_OFF_VERSION, INFLIGHT_VERSION, true);
    this.#counter = 0;
  }

  /** Clears every entry (a log that cannot be trusted). */
  #wipe(): void {
    for (let h = 0; h < this.descNum; h++)
      this.#dv.setUint8(INFLIGHT_OFF_DESC + h * INFLIGHT_DESC_SIZE + INFLIGHT_DESC_OFF_INFLIGHT, 0);
  }

  /** Why the header cannot be trusted, or null. */
  #check(usedIdx: number, queueSize: number): string | null {
    const dv = this.#dv;
    const version = dv.getUint16(INFLIGHT_OFF_VERSION, true);
    if (version !== INFLIGHT_VERSION) return `version ${version}`;
    const descNum = dv.getUint16(INFLIGHT_OFF_DESC_NUM, true);
    if (descNum !== this.descNum) return `desc_num ${descNum}, expected ${this.descNum}`;
    const pending = (usedIdx - dv.getUint16(INFLIGHT_OFF_USED_IDX, true)) & 0xffff;
    if (pending > queueSize) return `used_idx ${pending} behind the used ring`;
    if (dv.getUint16(INFLIGHT_OFF_LAST_BATCH_HEAD, true) >= this.descNum)
      return "last_batch_head out of range";
    return null;
  }

  /**
   * "When reconnecting", step 1: a batch published (used.idx moved) whose
   * marks were not cleared: walk it from last_batch_head, bounded by its length.
   */
  #clearLastBatch(usedIdx: number): void {
    const dv = this.#dv;
    let n = (usedIdx - dv.getUint16(INFLIGHT_OFF_USED_IDX, true)) & 0xffff;
    let head = dv.getUint16(INFLIGHT_OFF_LAST_BATCH_HEAD, true);
    while (n-- > 0 && head < this.descNum) {
      const at = INFLIGHT_OFF_DESC + head * INFLIGHT_DESC_SIZE;
      dv.setUint8(at + INFLIGHT_DESC_OFF_INFLIGHT, 0);
      head = dv.getUint16(at + INFLIGHT_DESC_OFF_NEXT, true);
    }
    dv.setUint16(INFLIGHT_OFF_USED_IDX, usedIdx, true);
  }

  /**
   * Step 2: the heads still marked, oldest first; the fetch counter goes on
   * after the newest. Null if more than a ring's worth are marked. Marks on
   * heads outside the ring are dropped (nothing valid can sit there).
   */
  #inflightHeads(queueSize: number): number[] | null {
    const dv = this.#dv;
    const found: { head: number; counter: number }[] = [];
    for (let h = 0; h < this.descNum; h++) {
      const at = INFLIGHT_OFF_DESC + h * INFLIGHT_DESC_SIZE;
      if (dv.getUint8(at + INFLIGHT_DESC_OFF_INFLIGHT) === 0) continue;
      if (h >= queueSize) {
        dv.setUint8(at + INFLIGHT_DESC_OFF_INFLIGHT, 0);
        continue;
      }
      const lo = dv.getUint32(at + INFLIGHT_DESC_OFF_COUNTER, true);
      const hi = dv.getUint32(at + INFLIGHT_DESC_OFF_COUNTER + 4, true) % 0x20_0000; // keep it below 2^53
      found.push({ head: h, counter: hi * U32 + lo });
    }
    if (found.length > queueSize) return null;
    found.sort((a, b) => a.counter - b.counter || a.head - b.head);
    this.#counter = found.length === 0 ? 0 : found[found.length - 1]!.counter + 1;
    return found.map((f) => f.head);
  }
}

/**
 * The chains a device-side split virtqueue has taken and not returned: one
 * pooled chain object per head, the in-flight marks that catch a head made
 * available twice, and — when the transport keeps one — the inflight log
 * that lets a restarted back-end resubmit exactly these chains. VIRTIO 1.2
 * §2.7.6 (a head is a descriptor index, owned by the device until used);
 * qemu/qemu docs/interop/vhost-user.rst "Inflight I/O tracking" (the order
 * of marks: fetched, then used into a batch, then cleared once published).
 *
 * @module
 */
import { ErrorCode, type ErrorCodeValue } from "../errors.ts";
import type { GuestMemory } from "../memory/guest-memory.ts";
import { DescriptorChain } from "./chain.ts";
import type { InflightRecovery } from "./inflight-split.ts";

/**
 * A log shared with the transport's other side that survives the device's
 * thread (vhost-user: the GET_INFLIGHT_FD buffer). {@link SplitInflightLog}
 * is one; the calls come in the order the vhost-user spec lists its steps.
 */
export interface InflightTracker {
  /** At the queue's start: what an earlier device left in flight, or null for a fresh log. */
  recover(usedIdx: number, queueSize: number): InflightRecovery | null;
  /** A head was taken from the available ring (before its request starts). */
  fetched(head: number): void;
  /** A used element for `head` was written (not yet published). */
  used(head: number): void;
  /** used.idx was stored as `usedIdx`: every head used since the last call is done. */
  published(usedIdx: number): void;
}

/** Heads in flight for one queue of `size` entries. Single-threaded: the queue's thread. */
export class InFlightChains {
  /** Chains taken and not returned. */
  count = 0;
  readonly #memory: GuestMemory;
  /** One pooled chain object per head (a head is in flight at most once). */
  readonly #pool: (DescriptorChain | undefined)[];
  /** 1 while the chain with that head is in flight. */
  readonly #marks: Uint8Array;
  readonly #tracker: InflightTracker | null;
  /** Heads an earlier device left in flight, oldest first, and how many were handed out again. */
  #resubmit: readonly number[] = [];
  #resubmitted = 0;

  constructor(memory: GuestMemory, size: number, tracker: InflightTracker | null) {
    this.#memory = memory;
    this.#pool = new Array<DescriptorChain | undefined>(size).fill(undefined);
    this.#marks = new Uint8Array(size);
    this.#tracker = tracker;
  }

  /**
   * Reads the tracker's log at the queue's start (`usedIdx`: the used ring's
   * idx in guest memory); its heads are handed out by {@link nextResubmit}
   * before anything new. Null without a tracker or with a fresh log.
   */
  recover(usedIdx: number, size: number): InflightRecovery | null {
    const r = this.#tracker?.recover(usedIdx, size) ?? null;
    if (r !== null) this.#resubmit = r.resubmit;
    return r;
  }

  /** Chains of the log still to hand out again. */
  get pendingResubmit(): number {
    return this.#resubmit.length - this.#resubmitted;
  }

  /** The next head to hand out again, oldest first, or -1. */
  nextResubmit(): number {
    if (this.#resubmitted >= this.#resubmit.length) return -1;
    return this.#resubmit[this.#resubmitted++]!;
  }

  /**
   * What is wrong with `head`, taken from available ring entry `availIdx`
   * (a descriptor index, not in flight, room for one more chain), as the
   * arguments of the queue's failure, or null.
   */
  checkHead(
    head: number,
    availIdx: number,
  ): [ErrorCodeValue, string, Record<string, number>] | null {
    const size = this.#marks.length;
    // §2.7.6: ring[] entries are descriptor-chain heads, i.e. indexes into a table of `size` entries.
    if (head >= size)
      return [
        ErrorCode.HEAD_OUT_OF_RANGE,
        `avail ring entry ${availIdx} holds head ${head}, queue size is ${size}`,
        { availIdx, head, size },
      ];
    if (this.count >= size)
      return [
        ErrorCode.TOO_MANY_IN_FLIGHT,
        `avail ring entry ${availIdx} (head ${head}) would put more than ${size} chains in flight`,
        { availIdx, head, inFlight: this.count, size },
      ];
    if (this.#marks[head] !== 0)
      return [
        ErrorCode.HEAD_IN_USE,
        `avail ring entry ${availIdx} holds head ${head}, which is already in flight`,
        { availIdx, head },
      ];
    return null;
  }

  /** True while `head` is in flight. */
  isInFlight(head: number): boolean {
    return this.#marks[head] !== 0;
  }

  /** The pooled chain object of `head`, reset to start a walk. */
  chainFor(head: number): DescriptorChain {
    let chain = this.#pool[head];
    if (chain === undefined) {
      chain = new DescriptorChain(this.#memory);
      this.#pool[head] = chain;
    }
    chain.reset(head);
    return chain;
  }

  /** The chain of a head in flight. */
  get(head: number): DescriptorChain {
    return this.#pool[head]!;
  }

  /** `head` was walked and is handed to the device; `again`: it comes from the log, already marked there. */
  take(head: number, again: boolean): void {
    this.#marks[head] = 1;
    this.count++;
    if (!again) this.#tracker?.fetched(head);
  }

  /** `head` is returned; `written`: its used element was written (the log batches it). */
  release(head: number, written: boolean): void {
    this.#marks[head] = 0;
    this.count--;
    if (written) this.#tracker?.used(head);
  }

  /** used.idx was stored as `usedIdx`. */
  published(usedIdx: number): void {
    this.#tracker?.published(usedIdx);
  }
}

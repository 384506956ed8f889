/**
 * A device-side packed virtqueue's part in vhost-user inflight I/O
 * tracking: the log kept for it (if the transport keeps one), the copy of
 * each list's ring descriptors the log records when the list is taken, and
 * the lists an earlier device left in flight, handed out again before
 * anything new. qemu/qemu docs/interop/vhost-user.rst "Inflight I/O
 * tracking", packed virtqueue (the marks are made in the order its steps
 * list them: a list is logged when it is taken, before its request starts;
 * a used list joins the batch when its used descriptor is written; the
 * batch's log steps run just before and just after the ring's flags are
 * stored); VIRTIO 1.2 §2.8.6 (a list's ring descriptors are outstanding
 * until its used descriptor is published).
 *
 * @module
 */
import type { GuestSlice } from "../memory/guest-memory.ts";
import { PVIRTQ_DESC_OFF_FLAGS, PVIRTQ_DESC_SIZE } from "../spec/packed-virtqueue.ts";
import type {
  LoggedList,
  PackedInflightRecovery,
  PackedInflightTracker,
  PackedRingFlags,
} from "./inflight-packed.ts";
import type { DescriptorChain } from "./chain.ts";
import type { PackedBufferIds } from "./packed-buffer-ids.ts";
import type { PackedChainWalker } from "./packed-chain-walk.ts";
import { PackedListCopy } from "./packed-list-copy.ts";
import type { PackedRingState, WrapCounter } from "./packed-ring-state.ts";

/** The descriptor ring's flags, as the log's recovery reads and repairs them. */
export function descRingFlags(desc: GuestSlice): PackedRingFlags {
  return {
    flagsAt: (pos) =>
      // Atomics.load (SeqCst): the flags as the driver last stored them (they are its publication point).
      desc.atomicLoadU16(PVIRTQ_DESC_SIZE * pos + PVIRTQ_DESC_OFF_FLAGS),
    setFlagsAt: (pos, flags) => {
      // Atomics.store (SeqCst): a used mark undone before the queue starts; no later store to this slot can pass it.
      desc.atomicStoreU16(PVIRTQ_DESC_SIZE * pos + PVIRTQ_DESC_OFF_FLAGS, flags);
    },
  };
}

/** Inflight tracking of one packed queue of `size`; every call is a no-op without a log. */
export class PackedTracking {
  /** Where the ring walker copies each list it takes; null without a log. */
  readonly copy: PackedListCopy | null;
  readonly #log: PackedInflightTracker | null;
  #lists: readonly LoggedList[] = [];
  #handedOut = 0;

  constructor(log: PackedInflightTracker | null, size: number) {
    this.#log = log;
    this.copy = log === null ? null : new PackedListCopy(size);
  }

  /**
   * Reads the log at the queue's start (`front`: the state SET_VRING_BASE
   * gave): its lists are handed out by {@link nextResubmit} before
   * anything new; the ring resumes at the result's `ring`. Null without a
   * log or with a fresh one.
   */
  recover(front: PackedRingState, size: number, desc: GuestSlice): PackedInflightRecovery | null {
    const r = this.#log?.recover(front, size, descRingFlags(desc)) ?? null;
    if (r !== null) this.#lists = r.lists;
    return r;
  }

  /** Lists of the log still to hand out again. */
  get pendingResubmit(): number {
    return this.#lists.length - this.#handedOut;
  }

  /**
   * The next list to hand out again, oldest first, walked from the log's
   * copy of its ring descriptors into a chain in flight under its buffer ID
   * (its ring descriptors are outstanding already: the ring resumed past
   * them); null when none is left.
   *
   * @throws {VirtioError} the walk's, for descriptors that are not valid
   *   now (the queue is then broken).
   */
  takeAgain(walker: PackedChainWalker, ids: PackedBufferIds): DescriptorChain | null {
    if (this.#handedOut >= this.#lists.length) return null;
    const again = this.#lists[this.#handedOut++]!;
    const chain = ids.scratch();
    const n = walker.walkCopy(chain, again.copy, again.entry);
    return ids.take(walker.id, n);
  }

  /** The list just walked into {@link copy} was taken with buffer ID `id`. */
  fetched(id: number): void {
    if (this.copy !== null) this.#log!.fetched(this.copy, id);
  }

  /** The used descriptor of `id` was written. */
  used(id: number): void {
    this.#log?.used(id);
  }

  /** The pending used descriptors are about to be marked; the used position will be `pos`/`wrap`. */
  publishing(pos: number, wrap: WrapCounter): void {
    this.#log?.publishing(pos, wrap);
  }

  /** The pending used descriptors are marked. */
  published(): void {
    this.#log?.published();
  }
}

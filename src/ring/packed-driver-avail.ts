/**
 * The driver's side of a packed ring's available descriptors: the next free
 * slot, the Driver Ring Wrap Counter, and the open batch whose first
 * descriptor's flags are stored last. VIRTIO 1.2 §2.8.1 (Driver Ring Wrap
 * Counter), §2.8.21.1 (placing available buffers: "it defers updating the
 * descriptor flags for the first descriptor (and the previous memory
 * barrier) until after the rest of the descriptors have been initialized").
 *
 * Enforced here: §2.8.21.1.1 "The driver MUST perform a suitable memory
 * barrier before the flags update, to ensure the device sees the most
 * up-to-date copy." — {@link PackedAvail.publish} is one SeqCst store after
 * every plain write of the batch.
 *
 * One thread: the driver queue that owns it.
 *
 * @module
 */
import type { GuestSlice } from "../memory/guest-memory.ts";
import { flagsOffset } from "./packed-driver-desc.ts";
import { offWrap } from "./packed-driver-suppression.ts";

/** No batch is open: nothing staged since the last publish. */
const NO_BATCH = -1;

/** Where the next request goes in a packed ring, and what is staged but not yet available. */
export class PackedAvail {
  readonly #desc: GuestSlice;
  readonly #size: number;
  /** Ring slot the next request starts at. */
  #next = 0;
  /** §2.8.1 Driver Ring Wrap Counter, "initialized to 1". */
  #wrap = 1;
  /** Byte offset of the flags of the open batch's first descriptor, or NO_BATCH. */
  #batchFlagsOff = NO_BATCH;
  #batchFlags = 0;
  /** next_off | next_wrap << 15 of the first slot not yet made available. */
  #published = offWrap(0, 1);
  /** Descriptors staged since the last kick decision. */
  #added = 0;

  /** @param desc the Descriptor Ring of a queue of `size`. */
  constructor(desc: GuestSlice, size: number) {
    this.#desc = desc;
    this.#size = size;
  }

  /** Ring slot the next request starts at. */
  get next(): number {
    return this.#next;
  }

  /** The Driver Ring Wrap Counter at {@link next}. */
  get wrap(): number {
    return this.#wrap;
  }

  /** next_off | next_wrap << 15 of the first slot not yet made available. */
  get published(): number {
    return this.#published;
  }

  /**
   * Records a request of `slots` descriptors written from {@link next} on,
   * all but its first flags (`headFlags`): the first request of a batch
   * keeps them back for {@link publish}; a later one's are written now.
   * Then moves {@link next} on (§2.8.1: the counter flips past the last slot).
   */
  staged(slots: number, headFlags: number): void {
    const off = flagsOffset(this.#next);
    if (this.#batchFlagsOff === NO_BATCH) {
      this.#batchFlagsOff = off;
      this.#batchFlags = headFlags;
    } else {
      // Plain write: the device reaches this slot only after the batch's first flags (stored last) are visible.
      this.#desc.writeU16(off, headFlags);
    }
    const next = this.#next + slots;
    if (next >= this.#size) {
      this.#next = next - this.#size;
      this.#wrap ^= 1;
    } else {
      this.#next = next;
    }
    this.#added += slots;
  }

  /** Makes the open batch available (one atomic store); false if none was open. */
  publish(): boolean {
    if (this.#batchFlagsOff === NO_BATCH) return false;
    // §2.8.21.1.1 memory barrier before the flags update. Atomics.store (SeqCst, release): every descriptor and
    // indirect table of the batch, written with plain stores before, is visible before these flags.
    this.#desc.atomicStoreU16(this.#batchFlagsOff, this.#batchFlags);
    this.#batchFlagsOff = NO_BATCH;
    this.#published = offWrap(this.#next, this.#wrap);
    return true;
  }

  /** Descriptors staged since the last call, and the count restarts. */
  takeAdded(): number {
    const added = this.#added;
    this.#added = 0;
    return added;
  }

  /** Back to slot 0, counter 1, nothing staged (the ring was just zeroed). */
  reset(): void {
    this.#next = 0;
    this.#wrap = 1;
    this.#batchFlagsOff = NO_BATCH;
    this.#batchFlags = 0;
    this.#published = offWrap(0, 1);
    this.#added = 0;
  }
}

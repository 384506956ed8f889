/**
 * Used descriptors of a packed virtqueue, written in completion order and
 * made visible in batches. VIRTIO 1.2 §2.8.1 ("To mark a descriptor as used,
 * the device sets the VIRTQ_DESC_F_USED bit in Flags to match the internal
 * Device Ring Wrap Counter. It also sets the VIRTQ_DESC_F_AVAIL bit to match
 * the same value"; the counter flips after the last descriptor of the ring),
 * §2.8.3 (WRITE in a used descriptor: "whether any data has been written by
 * the device into any parts of the buffer"), §2.8.4 (Element Length of a
 * used descriptor), §2.8.6 ("The device only writes out a single used
 * descriptor for the whole list. It then skips forward according to the
 * number of descriptors in the list"), §2.8.9 (mark the first used
 * descriptor of a group after the rest), §2.8.12 ("The device MUST start
 * writing device descriptors into the ring in the order in which they
 * complete"), §2.8.15 ("A device MUST NOT change a descriptor after changing
 * it's the VIRTQ_DESC_F_USED bit in its flags").
 *
 * `add` writes a used descriptor's id and len at once (plain writes: the
 * slot was read by the device and is not the driver's until it is marked
 * used) and keeps its flags; `publish` stores the flags of every pending
 * descriptor, the first one last with `Atomics.store`, so a driver polling
 * the first sees the whole batch at once and never a later one first. Once
 * a descriptor's flags are stored nothing writes that slot again until the
 * driver makes it available anew.
 *
 * @module
 */
import type { GuestSlice } from "../memory/guest-memory.ts";
import {
  PVIRTQ_DESC_OFF_FLAGS,
  PVIRTQ_DESC_OFF_ID,
  PVIRTQ_DESC_OFF_LEN,
  PVIRTQ_DESC_SIZE,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_USED,
} from "../spec/packed-virtqueue.ts";
import { VIRTQ_DESC_F_WRITE } from "../spec/virtqueue.ts";
import { cyclePos, type WrapCounter } from "./packed-ring-state.ts";

/** The pending used descriptors of one ring (at most `size`: each holds a distinct buffer ID). */
export class PackedUsedBatch {
  readonly #desc: GuestSlice;
  readonly #size: number;
  /** Ring position, flags and buffer ID of each pending used descriptor, in completion order. */
  readonly #pos: Uint16Array;
  readonly #flags: Uint16Array;
  readonly #ids: Uint16Array;
  #count = 0;
  /** Ring descriptors the pending used descriptors cover. */
  #slots = 0;
  /** Where the next used descriptor goes (published or not). */
  #nextPos: number;
  #nextWrap: WrapCounter;

  constructor(desc: GuestSlice, size: number, usedPos: number, usedWrap: WrapCounter) {
    this.#desc = desc;
    this.#size = size;
    this.#pos = new Uint16Array(size);
    this.#flags = new Uint16Array(size);
    this.#ids = new Uint16Array(size);
    this.#nextPos = usedPos;
    this.#nextWrap = usedWrap;
  }

  /** Ring position of the next used descriptor. */
  get nextPos(): number {
    return this.#nextPos;
  }

  /** Device Ring Wrap Counter of the next used descriptor. */
  get nextWrap(): WrapCounter {
    return this.#nextWrap;
  }

  /** `nextPos`/`nextWrap` as a position in the cycle of 2·size. */
  get nextCycle(): number {
    return cyclePos(this.#nextPos, this.#nextWrap, this.#size);
  }

  /** Used descriptors added and not yet published. */
  get pending(): number {
    return this.#count;
  }

  /** Buffer ID of the `k`-th pending used descriptor. */
  idAt(k: number): number {
    return this.#ids[k]!;
  }

  /**
   * Writes the used descriptor `{ id, len }` of a list of `ndescs` ring
   * descriptors at the next used position (flags kept for {@link publish})
   * and moves the position on by `ndescs`.
   */
  add(id: number, len: number, ndescs: number): void {
    const k = this.#count++;
    const pos = this.#nextPos;
    const off = PVIRTQ_DESC_SIZE * pos;
    // Plain writes: made visible by the Atomics.store of the batch's first flags in publish.
    this.#desc.writeU32(off + PVIRTQ_DESC_OFF_LEN, len);
    this.#desc.writeU16(off + PVIRTQ_DESC_OFF_ID, id);
    const used = this.#nextWrap === 1 ? VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED : 0;
    this.#pos[k] = pos;
    this.#flags[k] = used | (len > 0 ? VIRTQ_DESC_F_WRITE : 0);
    this.#ids[k] = id;
    this.#slots += ndescs;
    let next = pos + ndescs;
    if (next >= this.#size) {
      next -= this.#size;
      this.#nextWrap = (this.#nextWrap ^ 1) as WrapCounter;
    }
    this.#nextPos = next;
  }

  /**
   * Marks every pending used descriptor used, the first one last; returns
   * the ring descriptors they cover (0 if none was pending).
   */
  publish(): number {
    const n = this.#count;
    if (n === 0) return 0;
    const desc = this.#desc;
    for (let k = n - 1; k >= 1; k--) {
      // Plain writes: the driver reads these slots only after seeing the first one used (the Atomics.store below).
      desc.writeU16(PVIRTQ_DESC_SIZE * this.#pos[k]! + PVIRTQ_DESC_OFF_FLAGS, this.#flags[k]!);
    }
    // Atomics.store (SeqCst): the batch's ids, lens, later flags and the data written into its buffers become
    // visible before the first used descriptor's flags, the one the driver polls.
    desc.atomicStoreU16(PVIRTQ_DESC_SIZE * this.#pos[0]! + PVIRTQ_DESC_OFF_FLAGS, this.#flags[0]!);
    const slots = this.#slots;
    this.#count = 0;
    this.#slots = 0;
    return slots;
  }
}

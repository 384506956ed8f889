/**
 * The virtio-blk driver's state per request queue: its ring (behind
 * {@link DriverRing}), its fixed set of request slots and the operations
 * waiting to be submitted. VIRTIO 1.2 §5.2.6 (each request: a header the
 * device reads and a status byte it writes, here in a slot of the driver's
 * arena), §2.7.13 / §2.8.21 (the driver supplies buffers, one chain or
 * descriptor list per request, on a split or a packed ring).
 *
 * Slots are created once per queue: submitting a request takes one from a
 * free stack and allocates no guest memory.
 *
 * @module
 */
import type { VirtioError } from "../../errors.ts";
import { BLK_DRIVER_SLOT_BYTES } from "./driver-memory.ts";
import { BlkSlot, type BlkOp } from "./driver-request.ts";
import type { DriverRing } from "../../ring/driver-ring.ts";

/** A FIFO of operations (array + head index: no O(n) shift). */
export class OpFifo {
  #items: BlkOp[] = [];
  #head = 0;
  get length(): number {
    return this.#items.length - this.#head;
  }
  peek(): BlkOp | undefined {
    return this.#items[this.#head];
  }
  push(op: BlkOp): void {
    this.#items.push(op);
  }
  shift(): void {
    this.#items[this.#head++] = undefined as unknown as BlkOp;
    if (this.#head === this.#items.length) {
      this.#items.length = 0;
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
  }
  /** Removes and returns everything. */
  drain(): BlkOp[] {
    const all = this.#items.slice(this.#head);
    this.#items = [];
    this.#head = 0;
    return all;
  }
}

/** One request queue's driver state. */
export class QueueState {
  readonly index: number;
  readonly ring: DriverRing<number>;
  readonly slots: BlkSlot[] = [];
  /** Stack of free slot indexes. */
  readonly freeSlots: number[] = [];
  readonly waiting = new OpFifo();
  broken: VirtioError | null = null;
  // Deferred work for the driver's work loop.
  usedPending = false;
  pumpPending = false;
  kickDue = false;
  kickScheduled = false;
  waitingForBounce = false;
  readonly kickTask: () => void;

  constructor(index: number, ring: DriverRing<number>, kickTask: (q: QueueState) => void) {
    this.index = index;
    this.ring = ring;
    this.kickTask = () => kickTask(this);
  }

  /** Every slot free and usable again (after a device reset: the ring no longer holds any). */
  freeAllSlots(): void {
    this.freeSlots.length = 0;
    for (let s = this.slots.length - 1; s >= 0; s--) {
      this.slots[s]!.held = false;
      this.freeSlots.push(s);
    }
  }
}

/**
 * One {@link QueueState} per ring, with `perQueue[i]` slots each, laid out
 * one after another in the slot area at guest address `slotsAddr`.
 */
export function buildQueueStates(
  rings: readonly DriverRing<number>[],
  perQueue: readonly number[],
  slotsAddr: number,
  kickTask: (q: QueueState) => void,
): QueueState[] {
  const queues: QueueState[] = [];
  let slotIndex = 0;
  rings.forEach((ring, i) => {
    const q = new QueueState(i, ring, kickTask);
    for (let s = 0; s < perQueue[i]!; s++, slotIndex++) {
      const off = slotIndex * BLK_DRIVER_SLOT_BYTES;
      q.slots.push(new BlkSlot(s, slotsAddr + off, off));
    }
    for (let s = perQueue[i]! - 1; s >= 0; s--) q.freeSlots.push(s);
    queues.push(q);
  });
  return queues;
}

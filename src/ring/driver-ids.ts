/**
 * A driver's buffer IDs: which are free, and what each outstanding chain
 * holds. VIRTIO 1.2 §2.7.13 (supplying buffers: the driver picks the head),
 * §2.7.14 (receiving used buffers: a used element names the head it
 * completes) — written for the split ring, with nothing of its layout: a
 * packed-ring driver queue manages its buffer IDs the same way.
 *
 * The shape follows Linux's desc_extra[]: a free list threaded through
 * driver-private state (never through guest-visible memory, which the device
 * could scribble over), and per head the chain's length, its tail, its
 * writable bytes, whether it is indirect, and the caller's token. A used
 * element from the (untrusted) device is checked against this record before
 * anything is freed.
 *
 * One thread: the driver queue that owns it.
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../errors.ts";

/** Free IDs and the outstanding chains of one driver queue of `size` IDs. */
export class DriverIds<T> {
  /** Number of IDs (the queue size). */
  readonly size: number;
  /**
   * Next free ID after each free ID (Linux desc_extra[].next). A split ring's
   * descriptor chain follows these links: its descriptors are the IDs taken.
   */
  readonly next: Uint16Array;
  #freeHead = 0;
  #numFree: number;

  // Per-head record of each outstanding chain; headCount 0 = not an outstanding head.
  readonly #headCount: Uint16Array;
  readonly #headTail: Uint16Array;
  readonly #headWritable: Float64Array;
  readonly #headIndirect: Uint8Array;
  readonly #token: (T | undefined)[];
  #outstanding = 0;

  constructor(size: number) {
    this.size = size;
    this.next = new Uint16Array(size);
    this.#headCount = new Uint16Array(size);
    this.#headTail = new Uint16Array(size);
    this.#headWritable = new Float64Array(size);
    this.#headIndirect = new Uint8Array(size);
    this.#token = new Array<T | undefined>(size).fill(undefined);
    this.#numFree = size;
  }

  /** The ID the next chain starts at. */
  get freeHead(): number {
    return this.#freeHead;
  }

  /** Free IDs. */
  get numFree(): number {
    return this.#numFree;
  }

  /** Chains taken and not yet released. */
  get outstanding(): number {
    return this.#outstanding;
  }

  /**
   * Takes `count` IDs off the free list for a chain at `head` (the current
   * free head) and starts its record; returns the chain's tail. The links in
   * {@link next} are left as they were.
   */
  take(head: number, count: number, indirect: boolean): number {
    let tail = head;
    for (let i = 1; i < count; i++) tail = this.next[tail]!;
    this.#freeHead = this.next[tail]!;
    this.#numFree -= count;
    this.#headCount[head] = count;
    this.#headTail[head] = tail;
    this.#headIndirect[head] = indirect ? 1 : 0;
    return tail;
  }

  /** Completes the record of the chain at `head`: its writable bytes and the caller's token. */
  own(head: number, writable: number, token: T): void {
    this.#headWritable[head] = writable;
    this.#token[head] = token;
    this.#outstanding++;
  }

  /** Writable bytes of the outstanding chain at `head` (0 if it is not one). */
  writableOf(head: number): number {
    return this.#headWritable[head]!;
  }

  /**
   * Why a used element (`id`, `len`) from the device cannot be taken, or null
   * if it can. Allocates only for a violation.
   */
  checkUsed(id: number, len: number): VirtioError | null {
    if (id >= this.size)
      return new VirtioError(
        ErrorCode.USED_ID_OUT_OF_RANGE,
        `used id ${id} is out of range (size ${this.size})`,
        { id, size: this.size },
      );
    if (this.#headCount[id] === 0)
      return new VirtioError(
        ErrorCode.USED_ID_NOT_OUTSTANDING,
        `used id ${id} is not an outstanding head`,
        { id },
      );
    const max = this.#headWritable[id]!;
    // §2.7.8.2 "The device MUST NOT write more than len bytes" is the device's side; a len larger than the
    // writable part is a device claim the driver cannot honour: the queue is broken, not clamped.
    if (len > max)
      return new VirtioError(
        ErrorCode.USED_LEN_TOO_LONG,
        `used len ${len} for head ${id} exceeds its ${max} writable bytes`,
        { id, len, max },
      );
    return null;
  }

  /** Returns head's chain to the front of the free list (Linux detach_buf_split) and its token. */
  release(head: number): T {
    const token = this.#token[head] as T;
    const tail = this.#headTail[head]!;
    this.next[tail] = this.#freeHead;
    this.#freeHead = head;
    this.#numFree += this.#headCount[head]!;
    this.#headCount[head] = 0;
    this.#headIndirect[head] = 0;
    this.#headWritable[head] = 0;
    this.#token[head] = undefined;
    this.#outstanding--;
    return token;
  }

  /** The tokens of every outstanding chain, in ascending head order. */
  tokens(): T[] {
    const tokens: T[] = [];
    for (let h = 0; h < this.size; h++) {
      if (this.#headCount[h] !== 0) tokens.push(this.#token[h] as T);
    }
    return tokens;
  }

  /** Every ID free again (in order), no chain outstanding. */
  reset(): void {
    const n = this.size;
    for (let i = 0; i < n; i++) this.next[i] = (i + 1) & 0xffff;
    this.#freeHead = 0;
    this.#numFree = n;
    this.#headCount.fill(0);
    this.#headIndirect.fill(0);
    this.#headWritable.fill(0);
    this.#token.fill(undefined);
    this.#outstanding = 0;
  }
}

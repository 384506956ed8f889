/**
 * A packed-ring driver's Buffer IDs and ring slots. VIRTIO 1.2 §2.8 (a
 * buffer's descriptors are associated with it by a Buffer ID),
 * §2.8.6 (Next Flag: "The driver needs to keep track of the size of the list
 * corresponding to each buffer ID, to be able to skip to where the next used
 * descriptor is written by the device"), §2.8.21 (supplying buffers: "Get
 * the next free buffer id value"), §2.8.22 (receiving used buffers: skip the
 * list's descriptors, free the ID).
 *
 * Buffer IDs are independent of ring positions: one ID per request (the
 * free list and per-ID record of ./driver-ids.ts, one entry taken per
 * chain), and per ID the number of ring slots its list occupies. The ring
 * slots free are counted apart: a request takes as many slots as it has
 * descriptors in the ring (one for an indirect table) and gives them back
 * when its used descriptor is read.
 *
 * The device is untrusted: a used Buffer ID must be in range, outstanding
 * and already made available (published: a staged request's descriptors are
 * in the ring but its batch's first flags are not), and the used length must
 * fit the request's writable bytes. One thread: the driver queue that owns it.
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../errors.ts";
import { DriverIds } from "./driver-ids.ts";

/** Buffer IDs, ring slots and outstanding requests of one packed driver queue. */
export class PackedDriverIds<T> {
  /** Number of Buffer IDs and of ring slots (the queue size). */
  readonly size: number;
  readonly #ids: DriverIds<T>;
  /** Ring slots (descriptors in the ring) of each outstanding ID's list. */
  readonly #slots: Uint16Array;
  /** The batch each ID was staged in; the current batch is not yet made available. */
  readonly #batch: Float64Array;
  #batchSeq = 1;
  #freeSlots: number;

  constructor(size: number) {
    this.size = size;
    this.#ids = new DriverIds<T>(size);
    this.#slots = new Uint16Array(size);
    this.#batch = new Float64Array(size);
    this.#freeSlots = size;
  }

  /** Free ring slots (descriptors). */
  get numFree(): number {
    return this.#freeSlots;
  }

  /** Requests taken and not yet released. */
  get outstanding(): number {
    return this.#ids.outstanding;
  }

  /** The Buffer ID the next request gets (valid while {@link numFree} > 0). */
  get freeId(): number {
    return this.#ids.freeHead;
  }

  /** Ring slots of the outstanding request `id`. */
  slotsOf(id: number): number {
    return this.#slots[id]!;
  }

  /**
   * Takes the free ID {@link freeId} for a request of `slots` ring slots and
   * `writable` device-writable bytes, in the current (unpublished) batch.
   */
  take(slots: number, writable: number, indirect: boolean, token: T): number {
    const ids = this.#ids;
    const id = ids.freeHead;
    ids.take(id, 1, indirect);
    ids.own(id, writable, token);
    this.#slots[id] = slots;
    this.#batch[id] = this.#batchSeq;
    this.#freeSlots -= slots;
    return id;
  }

  /** The requests staged so far are made available: a new batch starts. */
  publishBatch(): void {
    this.#batchSeq++;
  }

  /**
   * The used length to report for a used descriptor (`id`, `len`, WRITE flag
   * `written`), or why it cannot be taken. Allocates only for a violation.
   *
   * §2.8.4: "Element Length is reserved for used descriptors without the
   * VIRTQ_DESC_F_WRITE flag, and is ignored by drivers." For a request with
   * no writable part that is what happens (0 is reported). A request with a
   * writable part takes `len` whatever WRITE says (devices in use write the
   * length without setting WRITE; Linux reads it likewise), and like a
   * length under WRITE it must fit the writable bytes.
   */
  checkUsed(id: number, len: number, written: boolean): number | VirtioError {
    const ids = this.#ids;
    const bad = ids.checkUsed(id, 0);
    if (bad !== null) return bad;
    if (this.#batch[id] === this.#batchSeq)
      return new VirtioError(
        ErrorCode.USED_ID_NOT_OUTSTANDING,
        `used id ${id} names a request not yet made available`,
        { id },
      );
    if (!written && ids.writableOf(id) === 0) return 0;
    return ids.checkUsed(id, len) ?? len;
  }

  /** Frees `id` and its ring slots; returns its token. */
  release(id: number): T {
    this.#freeSlots += this.#slots[id]!;
    this.#slots[id] = 0;
    return this.#ids.release(id);
  }

  /** The tokens of every outstanding request, in ascending ID order. */
  tokens(): T[] {
    return this.#ids.tokens();
  }

  /** Every ID and slot free again, no request outstanding. */
  reset(): void {
    this.#ids.reset();
    this.#slots.fill(0);
    this.#batch.fill(0);
    this.#batchSeq = 1;
    this.#freeSlots = this.size;
  }
}

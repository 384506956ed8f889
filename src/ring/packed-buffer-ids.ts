/**
 * The buffer IDs a device-side packed virtqueue has taken and not yet
 * returned: one pooled chain object per ID, the state of each ID, and how
 * many ring descriptors its list used. VIRTIO 1.2 §2.8 ("The descriptor(s)
 * are associated with a buffer by means of a Buffer ID stored within the
 * descriptor"), §2.8.6 ("The driver needs to keep track of the size of the
 * list corresponding to each buffer ID, to be able to skip to where the next
 * used descriptor is written by the device" — so must the device, to know
 * how far a used descriptor moves the used position).
 *
 * An ID is in flight from its pop to its `addUsed`, then pending until the
 * used descriptor is published: the driver learns it is free only then, so
 * offering it again before is `HEAD_IN_USE`.
 *
 * @module
 */
import { ErrorCode, VirtioError, type ErrorCodeValue } from "../errors.ts";
import type { GuestMemory } from "../memory/guest-memory.ts";
import { DescriptorChain } from "./chain.ts";
import { MAX_CHAIN_BYTES } from "./chain-walk.ts";

/** Nothing outstanding with this ID. */
const FREE = 0;
/** Popped, not yet given to addUsed. */
const IN_FLIGHT = 1;
/** Given to addUsed, its used descriptor not yet published. */
const PENDING = 2;

/** Buffer IDs of one queue of `size`. Single-threaded: the queue's thread. */
export class PackedBufferIds {
  /** IDs in flight (popped, not returned with addUsed). */
  count = 0;
  readonly #memory: GuestMemory;
  readonly #pool: (DescriptorChain | undefined)[];
  readonly #state: Uint8Array;
  readonly #ndescs: Uint16Array;
  /** The chain object the next walk fills; swapped into the pool under the ID the walk finds. */
  #scratch: DescriptorChain;

  constructor(memory: GuestMemory, size: number) {
    this.#memory = memory;
    this.#pool = new Array<DescriptorChain | undefined>(size).fill(undefined);
    this.#state = new Uint8Array(size);
    this.#ndescs = new Uint16Array(size);
    this.#scratch = new DescriptorChain(memory);
  }

  /** A chain object reset for a walk (its ID is not known until the walk ends). */
  scratch(): DescriptorChain {
    this.#scratch.reset(0);
    return this.#scratch;
  }

  /**
   * What is wrong with buffer ID `id` of the list at ring position `pos`, as
   * the arguments of the queue's failure, or null: it must name one of the
   * queue's buffers, one the device does not hold (popped, or used and not
   * yet published).
   */
  check(id: number, pos: number): [ErrorCodeValue, string, Record<string, number>] | null {
    const size = this.#state.length;
    // §2.8: Buffer IDs name the queue's `size` buffers.
    if (id >= size)
      return [
        ErrorCode.HEAD_OUT_OF_RANGE,
        `list at ring position ${pos} has buffer ID ${id}, queue size is ${size}`,
        { pos, head: id, size },
      ];
    if (this.#state[id] !== FREE)
      return [
        ErrorCode.HEAD_IN_USE,
        `list at ring position ${pos} has buffer ID ${id}, which the device still holds`,
        { pos, head: id },
      ];
    return null;
  }

  /**
   * Checks the arguments of the queue's `addUsed(id, len)`.
   *
   * @throws {RangeError} if `id` is not a buffer ID of the queue or `len` is
   *   not a u32 no larger than the chain's writable bytes.
   * @throws {VirtioError} `USED_HEAD_NOT_IN_FLIGHT` if `id` is not in flight.
   */
  checkUsed(id: number, len: number): void {
    const size = this.#state.length;
    if (!Number.isInteger(id) || id < 0 || id >= size)
      throw new RangeError(`used buffer ID ${id} is not an ID of a queue of size ${size}`);
    if (!Number.isInteger(len) || len < 0 || len > MAX_CHAIN_BYTES)
      throw new RangeError(`used length ${len} is not a u32`);
    if (!this.isInFlight(id)) {
      throw new VirtioError(
        ErrorCode.USED_HEAD_NOT_IN_FLIGHT,
        `used buffer ID ${id} is not in flight`,
        { head: id },
      );
    }
    const writable = this.#pool[id]!.writableBytes;
    if (len > writable) {
      throw new RangeError(
        `used length ${len} for buffer ID ${id} exceeds its ${writable} writable bytes`,
      );
    }
  }

  /** True if `id` (< size) is popped and not yet given to addUsed. */
  isInFlight(id: number): boolean {
    return this.#state[id] === IN_FLIGHT;
  }

  /**
   * The scratch chain, just walked, becomes `id`'s chain (in flight, its list
   * `ndescs` ring descriptors long); `id`'s old object becomes the scratch.
   */
  take(id: number, ndescs: number): DescriptorChain {
    const chain = this.#scratch;
    this.#scratch = this.#pool[id] ?? new DescriptorChain(this.#memory);
    this.#pool[id] = chain;
    chain.head = id;
    this.#state[id] = IN_FLIGHT;
    this.#ndescs[id] = ndescs;
    this.count++;
    return chain;
  }

  /** The chain of an ID in flight. */
  get(id: number): DescriptorChain {
    return this.#pool[id]!;
  }

  /** `id`'s used descriptor was written: pending until published; returns its list's ring descriptors. */
  used(id: number): number {
    this.#state[id] = PENDING;
    this.count--;
    return this.#ndescs[id]!;
  }

  /** `id` is returned without a used descriptor (the queue is broken). */
  dropped(id: number): void {
    this.#state[id] = FREE;
    this.count--;
  }

  /** `id`'s used descriptor was published: the driver may offer the ID again. */
  published(id: number): void {
    this.#state[id] = FREE;
  }
}

/**
 * A mock split-virtqueue driver for tests. VIRTIO 1.2 §2.7 (split
 * virtqueues): it plays the driver's part directly on a {@link GuestMemory}
 * so a device (this project's, or yours) can be tested against rings of any
 * shape, valid or malformed.
 *
 * Nothing here validates: descriptors take any `addr`/`len`/`flags`/`next`,
 * `avail.idx` can be set to any value, heads can be out of range, indirect
 * tables can be nested, looped or of any length. That is the point: tests
 * build exactly the ring they want and check what the device does with it.
 * The convenience methods ({@link MockSplitQueue.addChain} and friends)
 * build well-formed chains. Raw descriptors are ./mock-descriptors.ts, test
 * buffer addresses ./mock-allocator.ts.
 *
 * Index fields (`avail.idx`, `avail.flags`, `used_event`) are written with
 * `Atomics` as a real driver publishes them, so the mock also works across
 * threads over a SharedArrayBuffer-backed memory.
 *
 * @example
 * ```ts
 * const mem = GuestMemory.createShared([{ guestPhysAddr: 0, size: 1 << 20 }]);
 * const drv = new MockSplitQueue(mem, 16, 0x1000);
 * mem.write(0x8000, header);
 * drv.addChain([{ addr: 0x8000, len: 16 }, { addr: 0x9000, len: 512, writable: true }]);
 * const q = new DeviceQueue(mem, { ...drv.addresses });
 * const chain = q.popAvail(); // the chain just added
 * q.addUsed(chain!.head, 512);
 * q.publishUsed();
 * drv.popUsed(); // { id: head, len: 512 }
 * ```
 *
 * @module
 */
import type { GuestMemory } from "../memory/guest-memory.ts";
import { vringLayout, type VringAddresses } from "../ring/layout.ts";
import {
  VIRTQ_AVAIL_OFF_FLAGS,
  VIRTQ_AVAIL_OFF_IDX,
  VIRTQ_AVAIL_OFF_RING,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_DESC_SIZE,
  VIRTQ_USED_ELEM_SIZE,
  VIRTQ_USED_OFF_FLAGS,
  VIRTQ_USED_OFF_IDX,
  VIRTQ_USED_OFF_RING,
  availEventOffset,
  availRingSize,
  descTableSize,
  usedEventOffset,
  usedRingSize,
} from "../spec/virtqueue.ts";
import {
  chainEntries,
  readDescAt,
  writeDescAt,
  type MockBuffer,
  type MockDescriptor,
  type MockDescriptorRead,
} from "./mock-descriptors.ts";

export { MockAllocator } from "./mock-allocator.ts";
export {
  chainEntries,
  readDescAt,
  writeDescAt,
  type MockBuffer,
  type MockDescriptor,
  type MockDescriptorRead,
} from "./mock-descriptors.ts";

/** How {@link MockSplitQueue.buildChain} lays out a chain. */
export interface MockChainOptions {
  /**
   * Main-table descriptor indexes to use, in order (default: consecutive
   * indexes from an internal cursor, wrapping at the queue size). The first is
   * the head.
   */
  indices?: readonly number[];
  /**
   * Put buffers in an indirect table at this guest address. The main table
   * then holds the first `directCount` buffers followed by one INDIRECT
   * descriptor pointing to a table of the remaining buffers.
   */
  indirectTable?: number;
  /** With `indirectTable`: how many buffers stay direct before it (default 0). */
  directCount?: number;
  /** Extra flags OR-ed into the INDIRECT descriptor (e.g. VIRTQ_DESC_F_WRITE, which the device must ignore). */
  indirectFlags?: number;
}

/** One used-ring element. */
export interface MockUsedElem {
  id: number;
  len: number;
}

/** Explicit guest addresses of the three ring parts. */
export interface MockRingAddresses {
  descAddr: number;
  availAddr: number;
  usedAddr: number;
}

/** Options for {@link MockSplitQueue}. */
export interface MockSplitQueueOptions {
  /** Used-ring alignment passed to {@link vringLayout} (default 4). */
  usedAlign?: number;
  /**
   * Start `avail.idx` (and the mock's used cursor) at this value instead of
   * 0, e.g. near 65535 to test wraparound; pass the same as the device's
   * `nextAvail`. Written to guest memory. Default 0.
   */
  startIdx?: number;
  /** Zero the ring parts first (default true). */
  clear?: boolean;
}

/**
 * The driver side of one split virtqueue, without any validation, for
 * tests. See the module documentation.
 */
export class MockSplitQueue {
  readonly memory: GuestMemory;
  readonly size: number;
  readonly descAddr: number;
  readonly availAddr: number;
  readonly usedAddr: number;
  #descCursor = 0;
  #lastUsed: number;

  /**
   * Places a ring of `size` entries: at `base` (16-aligned) with
   * {@link vringLayout}, or at explicit part addresses (any values, for
   * rings split across regions or deliberately misplaced).
   *
   * @throws {RangeError} for a bad size/base, or MEM_OUT_OF_RANGE if a part
   *   does not fit in memory (when cleared).
   */
  constructor(
    memory: GuestMemory,
    size: number,
    base: number | MockRingAddresses,
    options: MockSplitQueueOptions = {},
  ) {
    this.memory = memory;
    this.size = size;
    if (typeof base === "number") {
      const l = vringLayout(size, base, options.usedAlign);
      this.descAddr = l.descAddr;
      this.availAddr = l.availAddr;
      this.usedAddr = l.usedAddr;
    } else {
      if (!Number.isInteger(size) || size < 1 || size > 0x10000)
        throw new RangeError(`mock queue size ${size} must be an integer in 1..65536`);
      this.descAddr = base.descAddr;
      this.availAddr = base.availAddr;
      this.usedAddr = base.usedAddr;
    }
    if (options.clear ?? true) {
      memory.fill(this.descAddr, descTableSize(size), 0);
      memory.fill(this.availAddr, availRingSize(size), 0);
      memory.fill(this.usedAddr, usedRingSize(size), 0);
    }
    const start = options.startIdx ?? 0;
    this.#lastUsed = start & 0xffff;
    if (start !== 0) {
      this.availIdx = start;
      this.usedIdx = start;
    }
  }

  /** The ring addresses, ready to spread into a device queue configuration. */
  get addresses(): VringAddresses {
    return {
      size: this.size,
      descAddr: this.descAddr,
      availAddr: this.availAddr,
      usedAddr: this.usedAddr,
    };
  }

  // ---- descriptor tables ------------------------------------------------

  /** Writes descriptor `index` of the main table (any values; `index` must be < size). */
  writeDesc(index: number, desc: MockDescriptor): void {
    this.#checkIndex(index);
    writeDescAt(this.memory, this.descAddr + VIRTQ_DESC_SIZE * index, desc);
  }

  /** Reads descriptor `index` of the main table. */
  readDesc(index: number): MockDescriptorRead {
    this.#checkIndex(index);
    return readDescAt(this.memory, this.descAddr + VIRTQ_DESC_SIZE * index);
  }

  /** Writes `entries` as a descriptor table at `tableAddr` (an indirect table: any address, any contents). */
  writeTable(tableAddr: number, entries: readonly MockDescriptor[]): void {
    entries.forEach((d, i) => writeDescAt(this.memory, tableAddr + VIRTQ_DESC_SIZE * i, d));
  }

  /** Reads entry `index` of a descriptor table at `tableAddr`. */
  readTableDesc(tableAddr: number, index: number): MockDescriptorRead {
    return readDescAt(this.memory, tableAddr + VIRTQ_DESC_SIZE * index);
  }

  /**
   * Builds a well-formed chain from `buffers` (readable ones should come
   * first; the order is kept as given) and returns its head. Does not
   * publish it: see {@link addChain} / {@link publish}.
   */
  buildChain(buffers: readonly MockBuffer[], options: MockChainOptions = {}): number {
    const { indirectTable } = options;
    const direct =
      indirectTable === undefined ? buffers : buffers.slice(0, options.directCount ?? 0);
    const slots = direct.length + (indirectTable === undefined ? 0 : 1);
    if (slots === 0) throw new RangeError("a direct chain needs at least one buffer");
    const idx = this.#takeIndices(slots, options.indices);
    direct.forEach((b, k) => {
      const last = k === slots - 1;
      this.writeDesc(idx[k]!, {
        addr: b.addr,
        len: b.len,
        flags: (b.writable ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT),
        next: last ? 0 : idx[k + 1]!,
      });
    });
    if (indirectTable !== undefined) {
      const rest = buffers.slice(direct.length);
      if (rest.length === 0) throw new RangeError("an indirect table needs at least one buffer");
      this.writeTable(indirectTable, chainEntries(rest));
      this.writeDesc(idx[slots - 1]!, {
        addr: indirectTable,
        len: VIRTQ_DESC_SIZE * rest.length,
        flags: VIRTQ_DESC_F_INDIRECT | (options.indirectFlags ?? 0),
      });
    }
    return idx[0]!;
  }

  /** Builds a chain ({@link buildChain}) and publishes its head; returns the head. */
  addChain(buffers: readonly MockBuffer[], options: MockChainOptions = {}): number {
    const head = this.buildChain(buffers, options);
    this.publish(head);
    return head;
  }

  // ---- available ring ---------------------------------------------------

  /** Current `avail.idx`. */
  get availIdx(): number {
    // Atomics.load (SeqCst): the driver's own index, read back.
    return this.memory.atomicLoadU16(this.availAddr + VIRTQ_AVAIL_OFF_IDX);
  }

  /** Sets `avail.idx` to any value (mod 2^16), e.g. a jump. */
  set availIdx(v: number) {
    // Atomics.store (SeqCst): ring entries and descriptors written before become visible first.
    this.memory.atomicStoreU16(this.availAddr + VIRTQ_AVAIL_OFF_IDX, v & 0xffff);
  }

  /** Writes `avail.ring[pos mod size] = head` (any head value), without touching `avail.idx`. */
  setAvailEntry(pos: number, head: number): void {
    this.memory.writeU16(
      this.availAddr + VIRTQ_AVAIL_OFF_RING + 2 * ((pos & 0xffff) % this.size),
      head,
    );
  }

  /** Reads `avail.ring[pos mod size]`. */
  availEntry(pos: number): number {
    return this.memory.readU16(
      this.availAddr + VIRTQ_AVAIL_OFF_RING + 2 * ((pos & 0xffff) % this.size),
    );
  }

  /** Puts `heads` on the available ring after `avail.idx` and then advances `avail.idx` once. */
  publish(...heads: number[]): void {
    const idx = this.availIdx;
    heads.forEach((h, k) => this.setAvailEntry(idx + k, h));
    this.availIdx = idx + heads.length;
  }

  /** `avail.flags` (VIRTQ_AVAIL_F_NO_INTERRUPT). */
  get availFlags(): number {
    return this.memory.atomicLoadU16(this.availAddr + VIRTQ_AVAIL_OFF_FLAGS);
  }
  set availFlags(v: number) {
    // Atomics.store (SeqCst): pairs with the device's load after its used.idx store.
    this.memory.atomicStoreU16(this.availAddr + VIRTQ_AVAIL_OFF_FLAGS, v & 0xffff);
  }

  /** `used_event` (`avail.ring[size]`). */
  get usedEvent(): number {
    return this.memory.atomicLoadU16(this.availAddr + usedEventOffset(this.size));
  }
  set usedEvent(v: number) {
    // Atomics.store (SeqCst): pairs with the device's load after its used.idx store.
    this.memory.atomicStoreU16(this.availAddr + usedEventOffset(this.size), v & 0xffff);
  }

  // ---- used ring --------------------------------------------------------

  /** Current `used.idx`. */
  get usedIdx(): number {
    // Atomics.load (SeqCst): used elements read after this see what the device wrote before publishing.
    return this.memory.atomicLoadU16(this.usedAddr + VIRTQ_USED_OFF_IDX);
  }
  /** Sets `used.idx` (e.g. to resume a ring at a given index); not something a driver does. */
  set usedIdx(v: number) {
    this.memory.atomicStoreU16(this.usedAddr + VIRTQ_USED_OFF_IDX, v & 0xffff);
  }

  /** `used.flags` (VIRTQ_USED_F_NO_NOTIFY). */
  get usedFlags(): number {
    return this.memory.atomicLoadU16(this.usedAddr + VIRTQ_USED_OFF_FLAGS);
  }

  /** `avail_event` (`used.ring[size]`). */
  get availEvent(): number {
    return this.memory.atomicLoadU16(this.usedAddr + availEventOffset(this.size));
  }

  /** Reads `used.ring[pos mod size]`. */
  usedElem(pos: number): MockUsedElem {
    const off =
      this.usedAddr + VIRTQ_USED_OFF_RING + VIRTQ_USED_ELEM_SIZE * ((pos & 0xffff) % this.size);
    return { id: this.memory.readU32(off), len: this.memory.readU32(off + 4) };
  }

  /** The driver's used cursor (next used element {@link popUsed} returns). */
  get lastUsed(): number {
    return this.#lastUsed;
  }

  /** Returns the next published used element, or null if the device published none. */
  popUsed(): MockUsedElem | null {
    if (this.usedIdx === this.#lastUsed) return null;
    const e = this.usedElem(this.#lastUsed);
    this.#lastUsed = (this.#lastUsed + 1) & 0xffff;
    return e;
  }

  /** Every published used element not yet popped. Bounded by 65536 elements. */
  drainUsed(): MockUsedElem[] {
    const out: MockUsedElem[] = [];
    for (let e = this.popUsed(); e !== null && out.length < 0x10000; e = this.popUsed())
      out.push(e);
    return out;
  }

  #checkIndex(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.size)
      throw new RangeError(`descriptor index ${index} is outside a table of ${this.size}`);
  }

  #takeIndices(n: number, given: readonly number[] | undefined): readonly number[] {
    if (given !== undefined) {
      if (given.length !== n)
        throw new RangeError(`chain needs ${n} descriptor indexes, got ${given.length}`);
      return given;
    }
    if (n > this.size)
      throw new RangeError(`chain of ${n} descriptors exceeds queue size ${this.size}`);
    const out: number[] = [];
    for (let k = 0; k < n; k++) out.push((this.#descCursor + k) % this.size);
    this.#descCursor = (this.#descCursor + n) % this.size;
    return out;
  }
}

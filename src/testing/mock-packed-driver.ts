/**
 * A mock packed-virtqueue driver for tests. VIRTIO 1.2 §2.8 (packed
 * virtqueues): it plays the driver's part directly on a {@link GuestMemory}
 * so a device (this project's, or yours) can be tested against packed rings
 * of any shape, valid or malformed. §2.8.1 (AVAIL/USED bits and the wrap
 * counters), §2.8.6 / §2.8.7 (lists and indirect tables), §2.8.10 / §2.8.14
 * (the Event Suppression structures), §2.8.21 / §2.8.22 (supplying buffers,
 * receiving used ones).
 *
 * Nothing here validates: descriptors take any addr/len/id/flags, Buffer IDs
 * can repeat or be out of range, the AVAIL/USED bits can be written for the
 * wrong wrap counter, lists can run on past their last buffer, indirect
 * tables can hold INDIRECT entries, and the cursors can be moved anywhere.
 * That is the point: tests build exactly the ring they want and check what
 * the device does with it. The convenience methods
 * ({@link MockPackedQueue.addChain} and friends) build well-formed requests
 * unless told otherwise: consecutive slots from the mock's cursor (wrapping
 * at the ring end, its Driver Ring Wrap Counter flipping), the first
 * descriptor's flags stored last (§2.8.21.1) with `Atomics`, so the mock
 * also works across threads over a SharedArrayBuffer-backed memory. Raw
 * descriptors and event structures are ./mock-packed-descriptors.ts.
 *
 * @example
 * ```ts
 * const mem = GuestMemory.createShared([{ guestPhysAddr: 0, size: 1 << 20 }]);
 * const drv = new MockPackedQueue(mem, 10, 0x1000);
 * const id = drv.addChain([{ addr: 0x8000, len: 16 }, { addr: 0x9000, len: 512, writable: true }]);
 * // ... a packed device queue over drv.addresses uses it ...
 * drv.popUsed(); // { id, len, flags }
 * ```
 *
 * @module
 */
import type { GuestMemory } from "../memory/guest-memory.ts";
import { packedRingLayout, type PackedRingAddresses } from "../ring/packed-layout.ts";
import {
  PVIRTQ_DESC_OFF_FLAGS,
  PVIRTQ_DESC_SIZE,
  PVIRTQ_EVENT_SIZE,
  RING_EVENT_WRAP_SHIFT,
  isPackedDescUsed,
  packedDescRingSize,
} from "../spec/packed-virtqueue.ts";
import type { MockBuffer } from "./mock-descriptors.ts";
import {
  packedTableEntries,
  readEventAt,
  readPackedDescAt,
  ringDescriptor,
  writeEventAt,
  writePackedBodyAt,
  writePackedDescAt,
  type MockPackedChainOptions,
  type MockPackedDescriptor,
  type MockPackedDescriptorRead,
  type MockPackedEvent,
  type MockPackedUsed,
} from "./mock-packed-descriptors.ts";

export {
  mockAvailBits,
  mockUsedBits,
  packedTableEntries,
  readEventAt,
  readPackedDescAt,
  writeEventAt,
  writePackedDescAt,
  type MockPackedChainOptions,
  type MockPackedDescriptor,
  type MockPackedDescriptorRead,
  type MockPackedEvent,
  type MockPackedUsed,
} from "./mock-packed-descriptors.ts";

/** A request written into the ring by {@link MockPackedQueue.buildChain}. */
export interface MockPackedChain {
  /** Buffer ID (in the last descriptor). */
  readonly id: number;
  /** Ring slot of the first descriptor. */
  readonly first: number;
  /** Ring slots it occupies. */
  readonly count: number;
  /** The flags the first descriptor gets when published. */
  readonly headFlags: number;
}

/** Explicit guest addresses of the three parts. */
export interface MockPackedRingAddresses {
  descAddr: number;
  driverAddr: number;
  deviceAddr: number;
}

/**
 * The driver side of one packed virtqueue, without any validation, for
 * tests. See the module documentation.
 */
export class MockPackedQueue {
  readonly memory: GuestMemory;
  readonly size: number;
  readonly descAddr: number;
  readonly driverAddr: number;
  readonly deviceAddr: number;
  #nextAvail = 0;
  #availWrap = 1;
  #lastUsed = 0;
  #usedWrap = 1;
  /** Buffer IDs handed out and not yet seen used, with the slots each request occupies. */
  readonly #outstanding = new Map<number, number>();

  /**
   * Places a ring of `size` entries: at `base` (16-aligned) with
   * {@link packedRingLayout}, or at explicit part addresses (any values, for
   * deliberately misplaced rings). Zeroes the three parts unless
   * `clear: false`.
   *
   * @throws {RangeError} for a bad size/base, or MEM_OUT_OF_RANGE if a part
   *   does not fit in memory (when cleared).
   */
  constructor(
    memory: GuestMemory,
    size: number,
    base: number | MockPackedRingAddresses,
    options: { clear?: boolean } = {},
  ) {
    this.memory = memory;
    this.size = size;
    if (!Number.isInteger(size) || size < 1 || size > 0x8000)
      throw new RangeError(`mock packed queue size ${size} must be an integer in 1..32768`);
    const a = typeof base === "number" ? packedRingLayout(size, base) : base;
    this.descAddr = a.descAddr;
    this.driverAddr = a.driverAddr;
    this.deviceAddr = a.deviceAddr;
    if (options.clear ?? true) {
      memory.fill(this.descAddr, packedDescRingSize(size), 0);
      memory.fill(this.driverAddr, PVIRTQ_EVENT_SIZE, 0);
      memory.fill(this.deviceAddr, PVIRTQ_EVENT_SIZE, 0);
    }
  }

  /** The ring addresses, ready to spread into a queue configuration. */
  get addresses(): PackedRingAddresses {
    const { size, descAddr, driverAddr, deviceAddr } = this;
    return { size, descAddr, driverAddr, deviceAddr };
  }

  // ---- raw descriptors --------------------------------------------------

  /** Writes ring slot `index` (any values, flags included, plain stores). */
  writeDesc(index: number, d: MockPackedDescriptor): void {
    writePackedDescAt(this.memory, this.#slotAddr(index), d);
  }

  /** Reads ring slot `index`. */
  readDesc(index: number): MockPackedDescriptorRead {
    return readPackedDescAt(this.memory, this.#slotAddr(index));
  }

  /** Stores the flags of ring slot `index` alone with `Atomics` (how a driver makes a descriptor available). */
  setFlags(index: number, flags: number): void {
    // Atomics.store (SeqCst, release): everything written before (descriptors, tables) is visible first.
    this.memory.atomicStoreU16(this.#slotAddr(index) + PVIRTQ_DESC_OFF_FLAGS, flags & 0xffff);
  }

  /** Writes `entries` as an indirect table at `tableAddr` (any address, any contents). */
  writeTable(tableAddr: number, entries: readonly MockPackedDescriptor[]): void {
    entries.forEach((d, i) => writePackedDescAt(this.memory, tableAddr + PVIRTQ_DESC_SIZE * i, d));
  }

  /** Reads entry `index` of an indirect table at `tableAddr`. */
  readTableDesc(tableAddr: number, index: number): MockPackedDescriptorRead {
    return readPackedDescAt(this.memory, tableAddr + PVIRTQ_DESC_SIZE * index);
  }

  // ---- cursors ----------------------------------------------------------

  /** Ring slot the next request starts at. */
  get nextAvail(): number {
    return this.#nextAvail;
  }

  /** The mock's Driver Ring Wrap Counter (1 at first). */
  get availWrap(): number {
    return this.#availWrap;
  }

  /** Moves the available cursor anywhere (e.g. to resume a ring, or to skip slots). */
  seekAvail(pos: number, wrap: number): void {
    this.#checkIndex(pos);
    this.#nextAvail = pos;
    this.#availWrap = wrap & 1;
  }

  /** Ring slot where the next used descriptor is expected. */
  get lastUsed(): number {
    return this.#lastUsed;
  }

  /** The wrap counter the next used descriptor is expected with (1 at first). */
  get usedWrap(): number {
    return this.#usedWrap;
  }

  /** Moves the used cursor anywhere. */
  seekUsed(pos: number, wrap: number): void {
    this.#checkIndex(pos);
    this.#lastUsed = pos;
    this.#usedWrap = wrap & 1;
  }

  /** next_off | next_wrap << 15: the next slot not yet made available (§2.8.16), as a notification carries it. */
  get notificationData(): number {
    return this.#nextAvail | (this.#availWrap << RING_EVENT_WRAP_SHIFT);
  }

  /** Buffer IDs handed out (or named) and not yet seen used. */
  get outstandingIds(): number[] {
    return [...this.#outstanding.keys()].sort((a, b) => a - b);
  }

  // ---- supplying buffers ------------------------------------------------

  /**
   * Writes a request from the cursor on (readable buffers should come first;
   * the order is kept as given) and advances the cursor, but leaves the
   * first descriptor's flags as they were: {@link publish} stores them. A
   * list of more than `size` slots overwrites its own first slots.
   *
   * @throws {RangeError} for a request with no ring descriptor, or when no
   *   Buffer ID is free and none was given.
   */
  buildChain(
    buffers: readonly MockBuffer[],
    options: MockPackedChainOptions = {},
  ): MockPackedChain {
    const { indirectTable } = options;
    const direct =
      indirectTable === undefined ? buffers : buffers.slice(0, options.directCount ?? 0);
    const count = direct.length + (indirectTable === undefined ? 0 : 1);
    if (count === 0) throw new RangeError("a request needs at least one ring descriptor");
    const id = options.id ?? this.#freeId();
    if (indirectTable !== undefined) {
      const rest = buffers.slice(direct.length);
      this.writeTable(indirectTable, packedTableEntries(rest, options.tableFlags ?? 0));
    }
    const first = this.#nextAvail;
    let wrap = options.wrap ?? this.#availWrap;
    let headFlags = 0;
    for (let k = 0; k < count; k++) {
      const last = k === count - 1;
      const d = ringDescriptor(buffers, direct.length, k, last, id, wrap, options);
      writePackedBodyAt(this.memory, this.#slotAddr(this.#nextAvail), d);
      if (k === 0) headFlags = d.flags!;
      else this.memory.writeU16(this.#slotAddr(this.#nextAvail) + PVIRTQ_DESC_OFF_FLAGS, d.flags!);
      if (this.#step()) wrap ^= 1;
    }
    this.#outstanding.set(id, count);
    return { id, first, count, headFlags };
  }

  /**
   * Makes built requests available: stores each one's first flags with
   * `Atomics`, the first request's last, so a batch appears at once.
   */
  publish(...chains: readonly MockPackedChain[]): void {
    for (let i = chains.length - 1; i >= 0; i--)
      this.setFlags(chains[i]!.first, chains[i]!.headFlags);
  }

  /** Builds a request ({@link buildChain}) and publishes it; returns its Buffer ID. */
  addChain(buffers: readonly MockBuffer[], options: MockPackedChainOptions = {}): number {
    const c = this.buildChain(buffers, options);
    this.publish(c);
    return c.id;
  }

  // ---- used descriptors -------------------------------------------------

  /** True if slot `index` holds a used descriptor for wrap counter `wrap` (default: the used cursor's). */
  isUsed(index: number, wrap = this.#usedWrap): boolean {
    // Atomics.load (SeqCst, acquire): the device writes id and len before the flags.
    return isPackedDescUsed(
      this.memory.atomicLoadU16(this.#slotAddr(index) + PVIRTQ_DESC_OFF_FLAGS),
      wrap,
    );
  }

  /** Reads slot `index` as a used descriptor (whatever it holds). */
  usedDesc(index: number): MockPackedUsed {
    const d = this.readDesc(index);
    return { id: d.id, len: d.len, flags: d.flags };
  }

  /**
   * Returns the used descriptor at the used cursor, or null if the device has
   * not marked it used; then moves the cursor past the request's slots (1 for
   * an ID the mock does not know) and frees the ID.
   */
  popUsed(): MockPackedUsed | null {
    if (!this.isUsed(this.#lastUsed)) return null;
    const u = this.usedDesc(this.#lastUsed);
    const count = this.#outstanding.get(u.id) ?? 1;
    this.#outstanding.delete(u.id);
    for (let k = 0; k < count; k++) {
      if (++this.#lastUsed === this.size) {
        this.#lastUsed = 0;
        this.#usedWrap ^= 1;
      }
    }
    return u;
  }

  /** Every used descriptor not yet popped. Bounded by the queue size. */
  drainUsed(): MockPackedUsed[] {
    const out: MockPackedUsed[] = [];
    for (let u = this.popUsed(); u !== null; u = this.popUsed()) {
      out.push(u);
      if (out.length === this.size) break;
    }
    return out;
  }

  // ---- event suppression ------------------------------------------------

  /** The Device Event Suppression structure (Device Area), as the device last wrote it. */
  get deviceEvent(): MockPackedEvent {
    return readEventAt(this.memory, this.deviceAddr);
  }

  /** The Driver Event Suppression structure (Driver Area), as last set. */
  get driverEvent(): MockPackedEvent {
    return readEventAt(this.memory, this.driverAddr);
  }

  /**
   * Sets the Driver Event Suppression structure: any `flags` (RING_EVENT_FLAGS_*,
   * reserved values too), event offset `off` and wrap counter `wrap`.
   */
  setDriverEvent(flags: number, off = 0, wrap = 0): void {
    writeEventAt(this.memory, this.driverAddr, flags, off, wrap);
  }

  // ---- internals ----

  /** Moves the available cursor one slot on; true if it wrapped to slot 0 (the counter flipped). */
  #step(): boolean {
    if (++this.#nextAvail < this.size) return false;
    this.#nextAvail = 0;
    this.#availWrap ^= 1;
    return true;
  }

  #freeId(): number {
    for (let id = 0; id < this.size; id++) if (!this.#outstanding.has(id)) return id;
    throw new RangeError(`no free buffer ID among ${this.size}`);
  }

  #slotAddr(index: number): number {
    this.#checkIndex(index);
    return this.descAddr + PVIRTQ_DESC_SIZE * index;
  }

  #checkIndex(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.size)
      throw new RangeError(`ring slot ${index} is outside a ring of ${this.size}`);
  }
}

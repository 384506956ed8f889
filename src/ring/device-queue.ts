/**
 * The device side of a split virtqueue. VIRTIO 1.2 §2.7: descriptor table
 * §2.7.5, indirect descriptors §2.7.5.3, available ring §2.7.6, used ring
 * §2.7.8, notification suppression §2.7.7 (used buffer notifications) and
 * §2.7.10 (available buffer notifications).
 *
 * Everything the driver wrote is untrusted (docs/conformance.md "Ring
 * violations"): every guest-written field is read once, validated, and the
 * copy is used; every loop is bounded by the queue size or a table length; a
 * violation makes the queue *broken* (sticky until a new queue is configured),
 * calls `onBroken` once and throws a {@link VirtioError} with a stable code.
 * While broken the queue reads and writes nothing.
 *
 * Decisions where the spec leaves room (see docs/conformance.md):
 * - Chain length: at most `size` buffer descriptors per chain, direct and
 *   indirect entries counted together (§2.7.5.3.1 "A driver MUST NOT create a
 *   descriptor chain longer than the Queue Size of the device"); the
 *   descriptor that points to an indirect table is not a buffer and is not
 *   counted. Inside an indirect table, also at most `table length` entries
 *   (an in-table loop is caught early). Both surface as `DESC_LOOP`. A device
 *   that advertises a segment limit (virtio-blk `seg_max`) must keep it at or
 *   below `size - 2`, as QEMU does.
 * - INDIRECT when VIRTIO_F_INDIRECT_DESC was not negotiated: `INDIRECT_TABLE`.
 * - Indirect tables are read in place through a cached whole-region
 *   {@link GuestSlice} (no allocation, no copy: each entry is read once into
 *   locals, so a copy would buy no extra consistency). A table that straddles
 *   two contiguous regions (legal, rare) is copied once into a private buffer.
 * - Zero-length buffers are accepted whatever their address (nothing is ever
 *   accessed through them) and are not recorded as chain segments.
 * - `disableNotification` with EVENT_IDX is a no-op: `avail_event` is only
 *   moved by {@link DeviceQueue.enableNotification}, so the driver kicks at
 *   most once more after the device stopped re-arming. The device must follow
 *   the loop `disable → drain → if (enable()) drain again` before it waits.
 * - `addUsed` for a head that is not in flight: VirtioError
 *   `USED_HEAD_NOT_IN_FLIGHT`, nothing written, the queue is *not* broken
 *   (it is the device program's mistake, not the driver's).
 *
 * @module
 */
import { ErrorCode, VirtioError, type ErrorCodeValue } from "../errors.ts";
import { GuestMemory, type GuestSlice } from "../memory/guest-memory.ts";
import {
  VIRTQ_AVAIL_ALIGN,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_AVAIL_OFF_FLAGS,
  VIRTQ_AVAIL_OFF_IDX,
  VIRTQ_AVAIL_OFF_RING,
  VIRTQ_DESC_ALIGN,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_DESC_OFF_FLAGS,
  VIRTQ_DESC_OFF_LEN,
  VIRTQ_DESC_OFF_NEXT,
  VIRTQ_DESC_SIZE,
  VIRTQ_USED_ALIGN,
  VIRTQ_USED_ELEM_SIZE,
  VIRTQ_USED_F_NO_NOTIFY,
  VIRTQ_USED_OFF_FLAGS,
  VIRTQ_USED_OFF_IDX,
  VIRTQ_USED_OFF_RING,
  availEventOffset,
  availRingSize,
  descTableSize,
  isValidQueueSize,
  usedEventOffset,
  usedRingSize,
  vringNeedEvent,
} from "../spec/virtqueue.ts";
import { DescriptorChain } from "./chain.ts";

/** Default cap on the entries of one indirect table (the largest a le32 length / 16 allows in a u16-indexed table). */
export const DEFAULT_MAX_INDIRECT_ENTRIES = 65535;

/** The largest total chain length in bytes (§2.7.5.2: "Drivers MUST NOT add a descriptor chain longer than 2^32 bytes in total"). */
const MAX_CHAIN_BYTES = 0xffff_ffff;

/** Configuration of one device-side queue (what the driver, or a vhost-user frontend, set up). */
export interface DeviceQueueConfig {
  /** Queue size: a power of two in 1..32768. */
  size: number;
  /** Guest-physical address of the descriptor table (16-aligned, 16·size bytes). */
  descAddr: number;
  /** Guest-physical address of the available ring (2-aligned, 6 + 2·size bytes). */
  availAddr: number;
  /** Guest-physical address of the used ring (4-aligned, 6 + 8·size bytes). */
  usedAddr: number;
  /** VIRTIO_F_EVENT_IDX was negotiated. */
  eventIdx?: boolean;
  /** VIRTIO_F_INDIRECT_DESC was negotiated. */
  indirect?: boolean;
  /** Largest accepted indirect table, in entries (1..65535, default {@link DEFAULT_MAX_INDIRECT_ENTRIES}). */
  maxIndirectEntries?: number;
  /** Initial last_avail_idx (e.g. vhost-user SET_VRING_BASE), 0..65535; default 0. */
  nextAvail?: number;
  /** Start `nextUsed` from `used.idx` in guest memory (vhost-user reconnect) instead of 0. */
  usedIdxFromMemory?: boolean;
  /** Called once, when the queue becomes broken. */
  onBroken?: (err: VirtioError) => void;
}

const configError = (msg: string, details: Record<string, number>): VirtioError =>
  new VirtioError(ErrorCode.QUEUE_CONFIG, msg, details);

const hex = (v: number): string => `0x${v.toString(16)}`;

/**
 * The device side of one split virtqueue: pops validated descriptor chains
 * from the available ring, returns them on the used ring, and answers the
 * notification-suppression questions. It never delivers notifications
 * itself.
 *
 * Typical use (one thread, the queue's only consumer):
 * ```ts
 * q.disableNotification();
 * for (;;) {
 *   for (let c = q.popAvail(); c !== null; c = q.popAvail()) handle(c); // later: q.addUsed(c.head, n)
 *   if (!q.enableNotification()) break; // nothing slipped in: wait for the next kick
 *   q.disableNotification();
 * }
 * q.publishUsed();
 * if (q.needsNotification()) call();
 * ```
 */
export class DeviceQueue {
  /** Queue size (number of descriptors and ring entries). */
  readonly size: number;
  readonly #memory: GuestMemory;
  readonly #desc: GuestSlice;
  readonly #avail: GuestSlice;
  readonly #used: GuestSlice;
  readonly #mask: number;
  readonly #eventIdx: boolean;
  readonly #indirect: boolean;
  readonly #maxIndirect: number;
  readonly #onBroken: ((err: VirtioError) => void) | undefined;
  readonly #usedEventOff: number;
  readonly #availEventOff: number;

  /** One pooled chain object per head (a head is in flight at most once). */
  readonly #pool: (DescriptorChain | undefined)[];
  /** 1 while the chain with that head is in flight. */
  readonly #inFlightHead: Uint8Array;
  #inFlight = 0;

  #nextAvail: number;
  /** Last avail.idx loaded and validated; entries in [nextAvail, shadow) are published. */
  #availShadow: number;
  #nextUsed: number;
  /** used.idx as last stored. */
  #publishedUsed: number;
  /** Used elements added but not yet published. */
  #pendingUsed = 0;
  /** used.idx at the last needsNotification call ("old"), and elements published since. */
  #lastSignalUsed: number;
  #publishedSinceSignal = 0;
  #usedFlags = 0;
  #broken: VirtioError | null = null;

  /** Region bounds and lazily created whole-region slices for indirect tables. */
  readonly #regionStart: number[];
  readonly #regionEnd: number[];
  readonly #regionSlice: (GuestSlice | undefined)[];
  /** Reused result of #indirectTable (no allocation per indirect chain). */
  readonly #tableRef: { slice: GuestSlice; base: number };

  /**
   * Validates the configuration and maps the three ring parts once.
   *
   * @throws {VirtioError} `QUEUE_CONFIG` if the size is not a power of two in
   *   1..32768, a part is misaligned (16/2/4) or not inside one guest memory
   *   region, or `nextAvail` is not a u16.
   * @throws {RangeError} for a bad `maxIndirectEntries`.
   */
  constructor(memory: GuestMemory, config: DeviceQueueConfig) {
    const { size, descAddr, availAddr, usedAddr } = config;
    // §2.7: "Queue Size ... is always a power of 2. The maximum Queue Size value is 32768."
    if (!isValidQueueSize(size))
      throw configError(`queue size ${size} is not a power of two in 1..32768`, { size });
    const maxIndirect = config.maxIndirectEntries ?? DEFAULT_MAX_INDIRECT_ENTRIES;
    if (!Number.isInteger(maxIndirect) || maxIndirect < 1 || maxIndirect > 65535)
      throw new RangeError(`maxIndirectEntries must be an integer in 1..65535, got ${maxIndirect}`);
    const nextAvail = config.nextAvail ?? 0;
    if (!Number.isInteger(nextAvail) || nextAvail < 0 || nextAvail > 0xffff)
      throw configError(`initial avail index ${nextAvail} is not a u16`, { nextAvail });
    this.size = size;
    this.#memory = memory;
    // §2.7 alignment table: descriptor table 16, available ring 2, used ring 4.
    this.#desc = mapPart(
      memory,
      "descriptor table",
      descAddr,
      descTableSize(size),
      VIRTQ_DESC_ALIGN,
    );
    this.#avail = mapPart(
      memory,
      "available ring",
      availAddr,
      availRingSize(size),
      VIRTQ_AVAIL_ALIGN,
    );
    this.#used = mapPart(memory, "used ring", usedAddr, usedRingSize(size), VIRTQ_USED_ALIGN);
    this.#mask = size - 1;
    this.#eventIdx = config.eventIdx ?? false;
    this.#indirect = config.indirect ?? false;
    this.#maxIndirect = maxIndirect;
    this.#onBroken = config.onBroken;
    this.#usedEventOff = usedEventOffset(size);
    this.#availEventOff = availEventOffset(size);
    this.#pool = new Array<DescriptorChain | undefined>(size).fill(undefined);
    this.#inFlightHead = new Uint8Array(size);
    this.#nextAvail = nextAvail;
    this.#availShadow = nextAvail;
    // Atomics.load (SeqCst): the used index the other side last saw, when resuming a ring.
    this.#nextUsed = config.usedIdxFromMemory ? this.#used.atomicLoadU16(VIRTQ_USED_OFF_IDX) : 0;
    this.#publishedUsed = this.#nextUsed;
    this.#lastSignalUsed = this.#nextUsed;
    const layout = memory.layout;
    this.#regionStart = layout.map((r) => r.guestPhysAddr);
    this.#regionEnd = layout.map((r) => r.guestPhysAddr + r.size);
    this.#regionSlice = layout.map(() => undefined);
    this.#tableRef = { slice: this.#desc, base: 0 };
  }

  /** Free-running index of the next available-ring entry to consume (last_avail_idx). */
  get nextAvail(): number {
    return this.#nextAvail;
  }

  /** Free-running index of the next used-ring entry {@link addUsed} writes (published or not). */
  get nextUsed(): number {
    return this.#nextUsed;
  }

  /** Chains popped and not yet returned with {@link addUsed}. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Guest-physical address of the descriptor table (as configured). */
  get descAddr(): number {
    return this.#desc.addr;
  }

  /** Guest-physical address of the available ring (as configured). */
  get availAddr(): number {
    return this.#avail.addr;
  }

  /** Guest-physical address of the used ring (as configured). */
  get usedAddr(): number {
    return this.#used.addr;
  }

  /** The violation that broke the queue, or null. */
  get broken(): VirtioError | null {
    return this.#broken;
  }

  /**
   * Makes the queue broken (sticky): nothing more is consumed or written.
   * Calls `onBroken` the first time only; later calls keep the first error.
   */
  markBroken(err: VirtioError): void {
    if (this.#broken !== null) return;
    this.#broken = err;
    this.#onBroken?.(err);
  }

  /**
   * True if the driver has made chains available that were not popped yet.
   * False when broken.
   *
   * @throws {VirtioError} `AVAIL_IDX_JUMP` (and the queue is broken).
   */
  hasAvailable(): boolean {
    if (this.#broken !== null) return false;
    this.#availShadow = this.#loadAvailIdx();
    return this.#availShadow !== this.#nextAvail;
  }

  /**
   * Pops the next available chain, validated: every buffer inside guest
   * memory, readable buffers before writable ones, bounded length. Returns
   * null when nothing is available or the queue is broken. The chain object
   * is owned by the queue and reused after its head is given to
   * {@link addUsed}.
   *
   * @throws {VirtioError} one of `AVAIL_IDX_JUMP`, `HEAD_OUT_OF_RANGE`,
   *   `TOO_MANY_IN_FLIGHT`, `HEAD_IN_USE`, `NEXT_OUT_OF_RANGE`, `DESC_LOOP`,
   *   `CHAIN_TOO_LONG`, `DESC_OUT_OF_BOUNDS`, `READ_AFTER_WRITE`,
   *   `INDIRECT_TABLE`, `INDIRECT_NESTED`, `INDIRECT_NEXT`; the queue is then broken.
   */
  popAvail(): DescriptorChain | null {
    if (this.#broken !== null) return null;
    if (this.#nextAvail === this.#availShadow) {
      // Read avail.idx once per batch: only when every entry seen so far is consumed.
      this.#availShadow = this.#loadAvailIdx();
      if (this.#nextAvail === this.#availShadow) return null;
    }
    const pos = this.#nextAvail & this.#mask;
    // Plain read, ordered after the Atomics.load of avail.idx that published this entry.
    const head = this.#avail.readU16(VIRTQ_AVAIL_OFF_RING + 2 * pos);
    // §2.7.6: ring[] entries are descriptor-chain heads, i.e. indexes into a table of `size` entries.
    if (head >= this.size) {
      throw this.#fail(
        ErrorCode.HEAD_OUT_OF_RANGE,
        `avail ring entry ${this.#nextAvail} holds head ${head}, queue size is ${this.size}`,
        { availIdx: this.#nextAvail, head, size: this.size },
      );
    }
    if (this.#inFlight >= this.size) {
      throw this.#fail(
        ErrorCode.TOO_MANY_IN_FLIGHT,
        `avail ring entry ${this.#nextAvail} (head ${head}) would put more than ${this.size} chains in flight`,
        { availIdx: this.#nextAvail, head, inFlight: this.#inFlight, size: this.size },
      );
    }
    if (this.#inFlightHead[head] !== 0) {
      throw this.#fail(
        ErrorCode.HEAD_IN_USE,
        `avail ring entry ${this.#nextAvail} holds head ${head}, which is already in flight`,
        { availIdx: this.#nextAvail, head },
      );
    }
    let chain = this.#pool[head];
    if (chain === undefined) {
      chain = new DescriptorChain(this.#memory);
      this.#pool[head] = chain;
    }
    chain.reset(head);
    this.#walk(chain);
    this.#inFlightHead[head] = 1;
    this.#inFlight++;
    this.#nextAvail = (this.#nextAvail + 1) & 0xffff;
    return chain;
  }

  /**
   * Writes a used element `{ id: head, len }` (not yet visible to the driver:
   * see {@link publishUsed}) and releases the chain. Writes nothing when the
   * queue is broken.
   *
   * @param len bytes written to the chain's writable part (§2.7.8.1: the
   *   device MUST write at least `len` bytes before updating the used idx).
   * @throws {RangeError} if `head` is not a queue index or `len` is not a u32
   *   no larger than the chain's writable bytes.
   * @throws {VirtioError} `USED_HEAD_NOT_IN_FLIGHT` if `head` is not in flight
   *   (nothing written; the queue is not broken).
   */
  addUsed(head: number, len: number): void {
    if (!Number.isInteger(head) || head < 0 || head >= this.size)
      throw new RangeError(`used head ${head} is not an index of a queue of size ${this.size}`);
    if (!Number.isInteger(len) || len < 0 || len > MAX_CHAIN_BYTES)
      throw new RangeError(`used length ${len} is not a u32`);
    if (this.#inFlightHead[head] === 0) {
      throw new VirtioError(
        ErrorCode.USED_HEAD_NOT_IN_FLIGHT,
        `used head ${head} is not in flight`,
        { head },
      );
    }
    const chain = this.#pool[head]!;
    if (len > chain.writableBytes) {
      throw new RangeError(
        `used length ${len} for head ${head} exceeds its ${chain.writableBytes} writable bytes`,
      );
    }
    this.#inFlightHead[head] = 0;
    this.#inFlight--;
    if (this.#broken !== null) return;
    const off = VIRTQ_USED_OFF_RING + VIRTQ_USED_ELEM_SIZE * (this.#nextUsed & this.#mask);
    // Plain writes: made visible by the Atomics.store of used.idx in publishUsed.
    this.#used.writeU32(off, head);
    this.#used.writeU32(off + 4, len);
    this.#nextUsed = (this.#nextUsed + 1) & 0xffff;
    this.#pendingUsed++;
  }

  /**
   * Publishes every used element added so far by storing used.idx (so a
   * batch becomes visible at once). Writes nothing when broken or when there
   * is nothing new.
   */
  publishUsed(): void {
    if (this.#broken !== null || this.#pendingUsed === 0) return;
    // Atomics.store (SeqCst): used elements and the data written into buffers become visible before the new used.idx.
    this.#used.atomicStoreU16(VIRTQ_USED_OFF_IDX, this.#nextUsed);
    this.#publishedUsed = this.#nextUsed;
    this.#publishedSinceSignal += this.#pendingUsed;
    this.#pendingUsed = 0;
  }

  /**
   * Should the device send a used buffer notification for what was
   * published since the last call? Call it after {@link publishUsed}.
   * False when nothing was published since the last call, or when broken.
   *
   * - EVENT_IDX (§2.7.7.2): true iff `used_event` lies in the window of used
   *   indexes published since the last call (`vring_need_event`); forced true
   *   if more than 65535 were published, since the window then covers every
   *   u16 value. The window start is the exact used.idx of the previous call
   *   (starting at the initial used idx), so no "signalled_used_valid" flag
   *   is needed.
   * - otherwise (§2.7.7.2): true unless avail.flags has NO_INTERRUPT.
   */
  needsNotification(): boolean {
    if (this.#broken !== null) return false;
    const count = this.#publishedSinceSignal;
    const old = this.#lastSignalUsed;
    const now = this.#publishedUsed;
    this.#publishedSinceSignal = 0;
    this.#lastSignalUsed = now;
    if (count === 0) return false;
    if (!this.#eventIdx) {
      // Atomics.load (SeqCst): ordered after the used.idx store; pairs with the driver's flags store then used.idx load.
      const flags = this.#avail.atomicLoadU16(VIRTQ_AVAIL_OFF_FLAGS);
      // §2.7.7.2: "If flags is 1, the device SHOULD NOT send a notification. If flags is 0, the device MUST send a notification."
      return (flags & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
    }
    if (count > 0xffff) return true;
    // Atomics.load (SeqCst): ordered after the used.idx store (store→load Dekker pair with the driver's used_event store → used.idx load).
    const usedEvent = this.#avail.atomicLoadU16(this.#usedEventOff);
    // §2.7.7.2: "If the idx field in the used ring (which determined where that descriptor index was placed)
    // was equal to used_event, the device MUST send a notification."
    return vringNeedEvent(usedEvent, now, old);
  }

  /**
   * Asks the driver for available buffer notifications again, then re-checks
   * the available ring: returns true iff work slipped in (the caller must
   * drain again instead of waiting). False when broken.
   *
   * EVENT_IDX: writes `avail_event = nextAvail`; otherwise clears
   * VIRTQ_USED_F_NO_NOTIFY.
   *
   * @throws {VirtioError} `AVAIL_IDX_JUMP` from the re-check (queue broken).
   */
  enableNotification(): boolean {
    if (this.#broken !== null) return false;
    if (this.#eventIdx) {
      // Atomics.store (SeqCst): publishes avail_event before the avail.idx re-load below (store→load Dekker pair
      // with the driver's avail.idx store → avail_event load).
      this.#used.atomicStoreU16(this.#availEventOff, this.#nextAvail);
    } else {
      this.#usedFlags &= ~VIRTQ_USED_F_NO_NOTIFY;
      // Atomics.store (SeqCst): clears NO_NOTIFY before the avail.idx re-load below (same Dekker pair with flags).
      this.#used.atomicStoreU16(VIRTQ_USED_OFF_FLAGS, this.#usedFlags);
    }
    return this.hasAvailable();
  }

  /**
   * Tells the driver that available buffer notifications are not needed
   * (a hint: §2.7.10 lets the driver notify anyway). Without EVENT_IDX this
   * sets VIRTQ_USED_F_NO_NOTIFY; with EVENT_IDX it does nothing
   * (`avail_event` simply stops moving). Writes nothing when broken.
   */
  disableNotification(): void {
    // §2.7.10: with EVENT_IDX "The device MUST set flags to 0", so only avail_event may suppress.
    if (this.#broken !== null || this.#eventIdx) return;
    this.#usedFlags |= VIRTQ_USED_F_NO_NOTIFY;
    // Atomics.store (SeqCst): a hint; no ordering needed beyond the field being written whole.
    this.#used.atomicStoreU16(VIRTQ_USED_OFF_FLAGS, this.#usedFlags);
  }

  /** Loads and validates avail.idx; a jump breaks the queue. */
  #loadAvailIdx(): number {
    // Atomics.load (SeqCst): later plain reads of ring entries and descriptors see what the driver wrote before its store.
    const idx = this.#avail.atomicLoadU16(VIRTQ_AVAIL_OFF_IDX);
    const pending = (idx - this.#nextAvail) & 0xffff;
    // The driver can have at most `size` entries outstanding; exactly `size` ahead is a full ring.
    if (pending > this.size) {
      throw this.#fail(
        ErrorCode.AVAIL_IDX_JUMP,
        `avail.idx ${idx} is ${pending} entries ahead of the device's next index ${this.#nextAvail}, queue size is ${this.size}`,
        { availIdx: idx, nextAvail: this.#nextAvail, size: this.size },
      );
    }
    return idx;
  }

  /** Breaks the queue and returns the error for the caller to throw. */
  #fail(
    code: ErrorCodeValue,
    message: string,
    details: Record<string, number | string | boolean>,
  ): VirtioError {
    const err = new VirtioError(code, message, details);
    this.markBroken(err);
    return err;
  }

  /**
   * Walks the chain starting at `chain.head`, reading each descriptor once
   * into locals and validating it, and fills `chain` with the buffers.
   * Bounded: each iteration either records a buffer (at most `size`, else
   * DESC_LOOP) or switches into the single allowed indirect table.
   */
  #walk(chain: DescriptorChain): void {
    const head = chain.head;
    const size = this.size;
    let table = this.#desc;
    let base = 0;
    let tableLen = size;
    let indirectAt = -1; // main-table index of the INDIRECT descriptor, -1 while walking the main table
    let tableWalked = 0;
    let buffers = 0;
    let total = 0;
    let writable = false;
    let i = head;
    for (;;) {
      const off = base + VIRTQ_DESC_SIZE * i;
      const addr = table.readU64AsNumber(off);
      const len = table.readU32(off + VIRTQ_DESC_OFF_LEN);
      const flags = table.readU16(off + VIRTQ_DESC_OFF_FLAGS);
      const next = table.readU16(off + VIRTQ_DESC_OFF_NEXT);
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        this.#checkIndirect(head, i, indirectAt, flags, len);
        const t = this.#indirectTable(head, i, addr, len);
        table = t.slice;
        base = t.base;
        tableLen = len / VIRTQ_DESC_SIZE;
        indirectAt = i;
        tableWalked = 0;
        i = 0;
        chain.descCount++;
        continue;
      }
      buffers++;
      tableWalked++;
      chain.descCount++;
      if ((flags & VIRTQ_DESC_F_WRITE) !== 0) writable = true;
      else if (writable) {
        // §2.7.4.2: "The driver MUST place any device-writable descriptor elements after any device-readable descriptor elements."
        throw this.#failDesc(
          ErrorCode.READ_AFTER_WRITE,
          head,
          i,
          indirectAt,
          "is device-readable but follows a device-writable one",
          {},
        );
      }
      if (len > 0 && !this.#memory.isValidRange(addr, len)) {
        throw this.#failDesc(
          ErrorCode.DESC_OUT_OF_BOUNDS,
          head,
          i,
          indirectAt,
          `buffer [${hex(addr)}, +${len}) is not inside guest memory`,
          { addr, len },
        );
      }
      total += len;
      if (total > MAX_CHAIN_BYTES) {
        // §2.7.5.2: "Drivers MUST NOT add a descriptor chain longer than 2^32 bytes in total".
        throw this.#failDesc(
          ErrorCode.CHAIN_TOO_LONG,
          head,
          i,
          indirectAt,
          `brings the chain to ${total} bytes, above 2^32 - 1`,
          { total },
        );
      }
      chain.pushSegment(addr, len, writable);
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) return;
      if (next >= tableLen) {
        throw this.#failDesc(
          ErrorCode.NEXT_OUT_OF_RANGE,
          head,
          i,
          indirectAt,
          `has next ${next}, table has ${tableLen} entries`,
          { next, tableLen },
        );
      }
      // §2.7.5.3.1: "A driver MUST NOT create a descriptor chain longer than the Queue Size of the device."
      if (buffers >= size || tableWalked >= tableLen) {
        throw this.#failDesc(
          ErrorCode.DESC_LOOP,
          head,
          i,
          indirectAt,
          `continues to ${next} after ${buffers} buffers (${tableWalked} in this table of ${tableLen}); queue size is ${size}: loop or chain too long`,
          { next, buffers, tableLen, size },
        );
      }
      i = next;
    }
  }

  /** Checks the flags of a descriptor that has INDIRECT set. */
  #checkIndirect(head: number, i: number, indirectAt: number, flags: number, len: number): void {
    if (indirectAt >= 0) {
      // §2.7.5.3.1: "The driver MUST NOT set the VIRTQ_DESC_F_INDIRECT flag within an indirect descriptor".
      throw this.#failDesc(
        ErrorCode.INDIRECT_NESTED,
        head,
        i,
        indirectAt,
        "sets INDIRECT inside an indirect table",
        {},
      );
    }
    if (!this.#indirect) {
      // §2.7.5.3.1: "The driver MUST NOT set the VIRTQ_DESC_F_INDIRECT flag unless the VIRTIO_F_INDIRECT_DESC feature was negotiated."
      throw this.#failDesc(
        ErrorCode.INDIRECT_TABLE,
        head,
        i,
        indirectAt,
        "sets INDIRECT but VIRTIO_F_INDIRECT_DESC was not negotiated",
        { len },
      );
    }
    if ((flags & VIRTQ_DESC_F_NEXT) !== 0) {
      // §2.7.5.3.1: "A driver MUST NOT set both VIRTQ_DESC_F_INDIRECT and VIRTQ_DESC_F_NEXT in flags."
      throw this.#failDesc(
        ErrorCode.INDIRECT_NEXT,
        head,
        i,
        indirectAt,
        "sets both INDIRECT and NEXT",
        {},
      );
    }
    // The WRITE flag on an INDIRECT descriptor is ignored (§2.7.5.3.2: "The device MUST ignore the write-only flag").
  }

  /** Validates an indirect table and returns where to read it. */
  #indirectTable(
    head: number,
    i: number,
    addr: number,
    len: number,
  ): { slice: GuestSlice; base: number } {
    const entries = len / VIRTQ_DESC_SIZE;
    if (len === 0 || len % VIRTQ_DESC_SIZE !== 0 || entries > this.#maxIndirect) {
      throw this.#failDesc(
        ErrorCode.INDIRECT_TABLE,
        head,
        i,
        -1,
        `points to an indirect table of ${len} bytes: not a non-zero multiple of 16 of at most ${this.#maxIndirect} entries`,
        { len, maxEntries: this.#maxIndirect },
      );
    }
    const r = this.#regionOf(addr, len);
    if (r >= 0) {
      let slice = this.#regionSlice[r];
      if (slice === undefined) {
        slice = this.#memory.slice(
          this.#regionStart[r]!,
          this.#regionEnd[r]! - this.#regionStart[r]!,
        );
        this.#regionSlice[r] = slice;
      }
      this.#tableRef.slice = slice;
      this.#tableRef.base = addr - this.#regionStart[r]!;
      return this.#tableRef;
    }
    if (!this.#memory.isValidRange(addr, len)) {
      throw this.#failDesc(
        ErrorCode.INDIRECT_TABLE,
        head,
        i,
        -1,
        `points to an indirect table [${hex(addr)}, +${len}) that is not inside guest memory`,
        { addr, len },
      );
    }
    return { slice: copyTable(this.#memory, addr, len), base: 0 };
  }

  /** Index of the region holding all of [addr, addr + len), or -1. */
  #regionOf(addr: number, len: number): number {
    const starts = this.#regionStart;
    let lo = 0;
    let hi = starts.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (addr < starts[mid]!) hi = mid - 1;
      else if (addr >= this.#regionEnd[mid]!) lo = mid + 1;
      else return addr + len <= this.#regionEnd[mid]! ? mid : -1;
    }
    return -1;
  }

  /** Breaks the queue with a message naming the descriptor (queue-relative). */
  #failDesc(
    code: ErrorCodeValue,
    head: number,
    i: number,
    indirectAt: number,
    what: string,
    details: Record<string, number>,
  ): VirtioError {
    const where =
      indirectAt < 0
        ? `descriptor ${i}`
        : `entry ${i} of the indirect table of descriptor ${indirectAt}`;
    return this.#fail(code, `chain with head ${head}: ${where} ${what}`, {
      head,
      desc: i,
      indirectOf: indirectAt,
      ...details,
    });
  }
}

/** Maps one ring part: aligned, inside one region. */
function mapPart(
  memory: GuestMemory,
  name: string,
  addr: number,
  len: number,
  align: number,
): GuestSlice {
  if (!Number.isSafeInteger(addr) || addr < 0)
    throw configError(`${name} address ${addr} is not a guest address`, { addr });
  // §2.7: the driver MUST align each part (descriptor table 16, available ring 2, used ring 4).
  if (addr % align !== 0)
    throw configError(`${name} at ${hex(addr)} is not ${align}-aligned`, { addr, align });
  if (!memory.isInOneRegion(addr, len)) {
    throw configError(`${name} [${hex(addr)}, +${len}) is not inside one guest memory region`, {
      addr,
      len,
    });
  }
  return memory.slice(addr, len);
}

/**
 * Copies an indirect table that straddles contiguous regions into a private
 * buffer (rare; allocates) so it can be read through one slice.
 */
function copyTable(memory: GuestMemory, addr: number, len: number): GuestSlice {
  const bytes = new Uint8Array(len);
  memory.read(addr, bytes);
  return new GuestMemory([{ guestPhysAddr: 0, size: len, buffer: bytes.buffer }]).slice(0, len);
}

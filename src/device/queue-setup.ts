/**
 * A device's queue registers as the driver writes them — size, the three
 * ring addresses, ready — and the rings they become. VIRTIO 1.2 §2.7 (split
 * virtqueues: size, alignment of the three parts), §2.8 / §2.8.10.1 (packed
 * virtqueues: "The Queue Size value does not have to be a power of 2"),
 * §3.1.1 step 7 (the driver sets the queues up, after FEATURES_OK: the
 * layout is known), §4.2.2 (virtio-mmio: size and addresses are not changed
 * while the queue is ready).
 *
 * A size is taken if the negotiated layout allows it (split: a power of
 * two; packed, VIRTIO_F_RING_PACKED: any of 1..32768) and it is at most the
 * queue's maximum. Setting ready validates the ring (size, parts aligned
 * and inside one guest memory region) and opens it with `openRing`; an
 * invalid ring stays not ready (CONFORMANCE: "rejected when the queue is
 * configured: the queue does not start"). Whether the device status allows
 * a write at all is the device's check ({@link VirtioDevice}); this table
 * checks the rest. Invalid values are ignored and logged, never thrown.
 *
 * @module
 */
import type { VirtioError } from "../errors.ts";
import type { GuestMemory } from "../memory/guest-memory.ts";
import type { DeviceRing } from "../ring/device-ring.ts";
import { openRing } from "../ring/open-ring.ts";
import { ringPartAlign, ringPartBytes, ringSizeProblem } from "../ring/ring-layout.ts";

/** Per-queue setup as the driver wrote it. */
interface QueueSetup {
  size: number;
  descAddr: number;
  availAddr: number;
  usedAddr: number;
  ready: boolean;
}

/** The queues of one device: their registers and, once ready, their rings. */
export class QueueTable {
  readonly #maxSizes: readonly number[];
  readonly #setup: QueueSetup[];
  readonly #log: (line: string) => void;
  /** Ready queues (validated at ready time), by index; a new array after every reset. */
  #rings: (DeviceRing | null)[];

  /**
   * @param maxSizes each queue's maximum size (already checked by the device).
   * @param log where ignored writes are reported (lines already name the device).
   */
  constructor(maxSizes: readonly number[], log: (line: string) => void) {
    this.#maxSizes = maxSizes;
    this.#setup = maxSizes.map((max) => freshSetup(max));
    this.#rings = this.#setup.map(() => null);
    this.#log = log;
  }

  /** Number of queues. */
  get count(): number {
    return this.#setup.length;
  }

  /** The rings by index (null: not ready); the array handed to the device type at activation. */
  get rings(): (DeviceRing | null)[] {
    return this.#rings;
  }

  /** True if queue `index` exists. */
  has(index: number): boolean {
    return this.#setup[index] !== undefined;
  }

  /** Maximum size of queue `index` (0 for an index that does not exist). */
  maxSize(index: number): number {
    return this.#maxSizes[index] ?? 0;
  }

  /** The size the driver set for queue `index` (its maximum by default; 0 if no such queue). */
  size(index: number): number {
    return this.#setup[index]?.size ?? 0;
  }

  /** True if queue `index` was made ready. */
  ready(index: number): boolean {
    return this.#setup[index]?.ready ?? false;
  }

  /**
   * Sets the size of an existing queue: at most its maximum, and a size the
   * layout `features` select allows (split: a power of two; packed: any of
   * 1..32768). Returns whether it was taken.
   */
  setSize(index: number, size: number, features: bigint): boolean {
    const q = this.#notReady(index, "size");
    if (q === null) return false;
    const max = this.maxSize(index);
    const problem = ringSizeProblem(size, features);
    if (problem !== null || size > max) {
      this.#log(`queue ${index} size ${size} ignored: ${problem ?? `above the maximum ${max}`}`);
      return false;
    }
    q.size = size;
    return true;
  }

  /** Sets the guest-physical addresses of an existing queue's three parts. */
  setAddresses(index: number, descAddr: number, availAddr: number, usedAddr: number): boolean {
    const q = this.#notReady(index, "addresses");
    if (q === null) return false;
    q.descAddr = descAddr;
    q.availAddr = availAddr;
    q.usedAddr = usedAddr;
    return true;
  }

  /**
   * Makes an existing queue ready (or not). Ready validates the ring and
   * opens it over `memory` with the negotiated `features`; an invalid one
   * stays not ready. Returns the resulting ready state.
   *
   * @param onBroken what the ring calls on a violation.
   */
  setReady(
    index: number,
    ready: boolean,
    memory: GuestMemory | null,
    features: bigint,
    onBroken: (err: VirtioError) => void,
  ): boolean {
    const q = this.#setup[index]!;
    if (!ready) {
      q.ready = false;
      this.#rings[index] = null;
      return false;
    }
    if (q.ready) return true;
    const dq = this.#open(index, q, memory, features, onBroken);
    if (dq === null) return false;
    q.ready = true;
    this.#rings[index] = dq;
    return true;
  }

  /** Stops every ring (they write nothing more to guest memory). */
  markBroken(err: VirtioError): void {
    for (const q of this.#rings) q?.markBroken(err);
  }

  /**
   * Detaches the rings (marked broken with `err`, so that nothing more
   * reaches guest memory through them) and clears every register.
   */
  reset(err: VirtioError): void {
    this.markBroken(err);
    this.#rings = this.#setup.map(() => null);
    this.#setup.forEach((q, i) => Object.assign(q, freshSetup(this.maxSize(i))));
  }

  /** An existing queue whose size or addresses may change: not ready (virtio-mmio rule). */
  #notReady(index: number, what: string): QueueSetup | null {
    const q = this.#setup[index]!;
    // virtio-mmio: the driver MUST NOT change a queue's size or addresses while it is ready.
    if (q.ready) {
      this.#log(`queue ${index} ${what} ignored: queue is ready`);
      return null;
    }
    return q;
  }

  #open(
    index: number,
    q: QueueSetup,
    memory: GuestMemory | null,
    features: bigint,
    onBroken: (err: VirtioError) => void,
  ): DeviceRing | null {
    const problem = memory === null ? "no guest memory" : ringProblem(memory, q, features);
    if (problem !== null) {
      this.#log(`queue ${index} not started: ${problem}`);
      return null;
    }
    try {
      return openRing(memory!, { ...q, features }, onBroken);
    } catch (e) {
      this.#log(`queue ${index} not started: ${String(e)}`);
      return null;
    }
  }
}

function freshSetup(max: number): QueueSetup {
  return { size: max, descAddr: 0, availAddr: 0, usedAddr: 0, ready: false };
}

/** Why a ring cannot start, or null if it can (docs/conformance.md queue configuration row). */
function ringProblem(memory: GuestMemory, q: QueueSetup, features: bigint): string | null {
  const sizeProblem = ringSizeProblem(q.size, features);
  if (sizeProblem !== null) return sizeProblem;
  const bytes = ringPartBytes(q.size, features);
  const align = ringPartAlign(features);
  const parts: [string, number, number, number][] = [
    ["descriptor table", q.descAddr, bytes.desc, align.desc],
    ["available ring", q.availAddr, bytes.avail, align.avail],
    ["used ring", q.usedAddr, bytes.used, align.used],
  ];
  for (const [name, addr, len, align] of parts) {
    if (!Number.isSafeInteger(addr) || addr % align !== 0)
      return `${name} address ${addr} is not ${align}-aligned`;
    if (!memory.isInOneRegion(addr, len))
      return `${name} [0x${addr.toString(16)}, +${len}) is not inside one guest memory region`;
  }
  return null;
}

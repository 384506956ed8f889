/**
 * Test support for the virtio-blk driver (VIRTIO 1.2 §5.2): a
 * {@link BlkDriver} wired in one thread to the device side of this project
 * (the ring `openRing` builds + BlkQueueEngine + a backing store) over
 * shared guest memory, on split (§2.7) or packed (§2.8) rings, with
 * synchronous or microtask kicks and calls; a backing store that fails or
 * holds requests on demand; a device-queue wrapper that records chain
 * shapes and can misbehave. Portable; used by the driver's tests.
 *
 * @module
 */
import type { VirtioError } from "../../errors.ts";
import { GuestMemory } from "../../memory/guest-memory.ts";
import type { DescriptorChain } from "../../ring/chain.ts";
import type { DeviceRing } from "../../ring/device-ring.ts";
import type { DriverRing } from "../../ring/driver-ring.ts";
import { openDriverRing } from "../../ring/open-driver-ring.ts";
import { openRing } from "../../ring/open-ring.ts";
import { ringLayoutOf, type RingLayoutKind } from "../../ring/ring-layout.ts";
import {
  PVIRTQ_DESC_OFF_FLAGS,
  PVIRTQ_DESC_OFF_ID,
  PVIRTQ_DESC_SIZE,
} from "../../spec/packed-virtqueue.ts";
import {
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_OFF_FLAGS,
  VIRTQ_DESC_SIZE,
} from "../../spec/virtqueue.ts";
import { MemoryBacking, type BlkBacking } from "./backing.ts";
import { BlkDeviceConfig, type BlkDeviceOptions, type BlkFeatureName } from "./config.ts";
import { BlkDriver, type BlkDriverOptions } from "./driver.ts";
import { parseBlkConfig, selectBlkFeatures, type BlkDriverConfig } from "./driver-config.ts";
import { planBlkDriverMemory, type BlkDriverMemoryPlan } from "./driver-memory.ts";
import { silentLogger } from "../../log.ts";
import { BlkQueueEngine, type BlkVirtqueue } from "./queue-engine.ts";

/** A backing store that fails or holds requests on demand (wraps a {@link MemoryBacking}). */
export class ControlledBacking implements BlkBacking {
  readonly inner: MemoryBacking;
  /** Byte offsets whose readv / writev fail (the first byte of the request must match). */
  readonly failAt = new Set<number>();
  /** Fail every flush. */
  failFlush = false;
  /** While true, every call waits until {@link release}. */
  hold = false;
  readonly #held: (() => void)[] = [];
  calls = { readv: 0, writev: 0, flush: 0, discard: 0, writeZeroes: 0 };
  /** `unmap` of each writeZeroes call. */
  readonly unmaps: boolean[] = [];

  constructor(inner: MemoryBacking) {
    this.inner = inner;
  }
  get size(): number {
    return this.inner.size;
  }
  get readOnly(): boolean {
    return this.inner.readOnly;
  }
  /** Calls waiting in {@link hold}. */
  get heldCount(): number {
    return this.#held.length;
  }
  /** Lets every held call go on (and stops holding new ones). */
  release(): void {
    this.hold = false;
    for (const go of this.#held.splice(0)) go();
  }
  async #gate(): Promise<void> {
    if (this.hold) await new Promise<void>((resolve) => this.#held.push(resolve));
  }
  async readv(offset: number, iov: readonly Uint8Array[]): Promise<void> {
    this.calls.readv++;
    await this.#gate();
    if (this.failAt.has(offset)) throw new Error(`injected read failure at ${offset}`);
    return this.inner.readv(offset, iov);
  }
  async writev(offset: number, iov: readonly Uint8Array[]): Promise<void> {
    this.calls.writev++;
    await this.#gate();
    if (this.failAt.has(offset)) throw new Error(`injected write failure at ${offset}`);
    return this.inner.writev(offset, iov);
  }
  async flush(): Promise<void> {
    this.calls.flush++;
    await this.#gate();
    if (this.failFlush) throw new Error("injected flush failure");
    return this.inner.flush();
  }
  async discard(offset: number, length: number): Promise<void> {
    this.calls.discard++;
    await this.#gate();
    return this.inner.discard(offset, length);
  }
  async writeZeroes(offset: number, length: number, unmap: boolean): Promise<void> {
    this.calls.writeZeroes++;
    this.unmaps.push(unmap);
    await this.#gate();
    return this.inner.writeZeroes(offset, length, unmap);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

/** Shape of one chain the device popped. */
export interface ChainShape {
  readonly head: number;
  /** The head descriptor pointed to an indirect table. */
  readonly indirect: boolean;
  readonly readable: readonly number[];
  readonly writable: readonly number[];
}

/**
 * A device queue (split or packed) that records every chain and can
 * misbehave: a used id out of range, a chosen used length, a chosen status
 * byte.
 */
export class RecordingQueue implements BlkVirtqueue {
  readonly q: DeviceRing;
  readonly memory: GuestMemory;
  readonly descAddr: number;
  readonly packed: boolean;
  readonly chains: ChainShape[] = [];
  /** Next publishUsed writes this id into the last used entry (then clears it). */
  corruptUsedId: number | null = null;
  /** Every addUsed reports this length instead. */
  usedLenOverride: number | null = null;
  /** Every completion's status byte is overwritten with this. */
  statusOverride: number | null = null;
  readonly #statusAddr = new Map<number, number>();
  /** Used entries added so far (split: the used ring index of the next one). */
  #usedCount = 0;
  /** Where the last used entry went: split used ring index, or packed ring slot. */
  #lastUsedAt = 0;

  constructor(q: DeviceRing, memory: GuestMemory, descAddr: number, packed: boolean) {
    this.q = q;
    this.memory = memory;
    this.descAddr = descAddr;
    this.packed = packed;
  }
  popAvail(): DescriptorChain | null {
    // Packed: the chain's first descriptor is at the next avail position (vringBase bits 0–14);
    // split: at the head index.
    const slot = this.q.vringBase & 0x7fff;
    const c = this.q.popAvail();
    if (c === null) return null;
    const at = this.packed
      ? slot * PVIRTQ_DESC_SIZE + PVIRTQ_DESC_OFF_FLAGS
      : c.head * VIRTQ_DESC_SIZE + VIRTQ_DESC_OFF_FLAGS;
    const flags = this.memory.readU16(this.descAddr + at);
    const readable: number[] = [];
    const writable: number[] = [];
    for (let i = 0; i < c.numSegs; i++)
      (i < c.numReadable ? readable : writable).push(c.segLen[i]!);
    this.chains.push({
      head: c.head,
      indirect: (flags & VIRTQ_DESC_F_INDIRECT) !== 0,
      readable,
      writable,
    });
    if (c.numSegs > c.numReadable)
      this.#statusAddr.set(c.head, c.segAddr[c.numSegs - 1]! + c.segLen[c.numSegs - 1]! - 1);
    return c;
  }
  hasAvailable(): boolean {
    return this.q.hasAvailable();
  }
  addUsed(head: number, len: number): void {
    const at = this.#statusAddr.get(head);
    if (this.statusOverride !== null && at !== undefined)
      this.memory.writeU8(at, this.statusOverride);
    // Packed: the used descriptor goes to the next used position (vringBase bits 16–30).
    this.#lastUsedAt = this.packed
      ? (this.q.vringBase >>> 16) & 0x7fff
      : this.#usedCount & (this.q.size - 1);
    this.#usedCount++;
    this.q.addUsed(head, this.usedLenOverride ?? len);
  }
  publishUsed(): void {
    this.q.publishUsed();
    if (this.corruptUsedId !== null) {
      this.#corrupt(this.corruptUsedId);
      this.corruptUsedId = null;
    }
  }
  /** Set by the rig: address of this queue's used ring (split). */
  usedAddr = 0;
  /** Overwrites the id of the last used entry published (split: u32 in the used ring; packed: the descriptor's u16). */
  #corrupt(id: number): void {
    if (this.packed)
      this.memory.writeU16(
        this.descAddr + PVIRTQ_DESC_SIZE * this.#lastUsedAt + PVIRTQ_DESC_OFF_ID,
        id,
      );
    else this.memory.writeU32(this.usedAddr + 4 + 8 * this.#lastUsedAt, id);
  }
  needsNotification(): boolean {
    return this.q.needsNotification();
  }
  enableNotification(): boolean {
    return this.q.enableNotification();
  }
  disableNotification(): void {
    this.q.disableNotification();
  }
  get broken(): VirtioError | null {
    return this.q.broken;
  }
  markBroken(err: VirtioError): void {
    this.q.markBroken(err);
  }
}

/** Options of {@link blkRig}. */
export interface BlkRigOptions {
  /**
   * The rings' layout: "split" excludes RING_PACKED, "packed" needs it
   * offered (the device offers it by default). Default: what the driver
   * negotiates (packed when offered and not excluded).
   */
  readonly layout?: RingLayoutKind;
  readonly numQueues?: number;
  readonly queueSize?: number;
  /** Disk bytes (default 1 MiB) or a store. */
  readonly backing?: BlkBacking;
  readonly diskBytes?: number;
  /** Device options beyond capacity / numQueues / queueSize. */
  readonly device?: Partial<BlkDeviceOptions>;
  /** Features the driver does not accept. */
  readonly exclude?: readonly BlkFeatureName[];
  /** Device features negotiated (default: what the driver accepted); lets a test make the two disagree. */
  readonly deviceFeatures?: (accepted: bigint) => bigint;
  /** Indirect table entries (0: no indirect tables; default min(queueSize, 128)). */
  readonly indirectEntries?: number;
  readonly bounceBytes?: number;
  /** How the device's call reaches the driver (default "microtask"). */
  readonly call?: "sync" | "microtask";
  /** Requests the engine has in flight at once (default 32). */
  readonly maxInFlight?: number;
  readonly driver?: Partial<BlkDriverOptions>;
  /** Changes the parsed configuration before the driver sees it (a driver that disagrees with the device). */
  readonly driverConfig?: (parsed: BlkDriverConfig) => BlkDriverConfig;
}

/** Everything a driver test needs. */
export interface BlkRig {
  readonly memory: GuestMemory;
  readonly backing: BlkBacking;
  readonly deviceConfig: BlkDeviceConfig;
  readonly features: bigint;
  readonly plan: BlkDriverMemoryPlan;
  readonly driverQueues: DriverRing<number>[];
  readonly deviceQueues: RecordingQueue[];
  readonly engines: BlkQueueEngine[];
  readonly driver: BlkDriver;
  /** Device-side broken reports. */
  readonly deviceBroken: VirtioError[];
  /** Kicks the driver sent, per queue. */
  readonly kicks: number[];
  /** Calls the device sent, per queue. */
  readonly calls: number[];
}

const MEM_SIZE = 16 << 20;

/** Builds a driver and the project's own device in one thread. */
export function blkRig(o: BlkRigOptions = {}): BlkRig {
  const numQueues = o.numQueues ?? 1;
  const queueSize = o.queueSize ?? 64;
  const memory = GuestMemory.createShared([{ guestPhysAddr: 0, size: MEM_SIZE }]);
  const backing = o.backing ?? new MemoryBacking(o.diskBytes ?? 1 << 20);
  const deviceConfig = new BlkDeviceConfig({
    capacityBytes: backing.size,
    readOnly: backing.readOnly,
    numQueues,
    queueSize,
    serial: "virtio-ts-disk",
    ...o.device,
  });
  const exclude = [...(o.exclude ?? []), ...(o.layout === "split" ? ["RING_PACKED" as const] : [])];
  const features = selectBlkFeatures(deviceConfig.offeredFeatures, { exclude });
  const layout = ringLayoutOf(features);
  if (o.layout !== undefined && o.layout !== layout)
    throw new RangeError(`the device does not offer ${o.layout} rings`);
  deviceConfig.negotiate(o.deviceFeatures?.(features) ?? features);
  const parsed = parseBlkConfig(deviceConfig.configBytes(), features);
  const config = o.driverConfig?.(parsed) ?? parsed;
  const plan = planBlkDriverMemory({
    base: 0x1000,
    numQueues,
    queueSize,
    indirectEntries: o.indirectEntries,
    bounceBytes: o.bounceBytes ?? 1 << 20,
    layout,
  });
  const driverQueues = plan.rings.map((ring, i) =>
    openDriverRing<number>(
      memory,
      features,
      ring,
      plan.indirectEntries > 0 ? { indirectArena: plan.indirectArenas[i]! } : {},
    ),
  );
  const deviceQueues = plan.rings.map((ring) => {
    const dev = openRing(memory, { ...ring, features });
    const r = new RecordingQueue(dev, memory, ring.descAddr, layout === "packed");
    r.usedAddr = ring.usedAddr;
    return r;
  });
  const deviceBroken: VirtioError[] = [];
  const kicks = new Array<number>(numQueues).fill(0);
  const calls = new Array<number>(numQueues).fill(0);
  const holder: { driver: BlkDriver | null } = { driver: null };
  const call = (i: number): void => {
    calls[i]!++;
    if (o.call === "sync") holder.driver!.processUsed(i);
    else queueMicrotask(() => holder.driver!.processUsed(i));
  };
  const engines = deviceQueues.map(
    (queue, i) =>
      new BlkQueueEngine({
        queue,
        queueIndex: i,
        backing,
        policy: deviceConfig,
        maxInFlight: o.maxInFlight ?? 32,
        notify: () => call(i),
        onBroken: (e) => deviceBroken.push(e),
        logger: silentLogger,
      }),
  );
  const driver = new BlkDriver({
    memory,
    queues: driverQueues,
    config,
    arena: plan.arena,
    indirectEntries: plan.indirectEntries,
    transport: {
      notify: (i) => {
        kicks[i]!++;
        engines[i]!.kick();
      },
    },
    ...o.driver,
  });
  holder.driver = driver;
  return {
    memory,
    backing,
    deviceConfig,
    features,
    plan,
    driverQueues,
    deviceQueues,
    engines,
    driver,
    deviceBroken,
    kicks,
    calls,
  };
}

/** Deterministic pseudo-random bytes. */
export function patternBytes(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  let x = (Math.imul(seed + 1, 2654435761) >>> 0) | 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

/** Resolves with `p`'s outcome, or rejects if it takes longer than `ms` (tests never hang). */
export function within<T>(p: Promise<T>, ms = 5000, what = "operation"): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Settles every promise (bounded) and returns outcomes: value or error. */
export async function outcomes<T>(
  ps: readonly Promise<T>[],
  ms = 5000,
): Promise<PromiseSettledResult<T>[]> {
  return within(Promise.allSettled(ps), ms, `${ps.length} operations`);
}

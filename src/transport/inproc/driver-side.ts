/**
 * The driver end of the in-process transport: device initialization and
 * queue setup as control procedures, kicks, and waiting for used buffers.
 * VIRTIO 1.2 §3.1.1 (driver initialization), §2.3 (notifications), §2.7.13 /
 * §2.7.14 / §2.8.21 / §2.8.22 (supplying and receiving buffers; the ring
 * logic itself is the DriverRing's: split, or packed when
 * VIRTIO_F_RING_PACKED was negotiated, built by `openDriverRing`).
 *
 * Control operations are written once, as *procedures* (generators that
 * yield control requests: ./driver-control.ts, ./driver-procedures.ts), and
 * run either blocking ({@link InprocDriverTransport.run}: `Atomics.wait`, a
 * worker) or without blocking ({@link InprocDriverTransport.runAsync}:
 * `Atomics.waitAsync`, the main thread):
 *
 * ```ts
 * const features = driver.run(driver.negotiate(wanted));        // in a worker
 * const features = await driver.runAsync(driver.negotiate(wanted)); // on the main thread
 * ```
 *
 * Data path: {@link InprocDriverTransport.kick} rings the device doorbell
 * only when the ring says so (`kickNeeded`); {@link
 * InprocDriverTransport.waitUsed} busy-polls, arms and sleeps
 * (./driver-wait.ts).
 *
 * Threads: one driver thread uses an InprocDriverTransport (its queues and
 * the driver doorbell's sleeping flag assume a single sleeper); the device
 * runs on another thread with {@link InprocDeviceTransport}.
 *
 * @module
 */
import { GuestMemory } from "../../memory/guest-memory.ts";
import type { IndirectArena } from "../../ring/driver-indirect.ts";
import type { DriverRing } from "../../ring/driver-ring.ts";
import { openDriverRing } from "../../ring/open-driver-ring.ts";
import type { RingAddresses } from "../../ring/ring-layout.ts";
import {
  ControlPort,
  type ControlReply,
  type ControlRequest,
  type Procedure,
} from "./driver-control.ts";
import {
  deviceFeatures,
  deviceInfo,
  negotiateFeatures,
  placeQueue,
  readConfig,
  readStatus,
  startDevice,
  writeConfig,
  writeStatus,
  type DeviceInfo,
} from "./driver-procedures.ts";
import { UsedWaiter, type WaitResult } from "./driver-wait.ts";
import { Doorbell } from "./doorbell.ts";
import {
  INPROC_DATA_BYTES,
  KICK_ROUTE_DIRECT,
  KICK_ROUTE_WAITING,
  openRegisters,
  type InprocShared,
  type RegisterLayout,
} from "./registers.ts";

export type { ControlReply, ControlRequest, Procedure } from "./driver-control.ts";
export type { DeviceInfo } from "./driver-procedures.ts";
export type { WaitResult } from "./driver-wait.ts";

/**
 * Where a queue's ring goes (addresses in guest memory, placed for the
 * negotiated layout: `placeRing`) and how it is used. With
 * VIRTIO_F_RING_PACKED `availAddr` / `usedAddr` are the Driver and Device
 * Areas, and the size need not be a power of two.
 */
export interface QueueSetup extends RingAddresses {
  /** Indirect table arena: indirect descriptors are used if given and VIRTIO_RING_F_INDIRECT_DESC was negotiated. */
  readonly indirectArena?: IndirectArena;
}

/** Options of {@link InprocDriverTransport}. */
export interface InprocDriverOptions {
  /** Busy-poll rounds on the used ring before sleeping (0, the default: sleep at once). */
  readonly spin?: number;
  /** Longest wait for the device to answer one control request, in ms (default 10000). */
  readonly controlTimeoutMs?: number;
}

/** Counters of the driver end. */
export interface DriverTransportStats {
  /** Kicks rung (the ring said "notify"). */
  kicksRung: number;
  /** Kicks the ring said were not needed. */
  kicksSuppressed: number;
  /** Of the kicks rung, how many needed `Atomics.notify` (the device slept). */
  kickWakeups: number;
  /** Used buffers found while busy-polling. */
  spinHits: number;
  /** Times the driver slept waiting for used buffers. */
  sleeps: number;
}

/**
 * The driver end of an in-process transport. Construct it on the driver's
 * thread from the {@link InprocShared} the host created.
 */
export class InprocDriverTransport {
  readonly memory: GuestMemory;
  readonly stats: DriverTransportStats = {
    kicksRung: 0,
    kicksSuppressed: 0,
    kickWakeups: 0,
    spinHits: 0,
    sleeps: 0,
  };
  readonly #i32: Int32Array;
  readonly #layout: RegisterLayout;
  readonly #devBell: Doorbell;
  readonly #control: ControlPort;
  readonly #waiter: UsedWaiter;
  readonly #queues: (DriverRing<unknown> | null)[];
  #features = 0n;

  /**
   * @param shared the register block and guest memory (a GuestMemory, or its transferable form).
   * @throws {RangeError} for a bad register block or options.
   */
  constructor(
    shared: InprocShared | { registers: SharedArrayBuffer; memory: GuestMemory },
    options: InprocDriverOptions = {},
  ) {
    const { i32, layout } = openRegisters(shared.registers);
    this.memory =
      shared.memory instanceof GuestMemory
        ? shared.memory
        : GuestMemory.fromTransferable(shared.memory);
    const spin = options.spin ?? 0;
    if (!Number.isInteger(spin) || spin < 0)
      throw new RangeError(`spin ${spin} must be a non-negative integer`);
    this.#i32 = i32;
    this.#layout = layout;
    const data = new Uint8Array(shared.registers, layout.data * 4, INPROC_DATA_BYTES);
    this.#devBell = new Doorbell(i32, layout.devWake, layout.devSleeping);
    const drvBell = new Doorbell(i32, layout.drvWake, layout.drvSleeping);
    this.#queues = new Array<DriverRing<unknown> | null>(layout.numQueues).fill(null);
    this.#control = new ControlPort(i32, data, this.#devBell, options.controlTimeoutMs ?? 10_000);
    this.#waiter = new UsedWaiter(i32, layout.configSeq, drvBell, spin, this.stats);
  }

  /** Number of queues of the device. */
  get numQueues(): number {
    return this.#layout.numQueues;
  }

  /** The features negotiated by the last {@link negotiate} (0n before). */
  get features(): bigint {
    return this.#features;
  }

  /** The ring set up for `index`, or null. */
  queue<T>(index: number): DriverRing<T> | null {
    return (this.#queues[index] ?? null) as DriverRing<T> | null;
  }

  // ---- running procedures ----

  /** Runs a procedure, blocking on each reply (`Atomics.wait`: a worker). */
  run<T>(proc: Procedure<T>): T {
    return this.#control.run(proc);
  }

  /** Runs a procedure without blocking (`Atomics.waitAsync`). */
  runAsync<T>(proc: Procedure<T>): Promise<T> {
    return this.#control.runAsync(proc);
  }

  /**
   * Sends one control request and blocks until the device answers.
   *
   * @throws {VirtioError} `INPROC_TIMEOUT` if no answer within the control timeout.
   */
  request(req: ControlRequest): ControlReply {
    return this.#control.request(req);
  }

  /** {@link request} without blocking the thread. */
  requestAsync(req: ControlRequest): Promise<ControlReply> {
    return this.#control.requestAsync(req);
  }

  // ---- procedures (run them with run() or runAsync()) ----

  /** DEVICE_INFO: device id, queue count, configuration size. */
  *deviceInfo(): Procedure<DeviceInfo> {
    return yield* deviceInfo();
  }

  /** Reads the device status. */
  *readStatus(): Procedure<number> {
    return yield* readStatus();
  }

  /** Writes the device status (acknowledged once applied). */
  *writeStatus(value: number): Procedure<void> {
    yield* writeStatus(value);
  }

  /** The device's offered features (64 bits). */
  *deviceFeatures(): Procedure<bigint> {
    return yield* deviceFeatures();
  }

  /**
   * §3.1.1 steps 1–6: reset, ACKNOWLEDGE, DRIVER, read the device features,
   * accept `wanted ∩ offered`, FEATURES_OK, and re-read the status.
   * Returns the accepted set.
   *
   * @throws {VirtioError} `FEATURES_REFUSED` if the device did not keep
   *   FEATURES_OK (the driver then sets FAILED, §3.1.1 step 6).
   */
  *negotiate(wanted: bigint): Procedure<bigint> {
    yield* this.reset();
    const accepted = yield* negotiateFeatures(wanted);
    this.#features = accepted;
    return accepted;
  }

  /**
   * Sets up queue `index` (§3.1.1 step 7): builds its ring in the layout the
   * negotiated features select (`openDriverRing`: split, or packed with
   * VIRTIO_F_RING_PACKED) over the given guest memory (initialising it),
   * tells the device size and addresses, and makes it ready. Call after
   * {@link negotiate}.
   *
   * @throws {RangeError} for a bad setup (the ring's checks, index).
   * @throws {VirtioError} `QUEUE_CONFIG` if the device refused it.
   */
  *setupQueue<T>(index: number, setup: QueueSetup): Procedure<DriverRing<T>> {
    if (!Number.isInteger(index) || index < 0 || index >= this.#layout.numQueues)
      throw new RangeError(`queue index ${index} is not in 0..${this.#layout.numQueues - 1}`);
    const dq = openDriverRing<T>(
      this.memory,
      this.#features,
      setup,
      setup.indirectArena === undefined ? {} : { indirectArena: setup.indirectArena },
    );
    yield* placeQueue(index, setup);
    this.#queues[index] = dq;
    return dq;
  }

  /** §3.1.1 step 8: DRIVER_OK. Returns the status read back. */
  *start(): Procedure<number> {
    return yield* startDevice();
  }

  /**
   * Resets the device (§2.4: write 0; the device answers once it reads 0)
   * and forgets the queues (their rings may be reused after `detachAll()`,
   * under the same negotiated layout).
   */
  *reset(): Procedure<void> {
    yield* writeStatus(0);
    this.#queues.fill(null);
    this.#features = 0n;
  }

  /**
   * Reads `length` configuration bytes at `offset`, retrying until the
   * generation is the same before and after (§2.5.1), at most 16 times.
   */
  *readConfig(offset: number, length: number): Procedure<Uint8Array> {
    return yield* readConfig(offset, length);
  }

  /** Writes configuration bytes; returns how many the device took. */
  *writeConfig(offset: number, bytes: Uint8Array): Procedure<number> {
    return yield* writeConfig(offset, bytes);
  }

  // ---- data path ----

  /**
   * Publishes what was added to queue `index` and rings the device doorbell
   * if the ring says the device wants a notification. Returns true if it rang.
   * A queue whose kicks a dataplane thread takes (KICK_ROUTE, ./registers.ts)
   * is rung on its own KICK word instead of the device doorbell.
   *
   * @throws {RangeError} if the queue was not set up.
   */
  kick(index: number): boolean {
    const dq = this.#queue(index);
    if (!dq.kickNeeded()) {
      this.stats.kicksSuppressed++;
      return false;
    }
    const a = this.#i32;
    const kickWord = this.#layout.kickBase + index;
    // Atomics.add (SeqCst RMW): this queue's kick count; ordered after the store in kickNeeded() that made the
    // requests available (split: avail.idx; packed: the first descriptor's flags).
    Atomics.add(a, kickWord, 1);
    this.stats.kicksRung++;
    // Atomics.load (SeqCst): after the add (Dekker pair with a dataplane's WAITING set → KICK compare).
    const route = Atomics.load(a, this.#layout.kickRouteBase + index);
    if ((route & KICK_ROUTE_WAITING) !== 0) {
      this.stats.kickWakeups++;
      // Atomics.notify: wakes the dataplane thread waiting on this queue's KICK word.
      Atomics.notify(a, kickWord);
    }
    if ((route & KICK_ROUTE_DIRECT) !== 0) return true;
    if (this.#devBell.ring()) this.stats.kickWakeups++;
    return true;
  }

  /**
   * Waits (blocking: a worker) until queue `index` has used buffers, a
   * configuration change arrives, or `timeoutMs` passes.
   *
   * With `delayed` (and EVENT_IDX) the device is asked to notify only once
   * about 3/4 of the outstanding requests completed (`enableCallbacksDelayed`,
   * Linux's virtqueue_enable_cb_delayed): fewer wake-ups when the driver
   * waits for room in a full ring. Without EVENT_IDX it is the same as not
   * delayed.
   *
   * @throws {VirtioError} the queue's error if it is broken.
   * @throws {RangeError} if the queue was not set up.
   */
  waitUsed(index: number, timeoutMs: number, delayed = false): WaitResult {
    return this.#waiter.wait(this.#queue(index), timeoutMs, delayed);
  }

  /** {@link waitUsed} without blocking the thread. */
  async waitUsedAsync(index: number, timeoutMs: number, delayed = false): Promise<WaitResult> {
    return this.#waiter.waitAsync(this.#queue(index), timeoutMs, delayed);
  }

  /**
   * Waits (blocking: a worker) until any set-up queue has used buffers, a
   * configuration change arrives, or `timeoutMs` passes: one driver thread
   * serving several queues sleeps once for all of them. Take the used
   * buffers of every queue afterwards.
   *
   * @throws {VirtioError} the first broken queue's error.
   */
  waitUsedAny(timeoutMs: number): WaitResult {
    return this.#waiter.waitAny(this.#queues, timeoutMs);
  }

  /** {@link waitUsedAny} without blocking the thread. */
  waitUsedAnyAsync(timeoutMs: number): Promise<WaitResult> {
    return this.#waiter.waitAnyAsync(this.#queues, timeoutMs);
  }

  /** True (once per change) if the device sent a configuration change notification since the last call. */
  configChanged(): boolean {
    return this.#waiter.configChanged();
  }

  #queue(index: number): DriverRing<unknown> {
    const dq = this.#queues[index];
    if (dq === null || dq === undefined) throw new RangeError(`queue ${index} is not set up`);
    return dq;
  }
}

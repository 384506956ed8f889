/**
 * The driver end of the in-process transport: control requests to the
 * device thread, queue setup, kicks and waiting for used buffers. VIRTIO 1.2
 * §3.1.1 (driver initialization), §2.3 (notifications), §2.7.13 / §2.7.14
 * (supplying and receiving buffers; the ring logic itself is DriverQueue's).
 *
 * Control operations are written once, as *procedures* (generators that
 * yield control requests), and run either blocking ({@link
 * InprocDriverTransport.run}: `Atomics.wait`, a worker) or without blocking
 * ({@link InprocDriverTransport.runAsync}: `Atomics.waitAsync`, the main
 * thread):
 *
 * ```ts
 * const features = driver.run(driver.negotiate(wanted));        // in a worker
 * const features = await driver.runAsync(driver.negotiate(wanted)); // on the main thread
 * ```
 *
 * Data path: {@link InprocDriverTransport.kick} rings the device doorbell
 * only when the ring says so (`kickNeeded`); {@link
 * InprocDriverTransport.waitUsed} busy-polls the used ring (if `spin` > 0),
 * then re-enables used-buffer notifications (`enableCallbacks`, which closes
 * the race with the device) and sleeps on the driver doorbell, bounded by a
 * timeout.
 *
 * Threads: one driver thread uses an InprocDriverTransport (its queues and
 * the driver doorbell's sleeping flag assume a single sleeper); the device
 * runs on another thread with {@link InprocDeviceTransport}.
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../../errors.ts";
import { GuestMemory } from "../../memory/guest-memory.ts";
import { DriverQueue, type IndirectArena } from "../../ring/driver-queue.ts";
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FAILED,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  featureBit,
} from "../../spec/virtio.ts";
import { Doorbell, waitWordAsync } from "./doorbell.ts";
import {
  INPROC_DATA_BYTES,
  KICK_ROUTE_DIRECT,
  KICK_ROUTE_WAITING,
  NUM_ARGS,
  NUM_RETS,
  Op,
  Result,
  W,
  openRegisters,
  type InprocShared,
  type RegisterLayout,
} from "./registers.ts";

/** One control request. */
export interface ControlRequest {
  readonly op: number;
  readonly args: readonly number[];
  /** Bytes for the DATA window (SET_CONFIG). */
  readonly data?: Uint8Array;
  /** Bytes to copy back from the DATA window (GET_CONFIG). */
  readonly readBack?: number;
}

/** The device's answer. */
export interface ControlReply {
  readonly result: number;
  readonly ret: readonly number[];
  /** `readBack` bytes of the DATA window, or an empty array. */
  readonly data: Uint8Array;
}

/** A control procedure: yields requests, receives replies, returns a value. */
export type Procedure<T> = Generator<ControlRequest, T, ControlReply>;

/** Where a queue's ring goes (addresses in guest memory) and how it is used. */
export interface QueueSetup {
  readonly size: number;
  readonly descAddr: number;
  readonly availAddr: number;
  readonly usedAddr: number;
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

/** Device identity from DEVICE_INFO. */
export interface DeviceInfo {
  readonly deviceId: number;
  readonly numQueues: number;
  readonly configSize: number;
}

/**
 * What {@link InprocDriverTransport.waitUsed} saw: used buffers; a
 * configuration change notification (consumed: read status / config, e.g.
 * for DEVICE_NEEDS_RESET); or the timeout.
 */
export type WaitResult = "used" | "config" | "timeout";

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

const EVENT_IDX = featureBit(VIRTIO_RING_F_EVENT_IDX);
const INDIRECT_DESC = featureBit(VIRTIO_RING_F_INDIRECT_DESC);
const EMPTY = new Uint8Array(0);

function* call(
  op: number,
  args: readonly number[] = [],
  extra: { data?: Uint8Array; readBack?: number } = {},
): Procedure<ControlReply> {
  return yield { op, args, ...extra };
}

/** A 64-bit guest address as two u32 words (lo, hi). */
const split = (v: number): [number, number] => [v >>> 0, Math.floor(v / 0x1_0000_0000) >>> 0];

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
  readonly #data: Uint8Array;
  readonly #devBell: Doorbell;
  readonly #drvBell: Doorbell;
  readonly #spin: number;
  readonly #controlTimeout: number;
  readonly #queues: (DriverQueue<unknown> | null)[];
  #seq: number;
  #features = 0n;
  #configSeen: number;

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
    this.#spin = spin;
    this.#controlTimeout = options.controlTimeoutMs ?? 10_000;
    this.#i32 = i32;
    this.#layout = layout;
    this.#data = new Uint8Array(shared.registers, layout.data * 4, INPROC_DATA_BYTES);
    this.#devBell = new Doorbell(i32, layout.devWake, layout.devSleeping);
    this.#drvBell = new Doorbell(i32, layout.drvWake, layout.drvSleeping);
    this.#queues = new Array<DriverQueue<unknown> | null>(layout.numQueues).fill(null);
    // Atomics.load (SeqCst): continue the request sequence from the last one sent (REQ_SEQ is ours).
    this.#seq = Atomics.load(i32, W.REQ_SEQ);
    // Atomics.load (SeqCst): configuration changes before this point are not news.
    this.#configSeen = Atomics.load(i32, layout.configSeq);
  }

  /** Number of queues of the device. */
  get numQueues(): number {
    return this.#layout.numQueues;
  }

  /** The features negotiated by the last {@link negotiate} (0n before). */
  get features(): bigint {
    return this.#features;
  }

  /** The DriverQueue set up for `index`, or null. */
  queue<T>(index: number): DriverQueue<T> | null {
    return (this.#queues[index] ?? null) as DriverQueue<T> | null;
  }

  // ---- running procedures ----

  /** Runs a procedure, blocking on each reply (`Atomics.wait`: a worker). */
  run<T>(proc: Procedure<T>): T {
    let step = proc.next();
    while (step.done !== true) step = proc.next(this.request(step.value));
    return step.value;
  }

  /** Runs a procedure without blocking (`Atomics.waitAsync`). */
  async runAsync<T>(proc: Procedure<T>): Promise<T> {
    let step = proc.next();
    while (step.done !== true) step = proc.next(await this.requestAsync(step.value));
    return step.value;
  }

  /**
   * Sends one control request and blocks until the device answers.
   *
   * @throws {VirtioError} `INPROC_TIMEOUT` if no answer within the control timeout.
   */
  request(req: ControlRequest): ControlReply {
    const seq = this.#post(req);
    const a = this.#i32;
    const deadline = Date.now() + this.#controlTimeout;
    for (;;) {
      // Atomics.load (SeqCst, acquire): RESULT/RET/DATA written before the device's ACK store are visible.
      const ack = Atomics.load(a, W.ACK_SEQ);
      if (ack === seq) return this.#collect(req);
      const left = deadline - Date.now();
      if (left <= 0) throw this.#timeout(req);
      // Atomics.wait: sleep while ACK_SEQ still holds `ack` (the device notifies after its store).
      Atomics.wait(a, W.ACK_SEQ, ack, left);
    }
  }

  /** {@link request} without blocking the thread. */
  async requestAsync(req: ControlRequest): Promise<ControlReply> {
    const seq = this.#post(req);
    const a = this.#i32;
    const deadline = Date.now() + this.#controlTimeout;
    for (;;) {
      // Atomics.load (SeqCst, acquire): as in request().
      const ack = Atomics.load(a, W.ACK_SEQ);
      if (ack === seq) return this.#collect(req);
      const left = deadline - Date.now();
      if (left <= 0) throw this.#timeout(req);
      await waitWordAsync(a, W.ACK_SEQ, ack, left);
    }
  }

  #post(req: ControlRequest): number {
    const a = this.#i32;
    if (req.args.length > NUM_ARGS) throw new RangeError(`at most ${NUM_ARGS} control arguments`);
    const seq = (this.#seq + 1) | 0;
    this.#seq = seq;
    a[W.OP] = req.op;
    for (let i = 0; i < NUM_ARGS; i++) a[W.ARG0 + i] = req.args[i] ?? 0;
    if (req.data !== undefined) {
      if (req.data.length > INPROC_DATA_BYTES)
        throw new RangeError(`at most ${INPROC_DATA_BYTES} data bytes per request`);
      this.#data.set(req.data);
    }
    // Atomics.store (SeqCst, release): OP, ARG and DATA written above are visible to a device that sees this seq.
    Atomics.store(a, W.REQ_SEQ, seq);
    this.#devBell.ring();
    return seq;
  }

  #collect(req: ControlRequest): ControlReply {
    const a = this.#i32;
    const ret: number[] = [];
    for (let i = 0; i < NUM_RETS; i++) ret.push(a[W.RET0 + i]! >>> 0);
    const n = Math.min(req.readBack ?? 0, INPROC_DATA_BYTES);
    const data = n === 0 ? EMPTY : this.#data.slice(0, n);
    return { result: a[W.RESULT]!, ret, data };
  }

  #timeout(req: ControlRequest): VirtioError {
    return new VirtioError(
      ErrorCode.INPROC_TIMEOUT,
      `device did not answer control op ${req.op} within ${this.#controlTimeout} ms`,
      { op: req.op, timeoutMs: this.#controlTimeout },
    );
  }

  // ---- procedures (run them with run() or runAsync()) ----

  /** DEVICE_INFO: device id, queue count, configuration size. */
  *deviceInfo(): Procedure<DeviceInfo> {
    const r = yield* call(Op.DEVICE_INFO);
    return { deviceId: r.ret[0]!, numQueues: r.ret[1]!, configSize: r.ret[2]! };
  }

  /** Reads the device status. */
  *readStatus(): Procedure<number> {
    return (yield* call(Op.GET_STATUS)).ret[0]!;
  }

  /** Writes the device status (acknowledged once applied). */
  *writeStatus(value: number): Procedure<void> {
    yield* call(Op.SET_STATUS, [value]);
  }

  /** The device's offered features (64 bits). */
  *deviceFeatures(): Procedure<bigint> {
    const lo = (yield* call(Op.GET_DEVICE_FEATURES, [0])).ret[0]!;
    const hi = (yield* call(Op.GET_DEVICE_FEATURES, [1])).ret[0]!;
    return (BigInt(hi) << 32n) | BigInt(lo);
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
    yield* this.writeStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE);
    yield* this.writeStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    const offered = yield* this.deviceFeatures();
    const accepted = wanted & offered;
    yield* call(Op.SET_DRIVER_FEATURES, [0, Number(accepted & 0xffff_ffffn)]);
    yield* call(Op.SET_DRIVER_FEATURES, [1, Number(accepted >> 32n)]);
    const withOk =
      VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
    yield* this.writeStatus(withOk);
    const status = yield* this.readStatus();
    if ((status & VIRTIO_CONFIG_S_FEATURES_OK) === 0) {
      yield* this.writeStatus(status | VIRTIO_CONFIG_S_FAILED);
      throw new VirtioError(
        ErrorCode.FEATURES_REFUSED,
        `device refused FEATURES_OK for features 0x${accepted.toString(16)}`,
        { features: accepted, status },
      );
    }
    this.#features = accepted;
    return accepted;
  }

  /**
   * Sets up queue `index` (§3.1.1 step 7): creates its DriverQueue over the
   * given guest memory (zeroing the ring), tells the device size and
   * addresses, and makes it ready. Call after {@link negotiate}.
   *
   * @throws {RangeError} for a bad setup (DriverQueue's checks, index).
   * @throws {VirtioError} `QUEUE_CONFIG` if the device refused it.
   */
  *setupQueue<T>(index: number, setup: QueueSetup): Procedure<DriverQueue<T>> {
    if (!Number.isInteger(index) || index < 0 || index >= this.#layout.numQueues)
      throw new RangeError(`queue index ${index} is not in 0..${this.#layout.numQueues - 1}`);
    const f = this.#features;
    const indirect = (f & INDIRECT_DESC) !== 0n && setup.indirectArena !== undefined;
    const dq = new DriverQueue<T>(this.memory, {
      size: setup.size,
      descAddr: setup.descAddr,
      availAddr: setup.availAddr,
      usedAddr: setup.usedAddr,
      eventIdx: (f & EVENT_IDX) !== 0n,
      indirect,
      ...(indirect ? { indirectArena: setup.indirectArena } : {}),
    });
    const sized = (yield* call(Op.SET_QUEUE_SIZE, [index, setup.size])).ret[0] === 1;
    const placed =
      (yield* call(Op.SET_QUEUE_ADDRS, [
        index,
        ...split(setup.descAddr),
        ...split(setup.availAddr),
        ...split(setup.usedAddr),
      ])).ret[0] === 1;
    const ready = (yield* call(Op.SET_QUEUE_READY, [index, 1])).ret[0] === 1;
    if (!sized || !placed || !ready)
      throw new VirtioError(ErrorCode.QUEUE_CONFIG, `device refused queue ${index} setup`, {
        index,
        size: setup.size,
      });
    this.#queues[index] = dq;
    return dq;
  }

  /** §3.1.1 step 8: DRIVER_OK. Returns the status read back. */
  *start(): Procedure<number> {
    yield* this.writeStatus(
      VIRTIO_CONFIG_S_ACKNOWLEDGE |
        VIRTIO_CONFIG_S_DRIVER |
        VIRTIO_CONFIG_S_FEATURES_OK |
        VIRTIO_CONFIG_S_DRIVER_OK,
    );
    return yield* this.readStatus();
  }

  /**
   * Resets the device (§2.4: write 0; the device answers once it reads 0)
   * and forgets the queues (their DriverQueues may be reused after
   * `detachAll()`).
   */
  *reset(): Procedure<void> {
    yield* this.writeStatus(0);
    this.#queues.fill(null);
    this.#features = 0n;
  }

  /**
   * Reads `length` configuration bytes at `offset`, retrying until the
   * generation is the same before and after (§2.5.1), at most 16 times.
   */
  *readConfig(offset: number, length: number): Procedure<Uint8Array> {
    const out = new Uint8Array(length);
    for (let attempt = 0; attempt < 16; attempt++) {
      const before = (yield* call(Op.GET_CONFIG_GENERATION)).ret[0];
      for (let done = 0; done < length; done += INPROC_DATA_BYTES) {
        const n = Math.min(INPROC_DATA_BYTES, length - done);
        const r = yield* call(Op.GET_CONFIG, [offset + done, n], { readBack: n });
        out.set(r.data, done);
      }
      const after = (yield* call(Op.GET_CONFIG_GENERATION)).ret[0];
      if (before === after) break;
    }
    return out;
  }

  /** Writes configuration bytes; returns how many the device took. */
  *writeConfig(offset: number, bytes: Uint8Array): Procedure<number> {
    let taken = 0;
    for (let done = 0; done < bytes.length; done += INPROC_DATA_BYTES) {
      const chunk = bytes.subarray(done, done + INPROC_DATA_BYTES);
      const r = yield* call(Op.SET_CONFIG, [offset + done, chunk.length], { data: chunk });
      if (r.result !== Result.OK) break;
      taken += r.ret[0]!;
    }
    return taken;
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
    // Atomics.add (SeqCst RMW): this queue's kick count; ordered after the avail.idx store in kickNeeded().
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
    const dq = this.#queue(index);
    if (dq.hasUsed()) return "used";
    if (this.#spinOn(dq)) return "used";
    const deadline = Date.now() + timeoutMs;
    const bell = this.#drvBell;
    for (;;) {
      const seen = bell.read();
      const r = this.#beforeSleep(dq, delayed);
      if (r !== null) return r;
      const left = deadline - Date.now();
      if (left <= 0) return "timeout";
      this.stats.sleeps++;
      bell.sleep(seen, left);
    }
  }

  /** {@link waitUsed} without blocking the thread. */
  async waitUsedAsync(index: number, timeoutMs: number, delayed = false): Promise<WaitResult> {
    const dq = this.#queue(index);
    if (dq.hasUsed()) return "used";
    if (this.#spinOn(dq)) return "used";
    const deadline = Date.now() + timeoutMs;
    const bell = this.#drvBell;
    for (;;) {
      const seen = bell.read();
      const r = this.#beforeSleep(dq, delayed);
      if (r !== null) return r;
      const left = deadline - Date.now();
      if (left <= 0) return "timeout";
      this.stats.sleeps++;
      await bell.sleepAsync(seen, left);
    }
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
    if (this.#anyUsed()) return "used";
    const deadline = Date.now() + timeoutMs;
    const bell = this.#drvBell;
    for (;;) {
      const seen = bell.read();
      const r = this.#beforeSleepAll();
      if (r !== null) return r;
      const left = deadline - Date.now();
      if (left <= 0) return "timeout";
      this.stats.sleeps++;
      bell.sleep(seen, left);
    }
  }

  /** {@link waitUsedAny} without blocking the thread. */
  async waitUsedAnyAsync(timeoutMs: number): Promise<WaitResult> {
    if (this.#anyUsed()) return "used";
    const deadline = Date.now() + timeoutMs;
    const bell = this.#drvBell;
    for (;;) {
      const seen = bell.read();
      const r = this.#beforeSleepAll();
      if (r !== null) return r;
      const left = deadline - Date.now();
      if (left <= 0) return "timeout";
      this.stats.sleeps++;
      await bell.sleepAsync(seen, left);
    }
  }

  #anyUsed(): boolean {
    for (const dq of this.#queues) if (dq !== null && dq.hasUsed()) return true;
    return false;
  }

  /** {@link #beforeSleep} for every set-up queue. */
  #beforeSleepAll(): WaitResult | null {
    let used = false;
    for (const dq of this.#queues) {
      if (dq === null) continue;
      // Arm every queue before deciding (each arm re-reads its used.idx: the race check).
      if (!dq.enableCallbacks()) used = true;
      if (dq.broken !== null) throw dq.broken;
    }
    if (used) return "used";
    if (this.configChanged()) return "config";
    return null;
  }

  /** True (once per change) if the device sent a configuration change notification since the last call. */
  configChanged(): boolean {
    // Atomics.load (SeqCst): the device's CONFIG_SEQ add follows the change it announces.
    const now = Atomics.load(this.#i32, this.#layout.configSeq);
    if (now === this.#configSeen) return false;
    this.#configSeen = now;
    return true;
  }

  #queue(index: number): DriverQueue<unknown> {
    const dq = this.#queues[index];
    if (dq === null || dq === undefined) throw new RangeError(`queue ${index} is not set up`);
    return dq;
  }

  #spinOn(dq: DriverQueue<unknown>): boolean {
    for (let i = 0; i < this.#spin; i++) {
      if (dq.hasUsed()) {
        this.stats.spinHits++;
        return true;
      }
    }
    return false;
  }

  /** Arms used-buffer notifications and re-checks; non-null means "don't sleep". */
  #beforeSleep(dq: DriverQueue<unknown>, delayed: boolean): WaitResult | null {
    // enableCallbacks(Delayed) re-arms used_event / clears NO_INTERRUPT, then re-reads used.idx (the race check).
    if (!(delayed ? dq.enableCallbacksDelayed() : dq.enableCallbacks())) return "used";
    if (dq.broken !== null) throw dq.broken;
    if (this.configChanged()) return "config";
    return null;
  }
}

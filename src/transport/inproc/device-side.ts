/**
 * The device end of the in-process transport: serves a {@link VirtioDevice}
 * to a driver thread over the register block (./registers.ts). VIRTIO 1.2
 * §2.3 (notifications), §3.1 (initialization, driven by control requests),
 * §4.2 (virtio-mmio, whose register semantics the control operations follow).
 *
 * The loop, on the device's thread:
 *
 * 1. read the device doorbell counter (before looking for work: no lost wake-up);
 * 2. answer a pending control request (one at a time; SET_STATUS is
 *    acknowledged only once applied, a reset only when status reads 0);
 * 3. for every queue whose KICK counter moved, hand the kick to the device;
 * 4. in busy-poll mode, spin a bounded number of rounds looking at the
 *    doorbell and the queues' available rings (`hasAvailable`);
 * 5. sleep on the doorbell while its counter still holds the value of step 1
 *    (`Atomics.wait` in "block" mode, `Atomics.waitAsync` in "async" mode),
 *    at most `sleepSliceMs`, then start over.
 *
 * Used-buffer and configuration-change notifications go the other way as
 * CALL / CONFIG_SEQ counters plus the driver doorbell. Whether to send a
 * used-buffer notification is the ring's answer (`needsNotification`, via
 * {@link VirtioDevice.signalUsed}); this file never looks inside a ring.
 *
 * @module
 */
import { isVirtioError } from "../../errors.ts";
import type { DeviceNotifier, VirtioDevice } from "../../device/virtio-device.ts";
import { Doorbell } from "./doorbell.ts";
import {
  INPROC_DATA_BYTES,
  NUM_RETS,
  Op,
  Result,
  W,
  openRegisters,
  type RegisterLayout,
} from "./registers.ts";

/** How {@link InprocDeviceTransport.run} waits. */
export interface DeviceLoopOptions {
  /**
   * "block" (default): sleep with `Atomics.wait` — a worker whose device
   * completes requests synchronously (or through promises it awaits).
   * "async": sleep with `Atomics.waitAsync`, keeping the event loop free —
   * the main thread, or a device whose I/O completes in callbacks.
   */
  readonly wait?: "block" | "async";
  /** Busy-poll rounds before sleeping (0, the default: sleep at once). */
  readonly spin?: number;
  /** Longest single sleep in ms before the loop looks again (default 1000). */
  readonly sleepSliceMs?: number;
}

/** Counters of the device end. */
export interface DeviceTransportStats {
  /** Kick counter changes seen (kicks can coalesce: several rings, one change seen). */
  kicksSeen: number;
  /** Queues found with work by busy-polling. */
  polledWork: number;
  /** Control requests answered. */
  controlRequests: number;
  /** Used-buffer notifications rung (after the ring said "notify"). */
  callsRung: number;
  /** Of those, how many needed `Atomics.notify` (the driver slept). */
  callWakeups: number;
  /** Times the device loop slept. */
  sleeps: number;
}

type Handler = (t: InprocDeviceTransport, a: Int32Array, data: Uint8Array) => Rets | Promise<Rets>;
type Rets = readonly number[];

const u32 = (v: number | undefined): number => (v ?? 0) >>> 0;
const u64 = (lo: number | undefined, hi: number | undefined): number =>
  u32(hi) * 0x1_0000_0000 + u32(lo);
const arg = (a: Int32Array, i: number): number => a[W.ARG0 + i]!;

/** Control handlers by OP (a table of small functions). The driver is untrusted: every value is checked by the device. */
const HANDLERS: Readonly<Record<number, Handler>> = {
  [Op.DEVICE_INFO]: (t) => [t.device.deviceId, t.device.numQueues, t.device.configSize],
  [Op.GET_DEVICE_FEATURES]: (t, a) => [t.device.readDeviceFeaturesWord(arg(a, 0))],
  [Op.SET_DRIVER_FEATURES]: (t, a) => [
    t.device.writeDriverFeaturesWord(arg(a, 0), u32(arg(a, 1))) ? 1 : 0,
  ],
  [Op.GET_STATUS]: (t) => [t.device.readStatus()],
  [Op.SET_STATUS]: (t, a) => t.device.writeStatus(u32(arg(a, 0))).then(() => []),
  [Op.GET_QUEUE_MAX]: (t, a) => [t.device.queueMaxSize(arg(a, 0))],
  [Op.SET_QUEUE_SIZE]: (t, a) => [t.device.setQueueSize(arg(a, 0), u32(arg(a, 1))) ? 1 : 0],
  [Op.SET_QUEUE_ADDRS]: (t, a) => [
    t.device.setQueueAddresses(
      arg(a, 0),
      u64(arg(a, 1), arg(a, 2)),
      u64(arg(a, 3), arg(a, 4)),
      u64(arg(a, 5), arg(a, 6)),
    )
      ? 1
      : 0,
  ],
  [Op.SET_QUEUE_READY]: (t, a) => [t.device.setQueueReady(arg(a, 0), arg(a, 1) !== 0) ? 1 : 0],
  [Op.GET_CONFIG]: (t, a, data) => {
    const len = Math.min(u32(arg(a, 1)), INPROC_DATA_BYTES);
    t.device.readConfig(u32(arg(a, 0)), data.subarray(0, len));
    return [t.device.configGeneration];
  },
  [Op.SET_CONFIG]: (t, a, data) => {
    const len = Math.min(u32(arg(a, 1)), INPROC_DATA_BYTES);
    // Copy first: the driver may keep scribbling on the shared window while the device reads it.
    return [t.device.writeConfig(u32(arg(a, 0)), data.slice(0, len))];
  },
  [Op.GET_CONFIG_GENERATION]: (t) => [t.device.configGeneration],
};

/**
 * Serves one {@link VirtioDevice} over a register block. Construct it on the
 * device's thread; it becomes the device's notifier.
 *
 * @example
 * ```ts
 * // in the device worker, given `shared` (an InprocShared) from the parent:
 * const memory = GuestMemory.fromTransferable(shared.memory);
 * const device = new VirtioDevice(new MyBackend(), { memory });
 * await new InprocDeviceTransport(shared.registers, device).run({ wait: "block" });
 * ```
 */
export class InprocDeviceTransport implements DeviceNotifier {
  readonly device: VirtioDevice;
  readonly stats: DeviceTransportStats = {
    kicksSeen: 0,
    polledWork: 0,
    controlRequests: 0,
    callsRung: 0,
    callWakeups: 0,
    sleeps: 0,
  };
  readonly #i32: Int32Array;
  readonly #layout: RegisterLayout;
  readonly #data: Uint8Array;
  /** Rung by the driver; this side sleeps on it. */
  readonly #devBell: Doorbell;
  /** Rung by this side; the driver sleeps on it. */
  readonly #drvBell: Doorbell;
  readonly #lastKick: Int32Array;
  #lastReq: number;
  #pending: Promise<void> | null = null;

  /**
   * @throws {RangeError} if `registers` is not a register block or was made
   *   for a different number of queues than the device has.
   */
  constructor(registers: SharedArrayBuffer, device: VirtioDevice) {
    const { i32, layout } = openRegisters(registers);
    if (layout.numQueues !== device.numQueues)
      throw new RangeError(
        `register block has ${layout.numQueues} queues, the device ${device.numQueues}`,
      );
    this.device = device;
    this.#i32 = i32;
    this.#layout = layout;
    this.#data = new Uint8Array(registers, layout.data * 4, INPROC_DATA_BYTES);
    this.#devBell = new Doorbell(i32, layout.devWake, layout.devSleeping);
    this.#drvBell = new Doorbell(i32, layout.drvWake, layout.drvSleeping);
    this.#lastKick = new Int32Array(layout.numQueues);
    for (let q = 0; q < layout.numQueues; q++) {
      // Atomics.load (SeqCst): start from the current kick counts (kicks before the device existed are moot).
      this.#lastKick[q] = Atomics.load(i32, layout.kickBase + q);
    }
    // Atomics.load (SeqCst): the last request answered; a newer REQ_SEQ is a new request.
    this.#lastReq = Atomics.load(i32, W.ACK_SEQ);
    device.setNotifier(this);
  }

  /** DeviceNotifier: a used-buffer notification for queue `index`. */
  notifyQueue(index: number): void {
    // Atomics.add (SeqCst RMW): count the call for this queue; ordered after the used.idx store it announces.
    Atomics.add(this.#i32, this.#layout.callBase + index, 1);
    this.stats.callsRung++;
    if (this.#drvBell.ring()) this.stats.callWakeups++;
  }

  /** DeviceNotifier: a configuration change notification (also DEVICE_NEEDS_RESET). */
  notifyConfig(): void {
    // Atomics.add (SeqCst RMW): count the change; ordered after the config / status update it announces.
    Atomics.add(this.#i32, this.#layout.configSeq, 1);
    this.#drvBell.ring();
  }

  /** True once the host asked the loop to end ({@link stopInprocDevice}). */
  get stopRequested(): boolean {
    // Atomics.load (SeqCst): the host's STOP store.
    return Atomics.load(this.#i32, W.STOP) !== 0;
  }

  /**
   * One pass without sleeping: answers a control request, delivers kicks,
   * and with `poll` looks at the available rings of live queues. Returns true
   * if it found anything to do. For embedding in a loop the caller owns (an
   * emulator's main loop); {@link run} is the ready-made one.
   */
  service(poll = false): boolean {
    let work = this.#serviceControl();
    const a = this.#i32;
    const base = this.#layout.kickBase;
    const last = this.#lastKick;
    for (let q = 0; q < last.length; q++) {
      // Atomics.load (SeqCst, acquire): the driver's avail.idx store preceded its kick-counter add.
      const k = Atomics.load(a, base + q);
      if (k === last[q]) continue;
      last[q] = k;
      this.stats.kicksSeen++;
      work = true;
      this.device.queueNotify(q);
    }
    if (poll && this.#pollQueues()) work = true;
    return work;
  }

  /**
   * Runs the device loop until {@link stopInprocDevice} is called. Every
   * sleep is bounded by `sleepSliceMs`.
   *
   * @throws {RangeError} for bad options.
   */
  async run(options: DeviceLoopOptions = {}): Promise<void> {
    const spin = options.spin ?? 0;
    const slice = options.sleepSliceMs ?? 1000;
    const block = (options.wait ?? "block") === "block";
    if (!Number.isInteger(spin) || spin < 0)
      throw new RangeError(`spin ${spin} must be a non-negative integer`);
    if (!(slice > 0)) throw new RangeError(`sleepSliceMs ${slice} must be positive`);
    const bell = this.#devBell;
    while (!this.stopRequested) {
      const seen = bell.read();
      if (this.service(spin > 0)) {
        if (this.#pending !== null) await this.#pending;
        continue;
      }
      if (this.#pending !== null) {
        await this.#pending;
        continue;
      }
      if (spin > 0 && this.#spin(seen, spin)) continue;
      this.stats.sleeps++;
      if (block) bell.sleep(seen, slice);
      else await bell.sleepAsync(seen, slice);
    }
  }

  /** Busy-polls up to `rounds` times; true as soon as something shows up. */
  #spin(seen: number, rounds: number): boolean {
    const bell = this.#devBell;
    for (let i = 0; i < rounds; i++) {
      if (bell.read() !== seen) return true;
      if (this.#pollQueues()) return true;
    }
    return false;
  }

  /** Hands every live queue with available buffers to the device (as a kick would). */
  #pollQueues(): boolean {
    const dev = this.device;
    if (!dev.live) return false;
    const queues = dev.queues;
    let work = false;
    for (let q = 0; q < queues.length; q++) {
      const dq = queues[q];
      if (dq === null || dq === undefined) continue;
      let ready: boolean;
      try {
        ready = dq.hasAvailable();
      } catch (e) {
        // A ring violation: the queue (hence the device) is broken already.
        if (!isVirtioError(e)) throw e;
        return true;
      }
      if (ready) {
        this.stats.polledWork++;
        work = true;
        dev.queueNotify(q);
      }
    }
    return work;
  }

  /** Answers a new control request, if there is one and none is in progress. */
  #serviceControl(): boolean {
    if (this.#pending !== null) return false;
    const a = this.#i32;
    // Atomics.load (SeqCst, acquire): OP, ARG and DATA written by the driver before its REQ_SEQ store are visible.
    const req = Atomics.load(a, W.REQ_SEQ);
    if (req === this.#lastReq) return false;
    this.stats.controlRequests++;
    const handler = HANDLERS[a[W.OP]!];
    if (handler === undefined) {
      this.#reply(req, Result.UNKNOWN_OP, []);
      return true;
    }
    let rets: Rets | Promise<Rets>;
    try {
      rets = handler(this, a, this.#data);
    } catch {
      // Device code threw on driver input (a device bug): answer FAILED, keep serving.
      this.#reply(req, Result.FAILED, []);
      return true;
    }
    if (rets instanceof Promise) {
      this.#lastReq = req;
      this.#pending = rets.then(
        (r) => this.#reply(req, Result.OK, r),
        () => this.#reply(req, Result.FAILED, []),
      );
    } else {
      this.#reply(req, Result.OK, rets);
    }
    return true;
  }

  #reply(req: number, result: number, rets: Rets): void {
    const a = this.#i32;
    a[W.RESULT] = result;
    for (let i = 0; i < NUM_RETS; i++) a[W.RET0 + i] = rets[i] ?? 0;
    this.#lastReq = req;
    this.#pending = null;
    // Atomics.store (SeqCst, release): RESULT, RET and DATA written above are visible to a driver that sees the ack.
    Atomics.store(a, W.ACK_SEQ, req);
    // Atomics.notify: wake the driver waiting on ACK_SEQ (control path: always notify).
    Atomics.notify(a, W.ACK_SEQ);
  }
}

/**
 * Asks the device loop of a register block to end (from any thread): sets
 * STOP and rings the device doorbell.
 */
export function stopInprocDevice(registers: SharedArrayBuffer): void {
  const { i32, layout } = openRegisters(registers);
  // Atomics.store (SeqCst): STOP is visible to the loop before the doorbell below wakes it.
  Atomics.store(i32, W.STOP, 1);
  // Atomics.add (SeqCst RMW): move the doorbell counter so a loop about to sleep does not.
  Atomics.add(i32, layout.devWake, 1);
  // Atomics.notify: wake the loop if it sleeps (rare: always notify).
  Atomics.notify(i32, layout.devWake);
}

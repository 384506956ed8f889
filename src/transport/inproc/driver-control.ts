/**
 * The driver end of the in-process transport's control channel: one request
 * at a time through the register block's request and reply lines (the part
 * virtio-mmio's register accesses play, VIRTIO 1.2 §4.2.2), answered by the
 * device thread.
 *
 * Control operations are written once, as *procedures* (generators that
 * yield control requests), and run either blocking ({@link ControlPort.run}:
 * `Atomics.wait`, a worker) or without blocking ({@link ControlPort.runAsync}:
 * `Atomics.waitAsync`, the main thread). Every request waits at most the
 * control timeout for its answer.
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../../errors.ts";
import type { Doorbell } from "./doorbell.ts";
import { waitWordAsync } from "./doorbell.ts";
import { INPROC_DATA_BYTES, NUM_ARGS, NUM_RETS, W } from "./registers.ts";

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

const EMPTY = new Uint8Array(0);

/** A procedure of one request: yields it and returns the reply. */
export function* call(
  op: number,
  args: readonly number[] = [],
  extra: { data?: Uint8Array; readBack?: number } = {},
): Procedure<ControlReply> {
  return yield { op, args, ...extra };
}

/** Sends control requests and collects the device's replies. */
export class ControlPort {
  readonly #i32: Int32Array;
  readonly #data: Uint8Array;
  readonly #devBell: Doorbell;
  readonly #timeoutMs: number;
  #seq: number;

  /**
   * @param i32 the register block.
   * @param data its DATA window.
   * @param devBell the device doorbell, rung after each request.
   * @param timeoutMs longest wait for one answer.
   */
  constructor(i32: Int32Array, data: Uint8Array, devBell: Doorbell, timeoutMs: number) {
    this.#i32 = i32;
    this.#data = data;
    this.#devBell = devBell;
    this.#timeoutMs = timeoutMs;
    // Atomics.load (SeqCst): continue the request sequence from the last one sent (REQ_SEQ is ours).
    this.#seq = Atomics.load(i32, W.REQ_SEQ);
  }

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
    const deadline = Date.now() + this.#timeoutMs;
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
    const deadline = Date.now() + this.#timeoutMs;
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
      `device did not answer control op ${req.op} within ${this.#timeoutMs} ms`,
      { op: req.op, timeoutMs: this.#timeoutMs },
    );
  }
}

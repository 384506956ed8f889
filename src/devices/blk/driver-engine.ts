/**
 * The virtio-blk driver's work loop: it submits waiting operations into
 * their queues, publishes and kicks in batches, takes completions, settles
 * operations, and fails queues and the whole device. VIRTIO 1.2 §5.2.6
 * (requests), §2.7.13 / §2.8.21 (supplying buffers and notifying), §2.7.14 /
 * §2.8.22 (receiving used buffers), §2.7.10 / §2.7.7 / §2.8.10
 * (notification suppression, through the ring, split or packed).
 *
 * **Completions** are taken in batches: disable callbacks → drain the used
 * ring → enable callbacks → drain again if more arrived (§2.7.10's race).
 * Requests submitted in the same turn are staged and published together
 * with one `kickNeeded()` check (unless `batchKicks` is false).
 *
 * **Failure.** A queue the device breaks (a bad used entry: the ring turns
 * *broken*) rejects everything on it with `QUEUE_BROKEN` (cause: the ring's
 * error); other queues go on. DEVICE_NEEDS_RESET rejects everything with
 * `DEVICE_BROKEN`; a device reset first takes the completions the device
 * made, then rejects the rest with `DEVICE_RESET` and returns the rings to
 * their initial state. No promise settles twice; none is left pending by a
 * failure. An operation settles once every request of it is back, so a
 * settled promise never has the device still writing into the caller's
 * buffers.
 *
 * Threading: one thread. Re-entrant calls from transport callbacks (a
 * device that completes synchronously inside `notify`) only leave work for
 * the outer loop.
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../../errors.ts";
import { VIRTIO_BLK_T_GET_ID } from "../../spec/blk.ts";
import type { FairBounce } from "./driver-bounce.ts";
import { buildQueueStates, type QueueState } from "./driver-queues.ts";
import type { BlkOp, BlkSlot } from "./driver-request.ts";
import type { BlkResultReader } from "./driver-result.ts";
import type { DriverRing } from "../../ring/driver-ring.ts";
import { BLOCKED, DROPPED, STARTED, type BlkSubmitter } from "./driver-submit.ts";
import type {
  BlkDriverState,
  BlkDriverStats,
  BlkDriverTransport,
  BlkRequestOptions,
} from "./driver-types.ts";

/** What the engine runs on, built by the driver. */
export interface BlkEngineParts {
  readonly rings: readonly DriverRing<number>[];
  /** Request slots of each queue, laid out from `slotsAddr`. */
  readonly slotsPerQueue: readonly number[];
  readonly slotsAddr: number;
  readonly transport: BlkDriverTransport;
  readonly batchKicks: boolean;
  readonly onQueueBroken: ((queueIndex: number, err: VirtioError) => void) | undefined;
  readonly stats: BlkDriverStats;
  readonly bounce: FairBounce;
  readonly submitter: BlkSubmitter;
  readonly results: BlkResultReader;
}

/** Runs a driver's operations over its queues (see the module header). */
export class BlkDriverEngine {
  readonly queues: readonly QueueState[];
  readonly #transport: BlkDriverTransport;
  readonly #batchKicks: boolean;
  readonly #onQueueBroken: ((i: number, err: VirtioError) => void) | undefined;
  readonly #stats: BlkDriverStats;
  readonly #bounce: FairBounce;
  readonly #submitter: BlkSubmitter;
  readonly #results: BlkResultReader;
  /** #pump for the bounce line (made once). */
  readonly #retry: (q: QueueState) => void;
  #state: BlkDriverState = "live";
  #stateError: VirtioError | null = null;
  #rr = 0;
  #busy = false;
  #pendingOps = 0;

  constructor(p: BlkEngineParts) {
    this.#transport = p.transport;
    this.#batchKicks = p.batchKicks;
    this.#onQueueBroken = p.onQueueBroken;
    this.#stats = p.stats;
    this.#bounce = p.bounce;
    this.#submitter = p.submitter;
    this.#results = p.results;
    this.#retry = (q) => this.#pump(q);
    this.queues = buildQueueStates(p.rings, p.slotsPerQueue, p.slotsAddr, (q) => this.#kickTask(q));
  }

  get state(): BlkDriverState {
    return this.#state;
  }

  /** Operations not settled yet. */
  get pending(): number {
    return this.#pendingOps;
  }

  /** Throws why no operation is accepted any more (broken or reset). */
  checkAccepting(): void {
    if (this.#stateError !== null) throw this.#stateError;
  }

  /** @throws {RangeError} for a queue index the driver does not have. */
  queueAt(index: number): QueueState {
    const q = this.queues[index];
    if (!Number.isInteger(index) || q === undefined)
      throw new RangeError(`queue ${index} is not in 0..${this.queues.length - 1}`);
    return q;
  }

  /** The caller's queue, or the next live one round robin; a broken queue's error if none is usable. */
  pickQueue(options: BlkRequestOptions | undefined): QueueState {
    if (options?.queue !== undefined) {
      const q = this.queueAt(options.queue);
      if (q.broken !== null) throw q.broken;
      return q;
    }
    const n = this.queues.length;
    for (let k = 0; k < n; k++) {
      const q = this.queues[(this.#rr + k) % n]!;
      if (q.broken === null) {
        this.#rr = (q.index + 1) % n;
        return q;
      }
    }
    throw this.queues[0]!.broken!;
  }

  /** Queues an accepted operation on `q` and runs the loop. */
  start(q: QueueState, op: BlkOp): void {
    this.#stats.operations++;
    this.#pendingOps++;
    q.waiting.push(op);
    q.pumpPending = true;
    this.#work();
  }

  /** A used-buffer notification for queue `index`. */
  processUsed(index: number): void {
    this.queueAt(index).usedPending = true;
    this.#work();
  }

  /** DEVICE_NEEDS_RESET (or a transport failure): everything pending rejects with `DEVICE_BROKEN`. */
  markDeviceBroken(cause?: Error): void {
    if (this.#state !== "live") return;
    const err = new VirtioError(
      ErrorCode.DEVICE_BROKEN,
      `virtio-blk device is broken and needs a reset${cause === undefined ? "" : `: ${cause.message}`}`,
    );
    if (cause !== undefined) err.cause = cause;
    this.#state = "broken";
    this.#stateError = err;
    for (const q of this.queues) this.#failQueue(q, err, true);
  }

  /** The device was reset: takes its completions, rejects the rest with `DEVICE_RESET`, resets the rings. */
  reset(): void {
    if (this.#state === "reset") return;
    if (this.#state === "live" && !this.#busy)
      for (const q of this.queues) if (q.broken === null) this.#drain(q);
    const err = new VirtioError(
      ErrorCode.DEVICE_RESET,
      "virtio-blk device was reset before the request completed",
    );
    this.#state = "reset";
    this.#stateError = err;
    for (const q of this.queues) {
      this.#failQueue(q, err, false);
      q.ring.detachAll();
      q.freeAllSlots();
    }
    this.#bounce.clear();
  }

  // ---- the work loop ----

  /**
   * Runs deferred work until none is left: used buffers to take, waiting
   * operations to submit, kicks to send, bounce waiters to serve. Re-entrant
   * calls (from transport callbacks) only leave work for the outer loop.
   */
  #work(): void {
    if (this.#busy) return;
    this.#busy = true;
    try {
      for (;;) {
        let any = false;
        for (const q of this.queues) {
          if (q.usedPending) {
            q.usedPending = false;
            any = true;
            this.#drain(q);
          }
          if (q.pumpPending) {
            q.pumpPending = false;
            any = true;
            this.#pump(q);
          }
          if (q.kickDue) {
            q.kickDue = false;
            any = true;
            this.#kick(q);
          }
        }
        if (this.#bounce.freed) {
          this.#bounce.freed = false;
          any = true;
          this.#bounce.serve(this.queues, this.#retry);
        }
        if (!any) break;
      }
    } finally {
      this.#busy = false;
    }
  }

  #kickTask(q: QueueState): void {
    q.kickScheduled = false;
    q.kickDue = true;
    this.#work();
  }

  #kickSoon(q: QueueState): void {
    if (!this.#batchKicks) {
      q.kickDue = true;
      return;
    }
    if (q.kickScheduled) return;
    q.kickScheduled = true;
    queueMicrotask(q.kickTask);
  }

  /** Publishes what was staged and notifies the device if the ring asks for it. */
  #kick(q: QueueState): void {
    if (this.#state !== "live" || q.broken !== null) return;
    const t = this.#transport;
    try {
      let rang: boolean;
      if (t.kick !== undefined) rang = t.kick(q.index);
      else if ((rang = q.ring.kickNeeded())) t.notify!(q.index);
      if (rang) this.#stats.kicks++;
      else this.#stats.kicksSuppressed++;
    } catch (e) {
      this.markDeviceBroken(e instanceof Error ? e : new Error(String(e)));
    }
  }

  /** Submits waiting operations of `q` until one has to wait. */
  #pump(q: QueueState): void {
    let staged = 0;
    // Bounded: each round submits a request or drops a finished operation, else stops.
    while (this.#state === "live" && q.broken === null) {
      const op = q.waiting.peek();
      if (op === undefined) break;
      if (op.settled || op.error !== null || op.allSubmitted) {
        q.waiting.shift();
        continue;
      }
      const r = this.#submitter.submit(q, op);
      if (r === BLOCKED) break;
      if (r === STARTED) staged++;
      else if (r === DROPPED) this.#breakQueue(q, q.ring.broken!);
    }
    if (staged > 0) this.#kickSoon(q);
  }

  // ---- completions ----

  /** disable callbacks → take every used buffer → enable callbacks → again if more arrived. */
  #drain(q: QueueState): void {
    if (this.#state !== "live" || q.broken !== null) return;
    const ring = q.ring;
    let taken = 0;
    ring.disableCallbacks();
    for (;;) {
      // Bounded by the requests outstanding (the ring refuses more used entries than that).
      while (ring.nextUsed()) {
        taken++;
        this.#complete(q, ring.usedToken, ring.usedLen);
      }
      if (ring.broken !== null) {
        this.#breakQueue(q, ring.broken);
        return;
      }
      // §2.7.10 race: a buffer used between the last nextUsed and re-enabling raised no notification.
      if (ring.enableCallbacks()) break;
    }
    if (taken > 0) q.pumpPending = true;
  }

  #complete(q: QueueState, token: number, usedLen: number): void {
    const slot = q.slots[token];
    const op = slot?.op;
    if (slot === undefined || op === null || op === undefined) return;
    this.#stats.completions++;
    const err = this.#results.result(slot, op, usedLen);
    this.#releaseSlot(q, slot, false);
    this.#requestDone(op, err);
  }

  /** Frees a slot's bounce run; the slot returns to the free stack, or stays held (broken ring). */
  #releaseSlot(q: QueueState, slot: BlkSlot, hold: boolean): void {
    if (slot.bounceAddr >= 0) {
      this.#bounce.release(slot.bounceAddr, slot.bounceBytes);
      slot.bounceAddr = -1;
      slot.bounceBytes = 0;
    }
    slot.op = null;
    if (hold) slot.held = true;
    else q.freeSlots.push(slot.index);
  }

  #requestDone(op: BlkOp, err: Error | null): void {
    op.inFlight--;
    if (err !== null && op.error === null) op.error = err;
    this.#maybeSettle(op);
  }

  #maybeSettle(op: BlkOp): void {
    if (op.settled || op.inFlight > 0 || (!op.allSubmitted && op.error === null)) return;
    op.settled = true;
    this.#pendingOps--;
    if (op.error !== null) op.reject(op.error);
    else op.resolve(op.type === VIRTIO_BLK_T_GET_ID ? op.result : undefined);
  }

  // ---- failure ----

  #breakQueue(q: QueueState, ringErr: VirtioError): void {
    if (q.broken !== null) return;
    const err = new VirtioError(
      ErrorCode.QUEUE_BROKEN,
      `virtio-blk queue ${q.index} is broken (${ringErr.code}): ${ringErr.message}`,
      { queue: q.index, reason: ringErr.code },
    );
    err.cause = ringErr;
    q.broken = err;
    this.#failQueue(q, err, true);
    try {
      this.#onQueueBroken?.(q.index, ringErr);
    } catch {
      // The embedder's callback must not disturb the driver.
    }
  }

  /**
   * Rejects everything on `q` with `err`: requests in the ring (their slots
   * stay held while the ring may still hold them) and waiting operations.
   * Bounce memory goes back to the pool at once.
   */
  #failQueue(q: QueueState, err: VirtioError, hold: boolean): void {
    this.#bounce.leave(q);
    const ops: BlkOp[] = [];
    for (const slot of q.slots) {
      const op = slot.op;
      if (op === null) continue;
      this.#releaseSlot(q, slot, hold);
      op.inFlight--;
      op.error ??= err;
      ops.push(op);
    }
    for (const op of q.waiting.drain()) {
      op.error ??= err;
      ops.push(op);
    }
    for (const op of ops) this.#maybeSettle(op);
    if (this.#bounce.freed && !this.#busy) this.#work();
  }
}

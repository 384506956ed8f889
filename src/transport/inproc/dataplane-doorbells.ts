/**
 * A dataplane runtime's doorbells for one queue of the in-process transport.
 * VIRTIO 1.2 §2.3 (available- and used-buffer notifications) over the
 * register block of ./registers.ts.
 *
 * Kicks: the driver bumps the queue's KICK counter. The worker takes the
 * queue's kicks itself: it sets KICK_ROUTE_DIRECT (so the driver does not
 * also wake the control thread), reads the counter *before* looking for work,
 * and then waits with `Atomics.waitAsync` while the counter still holds that
 * value, with KICK_ROUTE_WAITING raised so the driver rings the word with
 * `Atomics.notify`. The worker's event loop stays free for I/O completions.
 *
 * No lost kick: the driver adds to KICK and then loads the route word; the
 * worker raises WAITING and then compares KICK inside `Atomics.waitAsync`.
 * Both sequentially consistent (a Dekker pair): either the driver sees
 * WAITING and notifies, or the worker sees the new count and does not wait.
 *
 * Calls: the CALL counter plus the driver doorbell, as the device end of the
 * transport does (device-side.ts `notifyQueue`).
 *
 * @module
 */
import type { QueueDoorbells } from "../../dataplane/seams.ts";
import { Doorbell, waitWordAsync } from "./doorbell.ts";
import { KICK_ROUTE_DIRECT, KICK_ROUTE_WAITING, openRegisters } from "./registers.ts";

/** `Atomics.waitAsync` where the runtime has it (lib ES2023 lacks the type). */
type WaitAsync = (
  a: Int32Array,
  index: number,
  value: number,
) => { async: false; value: "not-equal" | "timed-out" } | { async: true; value: Promise<string> };

const waitAsyncImpl = (Atomics as unknown as { waitAsync?: WaitAsync }).waitAsync;

/** Longest wait in the fallback for runtimes without `Atomics.waitAsync` (it polls). */
const FALLBACK_SLICE_MS = 1000;

/** Options of {@link InprocQueueDoorbells}. */
export interface InprocDoorbellOptions {
  /** Runs `fn` on a later event-loop task (default `setTimeout(fn, 0)`; Node: `setImmediate`). */
  readonly schedule?: (fn: () => void) => void;
}

/**
 * Queue `queue`'s kick and call doorbells on a register block, for the
 * dataplane worker that runs the queue.
 *
 * @example
 * ```ts
 * const bells = new InprocQueueDoorbells(registers, 0);
 * bells.start(() => engine.kick());   // and the engine's notify: () => bells.call()
 * bells.stop();                        // at reset, before engine.stop()
 * ```
 */
export class InprocQueueDoorbells implements QueueDoorbells {
  readonly #a: Int32Array;
  readonly #kickWord: number;
  readonly #routeWord: number;
  readonly #callWord: number;
  readonly #drvBell: Doorbell;
  readonly #schedule: (fn: () => void) => void;
  /** Bumped by start and stop: a wait loop of an older start ends without touching the route word. */
  #gen = 0;
  #running = false;
  wakeups = 0;
  calls = 0;

  /**
   * @throws {RangeError} if `registers` is not a register block or has no queue `queue`.
   */
  constructor(registers: SharedArrayBuffer, queue: number, options: InprocDoorbellOptions = {}) {
    const { i32, layout } = openRegisters(registers);
    if (!Number.isInteger(queue) || queue < 0 || queue >= layout.numQueues)
      throw new RangeError(`queue ${queue} is not in 0..${layout.numQueues - 1}`);
    this.#a = i32;
    this.#kickWord = layout.kickBase + queue;
    this.#routeWord = layout.kickRouteBase + queue;
    this.#callWord = layout.callBase + queue;
    this.#drvBell = new Doorbell(i32, layout.drvWake, layout.drvSleeping);
    this.#schedule = options.schedule ?? ((fn) => void setTimeout(fn, 0));
  }

  start(onKick: () => void): void {
    if (this.#running) throw new TypeError("doorbells already started");
    this.#running = true;
    const gen = ++this.#gen;
    // Atomics.or (SeqCst RMW): from now on the driver skips the control thread's doorbell for this queue.
    Atomics.or(this.#a, this.#routeWord, KICK_ROUTE_DIRECT);
    void this.#loop(onKick, gen);
  }

  call(): void {
    this.calls++;
    // Atomics.add (SeqCst RMW): count the call; ordered after the used.idx store it announces.
    Atomics.add(this.#a, this.#callWord, 1);
    this.#drvBell.ring();
  }

  stop(): void {
    if (!this.#running) return;
    this.#running = false;
    this.#gen++;
    // Atomics.and (SeqCst RMW): kicks go back to the control thread's doorbell; no more notifies here.
    Atomics.and(this.#a, this.#routeWord, ~(KICK_ROUTE_DIRECT | KICK_ROUTE_WAITING));
    // Atomics.notify: end our own pending wait at once (only this worker waits on the word).
    Atomics.notify(this.#a, this.#kickWord);
  }

  /** read count → handle → raise WAITING → wait while the count is unchanged → lower WAITING. */
  async #loop(onKick: () => void, gen: number): Promise<void> {
    const a = this.#a;
    const kickWord = this.#kickWord;
    while (gen === this.#gen) {
      // Atomics.load (SeqCst): read the kick count before looking for work, so a later kick is seen.
      const seen = Atomics.load(a, kickWord);
      this.wakeups++;
      onKick();
      if (gen !== this.#gen) return;
      // Atomics.or (SeqCst RMW): raise WAITING before the compare in the wait (Dekker pair with the driver).
      Atomics.or(a, this.#routeWord, KICK_ROUTE_WAITING);
      let changed: boolean;
      if (waitAsyncImpl !== undefined) {
        // Atomics.waitAsync: atomically compares KICK with `seen`; resolves on the driver's (or stop's) notify.
        const w = waitAsyncImpl(a, kickWord, seen);
        changed = !w.async && w.value === "not-equal";
        if (w.async) await w.value;
      } else {
        changed = (await waitWordAsync(a, kickWord, seen, FALLBACK_SLICE_MS)) === "not-equal";
      }
      // A newer start owns the route word now; an older loop must not clear its WAITING bit.
      if (gen !== this.#gen) return;
      // Atomics.and (SeqCst RMW): lower WAITING; a driver that sees it clear skips Atomics.notify.
      Atomics.and(a, this.#routeWord, ~KICK_ROUTE_WAITING);
      // The count had moved before we could wait: yield a task so completions are not starved.
      if (changed) await new Promise<void>((resolve) => this.#schedule(resolve));
    }
  }
}

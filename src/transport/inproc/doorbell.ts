/**
 * A doorbell between two threads: a wake counter plus a "sleeping" flag in a
 * shared Int32Array. The in-process transport's kicks (driver → device) and
 * calls / configuration changes (device → driver) are doorbells. VIRTIO 1.2
 * §2.3 (notifications): the transport only carries them; whether to send one
 * is the ring's answer (`kickNeeded` / `needsNotification`).
 *
 * No lost wake-up: the ringer bumps the counter (Atomics.add) and then looks
 * at the flag; the sleeper reads the counter *before* it checks for work,
 * raises the flag, and sleeps only while the counter still holds the value
 * it read (`Atomics.wait` compares atomically). With sequentially consistent
 * atomics on both sides (a Dekker pair: ringer add → load flag, sleeper
 * store flag → compare counter) either the ringer sees the flag and wakes
 * the sleeper, or the sleeper sees the new count and does not sleep. Every
 * wait also carries a timeout chosen by the caller.
 *
 * The flag lets a ringer skip `Atomics.notify` (a lock and maybe a syscall)
 * when the other side is running: one sleeper per doorbell.
 *
 * @module
 */

/** `Atomics.waitAsync`, where the runtime has it (typed here: lib ES2023 lacks it). */
type WaitAsync = (
  a: Int32Array,
  index: number,
  value: number,
  timeout?: number,
) =>
  | { async: false; value: "not-equal" | "timed-out" }
  | { async: true; value: Promise<"ok" | "timed-out"> };

const waitAsyncImpl = (Atomics as unknown as { waitAsync?: WaitAsync }).waitAsync;

/** Result of a sleep: woken (or spurious), the counter had moved, or the timeout expired. */
export type SleepResult = "ok" | "not-equal" | "timed-out";

/** One doorbell: `wake` counter word and `sleeping` flag word of a shared Int32Array. */
export class Doorbell {
  readonly #i32: Int32Array;
  readonly #wake: number;
  readonly #sleeping: number;
  /** Times `ring` called Atomics.notify (the other side was asleep). */
  notifies = 0;
  /** Times this side went to sleep. */
  sleeps = 0;

  constructor(i32: Int32Array, wakeIndex: number, sleepingIndex: number) {
    this.#i32 = i32;
    this.#wake = wakeIndex;
    this.#sleeping = sleepingIndex;
  }

  /**
   * Bumps the counter and wakes the other side if it sleeps. Returns true if
   * `Atomics.notify` was called.
   */
  ring(): boolean {
    const a = this.#i32;
    // Atomics.add (SeqCst RMW): everything this thread wrote before (ring index, queue counters) is visible
    // to a thread that sees the new count.
    Atomics.add(a, this.#wake, 1);
    // Atomics.load (SeqCst): after the add in the single total order (Dekker pair with the sleeper's flag
    // store → counter compare), so a sleeper that missed the new count is seen here.
    if (Atomics.load(a, this.#sleeping) === 0) return false;
    this.notifies++;
    // Atomics.notify: wakes the waiter on the counter word (it re-checks for work).
    Atomics.notify(a, this.#wake);
    return true;
  }

  /** The counter now: read it before looking for work, then pass it to {@link sleep}. */
  read(): number {
    // Atomics.load (SeqCst): later loads of ring indexes / queue counters are not hoisted above it.
    return Atomics.load(this.#i32, this.#wake);
  }

  /**
   * Sleeps while the counter still equals `seen`, at most `timeoutMs`
   * (blocking: workers only, where `Atomics.wait` is allowed).
   */
  sleep(seen: number, timeoutMs: number): SleepResult {
    const a = this.#i32;
    this.sleeps++;
    // Atomics.store (SeqCst): raise the flag before the counter compare inside Atomics.wait (the sleeper's
    // half of the Dekker pair).
    Atomics.store(a, this.#sleeping, 1);
    // Atomics.wait: atomically compares the counter with `seen` and sleeps only if equal.
    const r = Atomics.wait(a, this.#wake, seen, timeoutMs);
    // Atomics.store (SeqCst): lower the flag; a ringer seeing 0 from now on skips the notify.
    Atomics.store(a, this.#sleeping, 0);
    return r;
  }

  /**
   * {@link sleep} without blocking the thread (`Atomics.waitAsync`; the main
   * thread, or a worker that must keep its event loop running). Falls back
   * to a timer poll where `Atomics.waitAsync` is missing.
   */
  async sleepAsync(seen: number, timeoutMs: number): Promise<SleepResult> {
    const a = this.#i32;
    this.sleeps++;
    // Atomics.store (SeqCst): as in sleep(): raise the flag before the counter compare.
    Atomics.store(a, this.#sleeping, 1);
    try {
      return await waitWordAsync(a, this.#wake, seen, timeoutMs);
    } finally {
      // Atomics.store (SeqCst): lower the flag.
      Atomics.store(a, this.#sleeping, 0);
    }
  }
}

/**
 * Resolves once word `index` of `a` no longer holds `value` (or on a notify),
 * or after `timeoutMs`: `Atomics.waitAsync` where the runtime has it, else a
 * 1 ms timer poll.
 */
export async function waitWordAsync(
  a: Int32Array,
  index: number,
  value: number,
  timeoutMs: number,
): Promise<SleepResult> {
  if (waitAsyncImpl === undefined) return pollUntilChanged(a, index, value, timeoutMs);
  // Atomics.waitAsync: atomically compares the word with `value`; resolves on notify or timeout.
  const w = waitAsyncImpl(a, index, value, timeoutMs);
  if (!w.async) return w.value;
  // A pending waitAsync does not keep Node's event loop alive, so a timer does until it settles. The timer's
  // own bound must not be the wait's: if it fired first, the loop could end before waitAsync times out.
  const keepAlive = setTimeout(() => {}, 0x7fff_ffff);
  try {
    return await w.value;
  } finally {
    clearTimeout(keepAlive);
  }
}

/** Fallback for runtimes without Atomics.waitAsync: checks the counter every millisecond. */
async function pollUntilChanged(
  a: Int32Array,
  index: number,
  seen: number,
  timeoutMs: number,
): Promise<SleepResult> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    // Atomics.load (SeqCst): a fresh look at the counter.
    if (Atomics.load(a, index) !== seen) return "not-equal";
    if (Date.now() >= deadline) return "timed-out";
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

/**
 * How the driver end of the in-process transport waits for used buffers:
 * busy-poll the used ring (if `spin` > 0), then re-enable used-buffer
 * notifications (`enableCallbacks`, which closes the race with the device)
 * and sleep on the driver doorbell, bounded by a timeout. A configuration
 * change notification ends a wait too. VIRTIO 1.2 §2.3 (notifications),
 * §2.7.14 / §2.8.22 (receiving used buffers; the ring logic itself is the
 * DriverRing's, split or packed).
 *
 * One sleeper: the driver doorbell's sleeping flag assumes a single driver
 * thread.
 *
 * @module
 */
import type { DriverRing } from "../../ring/driver-ring.ts";
import type { Doorbell } from "./doorbell.ts";

/**
 * What a wait saw: used buffers; a configuration change notification
 * (consumed: read status / config, e.g. for DEVICE_NEEDS_RESET); or the
 * timeout.
 */
export type WaitResult = "used" | "config" | "timeout";

/** The counters a waiter keeps (part of the transport's statistics). */
export interface WaitStats {
  /** Used buffers found while busy-polling. */
  spinHits: number;
  /** Times the driver slept waiting for used buffers. */
  sleeps: number;
}

/** Waits on the driver doorbell for one queue or for all of them. */
export class UsedWaiter {
  readonly #i32: Int32Array;
  readonly #configSeq: number;
  readonly #drvBell: Doorbell;
  readonly #spin: number;
  readonly #stats: WaitStats;
  #configSeen: number;

  /**
   * @param i32 the register block.
   * @param configSeq index of its CONFIG_SEQ word.
   * @param drvBell the driver doorbell.
   * @param spin busy-poll rounds before sleeping.
   * @param stats where spin hits and sleeps are counted.
   */
  constructor(
    i32: Int32Array,
    configSeq: number,
    drvBell: Doorbell,
    spin: number,
    stats: WaitStats,
  ) {
    this.#i32 = i32;
    this.#configSeq = configSeq;
    this.#drvBell = drvBell;
    this.#spin = spin;
    this.#stats = stats;
    // Atomics.load (SeqCst): configuration changes before this point are not news.
    this.#configSeen = Atomics.load(i32, configSeq);
  }

  /** Blocks until `dq` has used buffers, a configuration change, or the timeout. */
  wait(dq: DriverRing<unknown>, timeoutMs: number, delayed: boolean): WaitResult {
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
      this.#stats.sleeps++;
      bell.sleep(seen, left);
    }
  }

  /** {@link wait} without blocking the thread. */
  async waitAsync(
    dq: DriverRing<unknown>,
    timeoutMs: number,
    delayed: boolean,
  ): Promise<WaitResult> {
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
      this.#stats.sleeps++;
      await bell.sleepAsync(seen, left);
    }
  }

  /** Blocks until any of `queues` has used buffers, a configuration change, or the timeout. */
  waitAny(queues: readonly (DriverRing<unknown> | null)[], timeoutMs: number): WaitResult {
    if (anyUsed(queues)) return "used";
    const deadline = Date.now() + timeoutMs;
    const bell = this.#drvBell;
    for (;;) {
      const seen = bell.read();
      const r = this.#beforeSleepAll(queues);
      if (r !== null) return r;
      const left = deadline - Date.now();
      if (left <= 0) return "timeout";
      this.#stats.sleeps++;
      bell.sleep(seen, left);
    }
  }

  /** {@link waitAny} without blocking the thread. */
  async waitAnyAsync(
    queues: readonly (DriverRing<unknown> | null)[],
    timeoutMs: number,
  ): Promise<WaitResult> {
    if (anyUsed(queues)) return "used";
    const deadline = Date.now() + timeoutMs;
    const bell = this.#drvBell;
    for (;;) {
      const seen = bell.read();
      const r = this.#beforeSleepAll(queues);
      if (r !== null) return r;
      const left = deadline - Date.now();
      if (left <= 0) return "timeout";
      this.#stats.sleeps++;
      await bell.sleepAsync(seen, left);
    }
  }

  /** True (once per change) if the device sent a configuration change notification since the last call. */
  configChanged(): boolean {
    // Atomics.load (SeqCst): the device's CONFIG_SEQ add follows the change it announces.
    const now = Atomics.load(this.#i32, this.#configSeq);
    if (now === this.#configSeen) return false;
    this.#configSeen = now;
    return true;
  }

  #spinOn(dq: DriverRing<unknown>): boolean {
    for (let i = 0; i < this.#spin; i++) {
      if (dq.hasUsed()) {
        this.#stats.spinHits++;
        return true;
      }
    }
    return false;
  }

  /** Arms used-buffer notifications and re-checks; non-null means "don't sleep". */
  #beforeSleep(dq: DriverRing<unknown>, delayed: boolean): WaitResult | null {
    // enableCallbacks(Delayed) re-arms the event (split: used_event / NO_INTERRUPT; packed: the Driver Event
    // Suppression structure), then re-reads what the device published (the race check).
    if (!(delayed ? dq.enableCallbacksDelayed() : dq.enableCallbacks())) return "used";
    if (dq.broken !== null) throw dq.broken;
    if (this.configChanged()) return "config";
    return null;
  }

  /** {@link #beforeSleep} for every set-up queue. */
  #beforeSleepAll(queues: readonly (DriverRing<unknown> | null)[]): WaitResult | null {
    let used = false;
    for (const dq of queues) {
      if (dq === null) continue;
      // Arm every queue before deciding (each arm re-reads what its device published: the race check).
      if (!dq.enableCallbacks()) used = true;
      if (dq.broken !== null) throw dq.broken;
    }
    if (used) return "used";
    if (this.configChanged()) return "config";
    return null;
  }
}

function anyUsed(queues: readonly (DriverRing<unknown> | null)[]): boolean {
  for (const dq of queues) if (dq !== null && dq.hasUsed()) return true;
  return false;
}

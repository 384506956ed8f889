/**
 * The virtio-blk engines' watchdog: a timer that ticks while queues run and
 * asks each engine to report requests that make no progress, chains no kick
 * announced, and completions whose notification the driver missed. A
 * request stuck in the backing store, or a lost wake-up in either
 * direction, then shows in the log with its queue (and request) and is
 * resolved where it can be, instead of as a silent hang. Not spec-defined
 * (VIRTIO 1.2 §2.7.13 lets a device process available buffers without a
 * notification, which is what the lost-kick check does; §2.7.7.2 lets it
 * send a notification the driver's used_event did not ask for, which is
 * what the lost-call check does).
 *
 * @module
 */
import { blkTypeName } from "./log.ts";
import type { BlkQueueEngine } from "./queue-engine.ts";
import type { Logger } from "../../log.ts";

/** Default: a request in flight this long is logged as stalled. */
export const DEFAULT_STALL_SECONDS = 30;

/**
 * The tick: a sixth of the stall time, at most half a second, so that a lost
 * kick or a lost notification costs the guest at most about a second.
 */
const MAX_TICK_SECONDS = 0.5;

interface Watched {
  readonly queue: number;
  readonly logger: Logger;
  /** Available chains were seen unpopped while idle at the previous tick. */
  idleWithWork: boolean;
  /** Idle at the previous tick with a notification owed to the driver. */
  owedCall: boolean;
}

/** One timer for the engines of a device. */
export class EngineWatchdog {
  readonly #engines = new Map<BlkQueueEngine, Watched>();
  readonly #tickSeconds: number;
  /** Ticks a request may stay in flight before it is logged as stalled. */
  readonly #ticksPerStall: number;
  #timer: ReturnType<typeof setInterval> | null = null;
  #tick = 0;

  /** @throws {RangeError} unless `stallSeconds` is a positive number. */
  constructor(stallSeconds: number = DEFAULT_STALL_SECONDS) {
    if (!(stallSeconds > 0 && stallSeconds <= 86_400))
      throw new RangeError(`stallSeconds must be in (0, 86400], got ${stallSeconds}`);
    this.#tickSeconds = Math.min(stallSeconds / 6, MAX_TICK_SECONDS);
    this.#ticksPerStall = Math.ceil(stallSeconds / this.#tickSeconds);
  }

  /** Watches `engine` (queue `queue`) until it stops; the timer runs while any engine is watched. */
  add(engine: BlkQueueEngine, queue: number, logger: Logger): void {
    this.#engines.set(engine, { queue, logger, idleWithWork: false, owedCall: false });
    if (this.#timer !== null) return;
    this.#timer = setInterval(() => this.#onTick(), this.#tickSeconds * 1000);
    // Never keeps a thread alive on its own.
    (this.#timer as { unref?: () => void }).unref?.();
  }

  /** Stops watching everything. */
  stop(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
    this.#engines.clear();
  }

  #onTick(): void {
    const tick = ++this.#tick;
    for (const [e, w] of this.#engines) {
      if (e.stopped || e.halted) {
        this.#engines.delete(e);
        continue;
      }
      e.tick = tick;
      this.#stalled(e, w, tick);
      this.#lostKick(e, w);
      this.#lostCall(e, w);
    }
    if (this.#engines.size === 0) this.stop();
  }

  /** Logs, once each, the requests in flight for a stall period or more, and what they wait for. */
  #stalled(e: BlkQueueEngine, w: Watched, tick: number): void {
    for (const req of e.active) {
      if (req.stallLogged || tick - req.submittedTick < this.#ticksPerStall) continue;
      req.stallLogged = true;
      const head = req.chain!.head;
      const seconds = Math.round((tick - req.submittedTick) * this.#tickSeconds);
      w.logger.warn(
        `virtio-blk vq ${w.queue} req ${head}: ${blkTypeName(req.type)} sector ${req.sector} len ${req.length} in flight for ${seconds} s, waiting for the backing store`,
        { queue: w.queue, req: head },
      );
    }
  }

  /** Chains available while the engine was idle at two ticks in a row: no kick came; process them. */
  #lostKick(e: BlkQueueEngine, w: Watched): void {
    const work = e.idle && e.hasAvailable();
    if (work && w.idleWithWork) {
      w.logger.warn(
        `virtio-blk vq ${w.queue}: available requests were not picked up (no kick arrived); processing them`,
        { queue: w.queue },
      );
      e.kick();
    }
    w.idleWithWork = work;
  }

  /**
   * Idle at two ticks in a row while the driver still asks to hear of
   * published work: its notification was lost (see
   * DeviceQueue.notificationOwed); send it.
   */
  #lostCall(e: BlkQueueEngine, w: Watched): void {
    const owed = e.idle && !w.idleWithWork && e.notificationOwed();
    if (owed && w.owedCall) {
      w.logger.warn(
        `virtio-blk vq ${w.queue}: the driver is still waiting for completed requests (a notification was lost); notifying it`,
        { queue: w.queue },
      );
      e.nudge();
      w.owedCall = false;
      return;
    }
    w.owedCall = owed;
  }
}

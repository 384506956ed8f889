/**
 * Adaptive polling of one queue, the way QEMU's AioContext polls
 * (`poll-max-ns`, util/aio-posix.c): when a queue runs dry, its handler
 * keeps the driver's notifications off (VIRTIO 1.2 §2.7.10: the device
 * "MAY" suppress them) and looks at the available ring on each event-loop
 * turn for up to a window of time; new work found there needs no kick. When
 * the window ends empty, notifications go back on and the queue sleeps until
 * a kick. The window adapts to the driver: a wait that a longer window
 * would have covered (up to the maximum) grows it; a wait longer than the
 * maximum shrinks it, down to no polling at all — so an idle queue costs
 * nothing, and polling happens only right after work. Each turn yields to
 * the event loop, so completions keep arriving while it polls.
 *
 * Device-neutral: a handler gives it "is there work" and "run the queue".
 *
 * @module
 */

/** The first window after none, in ns (QEMU's initial `poll_ns`). */
const START_NS = 4_000;
/** Factors the window grows and shrinks by (QEMU's defaults: grow 2, shrink 2). */
const GROW = 2;
const SHRINK = 2;

/** Options of {@link QueuePoller}. */
export interface QueuePollerOptions {
  /** The longest window in ns; 0 turns polling off. */
  readonly maxNs: number;
  /** True if the driver made work available (reads the available index only). */
  readonly hasWork: () => boolean;
  /** Runs the queue: after work was found, or after the window ended empty. */
  readonly resume: () => void;
  /** Runs `fn` on a later event-loop turn. */
  readonly schedule: (fn: () => void) => void;
  /** The clock in ns (default `performance.now()`). */
  readonly now?: () => number;
}

type PollState = "off" | "polling" | "expired";

/** The poller of one queue. */
export class QueuePoller {
  readonly #o: QueuePollerOptions;
  readonly #now: () => number;
  #window = 0;
  #state: PollState = "off";
  #startedAt = 0;
  /** When the queue last ran dry (null while it has work). */
  #dryAt: number | null = null;
  #stopped = false;
  /** Polls that found work / windows that ended empty. */
  hits = 0;
  misses = 0;

  constructor(o: QueuePollerOptions) {
    if (!(Number.isInteger(o.maxNs) && o.maxNs >= 0))
      throw new RangeError(`poll maximum must be a whole number of ns >= 0, got ${o.maxNs}`);
    this.#o = o;
    this.#now = o.now ?? (() => performance.now() * 1e6);
  }

  /** The current window in ns. */
  get windowNs(): number {
    return this.#window;
  }

  /** True while a window is open (the queue is not asleep and not idle). */
  get polling(): boolean {
    return this.#state === "polling";
  }

  /**
   * The queue ran dry with notifications off. True: a window is open (keep
   * them off; `resume` follows). False: enable notifications and sleep.
   */
  idle(): boolean {
    if (this.#o.maxNs === 0) return false; // off: no clock reads on the data path
    if (this.#state === "polling") return true;
    if (this.#state === "expired" || this.#window === 0 || this.#stopped) {
      this.#state = "off";
      this.#dryAt ??= this.#now();
      return false;
    }
    this.#state = "polling";
    this.#startedAt = this.#now();
    this.#dryAt ??= this.#startedAt;
    this.#o.schedule(() => this.#turn());
    return true;
  }

  /** A kick woke the queue: the wait since it ran dry adjusts the window. */
  kicked(): void {
    if (this.#dryAt === null) return;
    this.#adjust(this.#now() - this.#dryAt);
    this.#dryAt = null;
  }

  /** No more polling (the queue stops); a pending turn does nothing. */
  stop(): void {
    this.#stopped = true;
    this.#state = "off";
  }

  #turn(): void {
    if (this.#state !== "polling") return;
    let work: boolean;
    try {
      work = this.#o.hasWork();
    } catch {
      work = true; // a broken ring: the handler's run finds and reports it
    }
    const now = this.#now();
    if (work) {
      this.hits++;
      this.#state = "off";
      this.#dryAt = null; // found within the window: the window fits
      this.#o.resume();
    } else if (now - this.#startedAt < this.#window) {
      this.#o.schedule(() => this.#turn());
    } else {
      this.misses++;
      this.#state = "expired";
      this.#o.resume();
    }
  }

  /** QEMU's rule: grow when a longer window would have caught the wait, shrink when none would. */
  #adjust(waitNs: number): void {
    const max = this.#o.maxNs;
    if (waitNs <= this.#window) return;
    if (waitNs <= max)
      this.#window = Math.min(max, this.#window === 0 ? START_NS : this.#window * GROW);
    else {
      this.#window = Math.floor(this.#window / SHRINK);
      if (this.#window < START_NS) this.#window = 0;
    }
  }
}

/**
 * Per-queue virtio-blk processing with a bounded number of requests in
 * flight. VIRTIO 1.2 §2.7.10 (notification suppression: disable → drain →
 * enable → re-check), §2.7.8 (used ring), §5.2.6 (requests), and
 * docs/conformance.md "Lifecycle".
 *
 * On a kick: disable notifications → pop chains while fewer than
 * `maxInFlight` are in flight → parse → submit to the backing store
 * (completions may arrive in any order) → on completion write data and
 * status through the chain cursors, `addUsed`, publish and notify (batched
 * through `needsNotification`) → when the queue is drained, enable
 * notifications and re-check for work that slipped in — or first, with a
 * poll window (`pollMaxNs`), keep them off and poll the available ring for a
 * while (../../dataplane/adaptive-poll.ts).
 *
 * When the in-flight limit is reached the engine stops popping and leaves
 * notifications disabled; the completion that frees a slot re-runs the loop,
 * so no kick is lost and nothing spins. Each run pops at most `budget`
 * chains, then yields to the event loop (a guest that keeps the ring full of
 * requests answered synchronously cannot starve I/O completions); where
 * yielding is cheap (`setImmediate`) the budget is small, so the driver sees
 * early completions of a long batch and refills the ring in parallel.
 *
 * The engine knows no transport: it is given a queue, a backing store, a
 * policy (usually a {@link BlkDeviceConfig}) and callbacks
 * (./queue-engine-options.ts). Completions are written and published by
 * ./used-publisher.ts.
 *
 * @module
 */
import { QueuePoller } from "../../dataplane/adaptive-poll.ts";
import { nextTask } from "../../dataplane/schedule.ts";
import { ErrorCode, isVirtioError } from "../../errors.ts";
import type { DescriptorChain } from "../../ring/chain.ts";
import { VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK } from "../../spec/blk.ts";
import type { BlkBacking } from "./backing.ts";
import { executeBlkRequest, prepareBlkRequest } from "./execute.ts";
import { type Logger, consoleLogger, errorText } from "../../log.ts";
import { failedLine, invalidLine, popLine, submitLine } from "./log.ts";
import {
  engineLimits,
  type BlkEnginePolicy,
  type BlkQueueEngineOptions,
  type BlkVirtqueue,
} from "./queue-engine-options.ts";
import { BlkRequest } from "./request.ts";
import { BlkUsedPublisher } from "./used-publisher.ts";
import { type BrokenReport, reportBroken } from "./engine-broken.ts";

export {
  DEFAULT_BLK_ENGINE_BUDGET,
  type BlkEnginePolicy,
  type BlkQueueEngineOptions,
  type BlkVirtqueue,
} from "./queue-engine-options.ts";

/**
 * Processes one virtqueue of a virtio-blk device.
 *
 * @example
 * ```ts
 * const engine = new BlkQueueEngine({ queue, queueIndex: 0, backing, policy: config,
 *   notify: () => call(0), onBroken: (e) => device.markBroken(e) });
 * kickFd.on("kick", () => engine.kick());
 * await engine.stop(); // on reset: in-flight requests complete first
 * ```
 */
export class BlkQueueEngine {
  readonly #q: BlkVirtqueue;
  readonly #qi: number;
  readonly #backing: BlkBacking;
  readonly #policy: BlkEnginePolicy;
  readonly #max: number;
  readonly #budget: number;
  readonly #used: BlkUsedPublisher;
  readonly #broken: BrokenReport;
  readonly #log: Logger;
  readonly #schedule: (fn: () => void) => void;
  readonly #poller: QueuePoller;
  /** Idle request objects: one per in-flight slot, plus one for requests answered at once. */
  readonly #free: BlkRequest[] = [];
  #inFlight = 0;
  /** Requests submitted to the backing store and not completed (for the watchdog and abort). */
  readonly #active = new Set<BlkRequest>();
  /** The watchdog's tick (./engine-watchdog.ts); stamped on each submitted request. */
  #tick = 0;
  #running = false;
  #again = false;
  /** Stopped popping because the in-flight limit was reached. */
  #paused = false;
  #continuationScheduled = false;
  #completionsScheduled = false;
  #stopping = false;
  #halted = false;
  #stopped = false;
  readonly #stopWaiters: (() => void)[] = [];

  constructor(o: BlkQueueEngineOptions) {
    const { maxInFlight: max, budget, pollMaxNs } = engineLimits(o);
    this.#q = o.queue;
    this.#qi = o.queueIndex;
    this.#backing = o.backing;
    this.#policy = o.policy;
    this.#max = max;
    this.#budget = budget;
    this.#log = o.logger ?? consoleLogger;
    this.#broken = {
      queue: o.queue,
      queueIndex: o.queueIndex,
      log: this.#log,
      onBroken: o.onBroken,
      memoryFault: o.memoryFault ?? (() => null),
    };
    this.#used = new BlkUsedPublisher({
      queue: o.queue,
      queueIndex: o.queueIndex,
      log: this.#log,
      notify: o.notify ?? null,
      signalUsed: o.signalUsed ?? null,
      fail: (e) => this.#fail(e),
    });
    this.#schedule = o.schedule ?? nextTask;
    this.#poller = new QueuePoller({
      maxNs: pollMaxNs,
      hasWork: () => this.#q.hasAvailable(),
      resume: () => this.#run(),
      schedule: this.#schedule,
    });
    for (let i = 0; i <= max; i++) this.#free.push(new BlkRequest());
  }

  /** Requests submitted to the backing store and not completed yet. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** True once {@link stop} has resolved. */
  get stopped(): boolean {
    return this.#stopped;
  }

  /** True after a ring violation or {@link halt}: nothing more is consumed or completed. */
  get halted(): boolean {
    return this.#halted;
  }

  /** The driver notified the queue (a kick). Spurious kicks are harmless. */
  kick(): void {
    if (this.#stopping || this.#halted) return;
    this.#poller.kicked();
    this.#run();
  }

  /** @internal The queue's poller (its window and counts). */
  get poller(): QueuePoller {
    return this.#poller;
  }

  /**
   * The device is broken (e.g. another queue hit a ring violation): stop
   * consuming and write nothing more to this used ring. Backing I/O already
   * submitted runs to its end; its results are dropped.
   */
  halt(): void {
    this.#halted = true;
    this.#poller.stop();
    this.#maybeStopped();
  }

  /**
   * For reset: stops popping, lets in-flight I/O finish and completes it into
   * the used ring, then resolves. Afterwards the engine writes nothing to
   * guest memory. Idempotent.
   */
  stop(): Promise<void> {
    this.#stopping = true;
    this.#poller.stop();
    if (this.#stopped) return Promise.resolve();
    const done = new Promise<void>((resolve) => this.#stopWaiters.push(resolve));
    this.#maybeStopped();
    return done;
  }

  /**
   * Shutdown with requests stuck in the backing store: completes every
   * request in flight with IOERR now (the driver is told), and drops their
   * results when the backing store settles. A read may still land in its
   * guest buffer afterwards: call only when the driver is going away (the
   * process stops). Returns how many were failed.
   */
  abort(): number {
    const n = this.#active.size;
    for (const req of this.#active) {
      req.aborted = true;
      req.status = VIRTIO_BLK_S_IOERR;
      this.#log.error(failedLine(this.#qi, req, "still in flight at shutdown", false), {
        queue: this.#qi,
        req: req.chain!.head,
      });
      if (!this.#halted) this.#used.add(req); // the status and the used entry
    }
    this.#active.clear();
    this.#inFlight = 0;
    this.#flush();
    this.#maybeStopped();
    return n;
  }

  /** Requests submitted to the backing store and not completed (the watchdog reads them). */
  get active(): ReadonlySet<BlkRequest> {
    return this.#active;
  }

  /** The watchdog's clock: stamped on each request submitted from now on. */
  set tick(tick: number) {
    this.#tick = tick;
  }

  /** True when nothing runs, waits or is in flight: only a kick would start work. */
  get idle(): boolean {
    return (
      !this.#running &&
      !this.#paused &&
      !this.#stopping &&
      !this.#halted &&
      !this.#continuationScheduled &&
      !this.#poller.polling &&
      this.#inFlight === 0
    );
  }

  /** True if the driver waits for a notification for work already published (the watchdog asks when idle). */
  notificationOwed(): boolean {
    return this.#q.notificationOwed?.() ?? false;
  }

  /** Sends the driver a used buffer notification now (one it missed). */
  nudge(): void {
    if (!this.#halted) this.#used.nudge();
  }

  /** True if the driver made chains available that were not popped (a ring violation breaks the device). */
  hasAvailable(): boolean {
    try {
      return this.#q.hasAvailable();
    } catch (e) {
      this.#fail(e);
      return false;
    }
  }

  #maybeStopped(): void {
    if (!(this.#stopping && this.#inFlight === 0) || this.#stopped) return;
    this.#flush();
    this.#stopped = true;
    for (const resolve of this.#stopWaiters.splice(0)) resolve();
  }

  /** disable → drain → enable → re-check, until nothing slipped in. */
  #run(): void {
    if (this.#running) {
      // Re-entered (e.g. a notify callback that kicks synchronously): the outer loop re-checks.
      this.#again = true;
      return;
    }
    this.#running = true;
    try {
      let budget = this.#budget;
      do {
        this.#again = false;
        if (this.#stopping || this.#halted) break;
        this.#q.disableNotification();
        budget = this.#drain(budget);
        this.#flush();
        if (this.#stopping || this.#halted) break;
        if (this.#inFlight >= this.#max) {
          // Resumed by the completion that frees a slot; notifications stay off meanwhile.
          this.#paused = true;
          break;
        }
        if (budget === 0) {
          this.#scheduleContinuation();
          break;
        }
        if (this.#poller.idle()) break; // a poll window: notifications stay off, resume follows
        // §2.7.10: a chain made available between the last pop and this enable raised no kick
        // (notifications were off), so enableNotification re-checks and we poll again.
        if (this.#q.enableNotification()) this.#again = true;
      } while (this.#again);
    } catch (e) {
      this.#fail(e);
    } finally {
      this.#running = false;
    }
  }

  /** Pops and starts chains while slots and budget last; returns the budget left. */
  #drain(budget: number): number {
    while (budget > 0 && this.#inFlight < this.#max) {
      let chain: DescriptorChain | null;
      try {
        chain = this.#q.popAvail();
      } catch (e) {
        this.#fail(e);
        return 0;
      }
      if (chain === null) break;
      budget--;
      this.#start(chain);
      if (this.#halted) return 0;
    }
    return budget;
  }

  #scheduleContinuation(): void {
    if (this.#continuationScheduled) return;
    this.#continuationScheduled = true;
    this.#schedule(() => {
      this.#continuationScheduled = false;
      if (!this.#stopping && !this.#halted) this.#run();
    });
  }

  #start(chain: DescriptorChain): void {
    const trace = this.#log.trace;
    const req = this.#free.pop()!;
    trace?.(popLine(this.#qi, chain));
    let toStore: boolean;
    try {
      toStore = prepareBlkRequest(chain, this.#policy, req);
    } catch (e) {
      req.release();
      this.#free.push(req);
      this.#fail(e);
      return;
    }
    if (!toStore) {
      if (req.status !== VIRTIO_BLK_S_OK) trace?.(invalidLine(this.#qi, req));
      this.#complete(req);
      return;
    }
    trace?.(submitLine(this.#qi, req));
    this.#inFlight++;
    req.submittedTick = this.#tick;
    this.#active.add(req);
    void executeBlkRequest(req, this.#backing, this.#policy).then(() => this.#onDone(req));
  }

  #onDone(req: BlkRequest): void {
    if (req.aborted) {
      // Completed with IOERR already (abort); only now may the request object be reused.
      req.release();
      this.#free.push(req);
      return;
    }
    this.#active.delete(req);
    this.#inFlight--;
    // The request's buffers were unreachable (EFAULT): the memory is gone, not the disk.
    if (isVirtioError(req.error, ErrorCode.MEM_FAULT)) this.#fail(req.error);
    else if (req.status === VIRTIO_BLK_S_IOERR && req.error !== undefined) {
      this.#log.error(failedLine(this.#qi, req, errorText(req.error)), {
        queue: this.#qi,
        req: req.chain!.head,
      });
    }
    this.#complete(req);
    if (!this.#completionsScheduled) {
      this.#completionsScheduled = true;
      // Completions that settle in the same turn are published together, with one notification check.
      queueMicrotask(() => this.#afterCompletions());
    }
  }

  #afterCompletions(): void {
    this.#completionsScheduled = false;
    this.#flush();
    if (this.#stopping || this.#halted) {
      this.#maybeStopped();
      return;
    }
    if (this.#paused && this.#inFlight < this.#max) {
      this.#paused = false;
      this.#run();
    }
  }

  /** Writes the status, adds the used entry (unless halted) and recycles the request. */
  #complete(req: BlkRequest): void {
    if (!this.#halted) this.#used.add(req); // the status and the used entry
    req.release();
    this.#free.push(req);
  }

  /** Publishes what was added and notifies the driver if it asked to be (unless halted). */
  #flush(): void {
    if (!this.#halted) this.#used.flush();
  }

  /** A ring violation or a request without headers: the device is broken. */
  #fail(e: unknown): void {
    if (this.#halted) return;
    this.#halted = true;
    this.#poller.stop();
    reportBroken(this.#broken, e);
    this.#maybeStopped();
  }
}

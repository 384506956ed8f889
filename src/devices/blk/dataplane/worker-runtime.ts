/**
 * The inside of a virtio-blk dataplane worker: opens the disk, builds a
 * {@link DeviceQueue} and a {@link BlkQueueEngine} per started queue, takes
 * the queues' kicks, and stops them for reset. Portable: the thread, the
 * disk, guest memory and doorbells come from a {@link DataplaneWorkerEnv}.
 * VIRTIO 1.2 §5.2 (Block Device), §2.7 (split virtqueues), §2.4 (reset) and
 * docs/conformance.md "Lifecycle" (reset with I/O in flight).
 *
 * Lifecycle of a queue in a worker:
 *
 * 1. `start`: the ring is validated and mapped (DeviceQueue), the engine is
 *    built with the worker's policy, the doorbells start (a first kick at
 *    once picks up work queued before the start).
 * 2. Kicks run the engine's disable → drain → enable → re-check loop; I/O
 *    completes on this thread's event loop; calls go out through the
 *    doorbells when the ring says the driver wants one.
 * 3. `stop`: no more kicks; the engine stops popping, lets in-flight I/O
 *    finish and completes it into the used ring; then the queue is detached
 *    (marked broken, so nothing more can reach guest memory through it) and
 *    the stop is acknowledged with the next available index.
 *
 * A ring violation (or a request with no room for a header or status) halts
 * every engine of this worker and is reported once to the control thread,
 * which makes the device broken and halts the other workers.
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../../../errors.ts";
import type { GuestMemory } from "../../../memory/guest-memory.ts";
import { DeviceQueue } from "../../../ring/device-queue.ts";
import {
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  hasFeature,
} from "../../../spec/virtio.ts";
import type { MessageEndpoint } from "../../../transport/inproc/threads.ts";
import type { BlkBacking } from "../backing.ts";
import type { BlkLogger } from "../log.ts";
import { BlkQueueEngine } from "../queue-engine.ts";
import { DataplanePolicy } from "./cache-mode.ts";
import {
  type ControlMessage,
  type DataplaneQueueStats,
  type InitMessage,
  type StopResult,
  type WorkerMessage,
  hasType,
  toWireError,
} from "./protocol.ts";
import type { BackingOpener, DoorbellOpener, MemoryAttacher, QueueDoorbells } from "./seams.ts";

/** What a worker is built from. */
export interface DataplaneWorkerEnv {
  /** The control thread. */
  readonly endpoint: MessageEndpoint;
  readonly openBacking: BackingOpener;
  /** Memory attachers by descriptor kind. */
  readonly memory: Readonly<Record<string, MemoryAttacher>>;
  /** Doorbell openers by descriptor kind. */
  readonly doorbells: Readonly<Record<string, DoorbellOpener>>;
  /** Runs `fn` on a later event-loop task (default `setTimeout(fn, 0)`; Node: `setImmediate`). */
  readonly schedule?: (fn: () => void) => void;
}

interface RunningQueue {
  readonly index: number;
  readonly activation: number;
  readonly queue: DeviceQueue;
  readonly engine: BlkQueueEngine;
  readonly bells: QueueDoorbells;
}

type Handler<T extends ControlMessage["type"]> = (
  w: BlkDataplaneWorker,
  m: Extract<ControlMessage, { type: T }>,
) => unknown;

/** Control-message handlers (a table of small functions); each returns the reply value. */
const HANDLERS: { readonly [T in ControlMessage["type"]]: Handler<T> } = {
  memory: (w, m) => w.attachMemory(m.memory),
  start: (w, m) => w.startQueue(m),
  stop: (w, m) => w.stopQueue(m.queue),
  halt: (w) => w.halt(),
  resize: (w, m) => w.resize(m.bytes),
  stats: (w) => w.stats(),
  shutdown: (w) => w.shutdown(),
};

/**
 * One dataplane worker. Created by {@link serveBlkDataplane}; driven by the
 * control thread's messages (./protocol.ts).
 */
export class BlkDataplaneWorker {
  readonly #env: DataplaneWorkerEnv;
  readonly #schedule: (fn: () => void) => void;
  #init: InitMessage | null = null;
  #log: BlkLogger | null = null;
  #backing: BlkBacking | null = null;
  #policy: DataplanePolicy | null = null;
  #memory: GuestMemory | null = null;
  readonly #queues = new Map<number, RunningQueue>();

  constructor(env: DataplaneWorkerEnv) {
    this.#env = env;
    this.#schedule = env.schedule ?? ((fn) => void setTimeout(fn, 0));
    env.endpoint.onMessage((m) => this.#onMessage(m));
  }

  #post(m: WorkerMessage): void {
    this.#env.endpoint.postMessage(m);
  }

  #onMessage(m: unknown): void {
    if (!hasType(m)) return;
    if (m.type === "init") {
      void this.#start(m as InitMessage);
      return;
    }
    const msg = m as ControlMessage;
    const handler = HANDLERS[msg.type] as Handler<typeof msg.type> | undefined;
    if (handler === undefined || typeof msg.id !== "number") {
      this.#log?.error(`virtio-blk dataplane: unknown control message ${String(msg.type)}`);
      return;
    }
    let value: unknown;
    try {
      if (this.#policy === null) throw new TypeError(`${msg.type} before the worker is ready`);
      value = handler(this, msg);
    } catch (e) {
      this.#post({ type: "reply", id: msg.id, error: toWireError(e) });
      return;
    }
    Promise.resolve(value).then(
      (v) => this.#post({ type: "reply", id: msg.id, value: v }),
      (e: unknown) => this.#post({ type: "reply", id: msg.id, error: toWireError(e) }),
    );
  }

  /** Opens the disk and rebuilds the blk configuration; answers `ready` or `init-failed`. */
  async #start(init: InitMessage): Promise<void> {
    if (this.#init !== null) return;
    this.#init = init;
    const log = this.#makeLogger(init.trace === true);
    this.#log = log;
    try {
      const logicalBlockSize = init.config.logicalBlockSize ?? 512;
      this.#backing = await this.#env.openBacking(init.backing, { logicalBlockSize, logger: log });
      const readOnly = init.config.readOnly ?? this.#backing.readOnly;
      if (this.#backing.readOnly && !readOnly)
        throw new RangeError("a read-only backing store needs a read-only device");
      this.#policy = new DataplanePolicy(
        { ...init.config, capacityBytes: this.#backing.size, readOnly },
        init.cacheMode,
      );
      this.#post({ type: "ready", worker: init.worker, size: this.#backing.size, readOnly });
    } catch (e) {
      await this.#backing?.close().catch(() => {});
      this.#backing = null;
      this.#post({ type: "init-failed", worker: init.worker, error: toWireError(e) });
    }
  }

  #makeLogger(trace: boolean): BlkLogger {
    const post = (level: "error" | "warn" | "trace", message: string): void =>
      this.#post({ type: "log", level, message });
    return {
      error: (m) => post("error", m),
      warn: (m) => post("warn", m),
      trace: trace ? (m) => post("trace", m) : undefined,
    };
  }

  /** Maps the guest memory later starts use (only while no queue runs). */
  async attachMemory(descriptor: { readonly kind: string }): Promise<void> {
    if (this.#queues.size > 0)
      throw new TypeError(`guest memory changed while ${this.#queues.size} queues run`);
    const attach = this.#env.memory[descriptor.kind];
    if (attach === undefined) throw new TypeError(`unknown memory kind ${descriptor.kind}`);
    this.#memory = null;
    this.#memory = await attach(descriptor);
  }

  /** Starts a queue (see the module notes). */
  startQueue(m: Extract<ControlMessage, { type: "start" }>): void {
    const memory = this.#memory;
    if (memory === null) throw new TypeError(`queue ${m.queue} started before guest memory`);
    if (this.#queues.has(m.queue)) throw new RangeError(`queue ${m.queue} is already running`);
    const open = this.#env.doorbells[m.doorbells.kind];
    if (open === undefined) throw new TypeError(`unknown doorbell kind ${m.doorbells.kind}`);
    const policy = this.#policy!;
    policy.negotiate(m.features);
    // Throws VirtioError QUEUE_CONFIG for a ring that does not fit the memory: the queue does not start.
    const queue = new DeviceQueue(memory, {
      ...m.ring,
      eventIdx: hasFeature(m.features, VIRTIO_RING_F_EVENT_IDX),
      indirect: hasFeature(m.features, VIRTIO_RING_F_INDIRECT_DESC),
    });
    const bells = open(m.queue, m.doorbells);
    const init = this.#init!;
    const engine = new BlkQueueEngine({
      queue,
      queueIndex: m.queue,
      backing: this.#backing!,
      policy,
      ...(init.maxInFlight === undefined ? {} : { maxInFlight: init.maxInFlight }),
      ...(init.budget === undefined ? {} : { budget: init.budget }),
      notify: () => bells.call(),
      onBroken: (err) => this.#broken(m.activation, m.queue, err),
      logger: this.#log!,
      schedule: this.#schedule,
    });
    this.#queues.set(m.queue, { index: m.queue, activation: m.activation, queue, engine, bells });
    bells.start(() => engine.kick());
  }

  /** Stops a queue: no more kicks, in-flight requests completed, then nothing more written. */
  async stopQueue(index: number): Promise<StopResult> {
    const r = this.#queues.get(index);
    if (r === undefined) throw new RangeError(`queue ${index} is not running`);
    r.bells.stop();
    const drained = r.engine.inFlight;
    await r.engine.stop();
    // Detach: the engine is stopped already; this makes the queue itself refuse any later write.
    r.queue.markBroken(new VirtioError(ErrorCode.DEVICE_RESET, `queue ${index} stopped`));
    if (this.#queues.get(index) === r) this.#queues.delete(index);
    return { nextAvail: r.queue.nextAvail, drained };
  }

  /** The device is broken: every engine stops consuming and completing. */
  halt(): void {
    for (const r of this.#queues.values()) r.engine.halt();
  }

  #broken(activation: number, queue: number, err: VirtioError): void {
    this.halt();
    this.#post({ type: "broken", activation, queue, error: toWireError(err) });
  }

  /** Resizes the disk (the control thread bumps the config generation). */
  async resize(bytes: number): Promise<void> {
    const backing = this.#backing!;
    if (backing.resize === undefined) throw new TypeError("this backing store cannot be resized");
    if (backing.size !== bytes) await backing.resize(bytes);
    this.#policy!.resize(bytes);
  }

  /** Per-queue counters. */
  stats(): DataplaneQueueStats[] {
    return [...this.#queues.values()].map((r) => ({
      queue: r.index,
      wakeups: r.bells.wakeups,
      calls: r.bells.calls,
      inFlight: r.engine.inFlight,
    }));
  }

  /** Stops every queue and closes the disk. */
  async shutdown(): Promise<void> {
    await Promise.all([...this.#queues.keys()].map((q) => this.stopQueue(q)));
    await this.#backing?.close();
  }
}

/**
 * Serves the control thread on `env.endpoint`: waits for the init message
 * and then for control messages. Call once at the top of a worker module.
 *
 * @example
 * ```ts
 * serveBlkDataplane({ endpoint, openBacking, memory: { "inproc-shared": attachInprocMemory },
 *   doorbells: { inproc: inprocDoorbellOpener() } });
 * ```
 */
export function serveBlkDataplane(env: DataplaneWorkerEnv): BlkDataplaneWorker {
  return new BlkDataplaneWorker(env);
}

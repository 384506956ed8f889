/**
 * The dataplane runtime: the one place where queues run, in a worker thread
 * or on the calling thread. It hosts devices (opened by a device type's
 * {@link DeviceOpener}), maps their guest memory through the transport's
 * {@link MemorySpace}, builds each started ring with `openRing`, hands it to
 * the device's {@link QueueHandler}, takes kicks and sends calls through the
 * transport's {@link QueueDoorbells}, and stops, halts and reports. VIRTIO
 * 1.2 §2.7 (virtqueues), §2.4 (reset: stop, drain, then nothing more is
 * written) and docs/conformance.md "Lifecycle" and "Ring violations".
 *
 * Lifecycle of a queue:
 *
 * 1. `start`: the ring is validated and mapped, the handler is built, the
 *    doorbells start (a first kick at once picks up work queued before; a
 *    resumed ring also sends one call).
 * 2. Kicks run the handler; it completes requests into the used ring and
 *    calls through the doorbells when the ring says the driver wants one.
 * 3. `stop`: no more kicks; the handler stops popping and completes what is
 *    in flight; then the queue is detached (marked broken, so nothing more
 *    reaches guest memory through it) and the stop is acknowledged with the
 *    next available index.
 *
 * A ring violation (or a device's own `markBroken`) halts every queue of
 * that device and is reported once per activation to the control side.
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../errors.ts";
import type { LogFields, Logger } from "../log.ts";
import type { GuestMemory } from "../memory/guest-memory.ts";
import type { DeviceRing } from "../ring/device-ring.ts";
import type { DataplaneDevice, DeviceOpener, QueueContext, QueueHandler } from "./device.ts";
import type {
  ControlMessage,
  InitMessage,
  LogLevel,
  QueueStats,
  RuntimeMessage,
  StopResult,
} from "./protocol.ts";
import type {
  DoorbellDescriptor,
  DoorbellOpener,
  MemoryDescriptor,
  MemorySpace,
  MemorySpaceFactory,
  QueueDoorbells,
} from "./seams.ts";
import { announceResume, openQueueRing } from "./resume.ts";
import { nextTask } from "./schedule.ts";
import type { MessageEndpoint } from "./threads.ts";
import { hasType, toWireError } from "./wire.ts";

/** What a runtime is built from: its control side, and the device types and bindings it knows. */
export interface DataplaneEnv {
  readonly endpoint: MessageEndpoint;
  /** Device openers by spec kind. */
  readonly devices: Readonly<Record<string, DeviceOpener>>;
  /** Memory spaces by descriptor kind. */
  readonly memory: Readonly<Record<string, MemorySpaceFactory>>;
  /** Doorbell openers by descriptor kind. */
  readonly doorbells: Readonly<Record<string, DoorbellOpener>>;
  /** Runs `fn` on a later event-loop task (default `setImmediate` where it exists, else `setTimeout(fn, 0)`). */
  readonly schedule?: (fn: () => void) => void;
}

interface RunningQueue {
  readonly index: number;
  readonly activation: number;
  readonly queue: DeviceRing;
  readonly handler: QueueHandler;
  readonly bells: QueueDoorbells;
}

interface HostedDevice {
  readonly id: number;
  readonly device: DataplaneDevice;
  readonly logger: Logger;
  readonly spaces: Map<string, MemorySpace>;
  /** The space of the last memory update. */
  space: MemorySpace | null;
  readonly queues: Map<number, RunningQueue>;
  /** The activation whose breakage was reported (one report per activation). */
  reported: number;
}

type Msg<T extends ControlMessage["type"]> = Extract<ControlMessage, { type: T }>;
type Handler<T extends ControlMessage["type"]> = (r: DataplaneRuntime, m: Msg<T>) => unknown;

/** Control-message handlers (a table of small functions); each returns the reply value. */
const HANDLERS: { readonly [T in ControlMessage["type"]]: Handler<T> } = {
  open: (r, m) => r.open(m.device, m.spec),
  memory: (r, m) => r.setMemory(m.device, m.memory),
  start: (r, m) => r.startQueue(m),
  doorbells: (r, m) => r.setDoorbells(m.device, m.queue, m.doorbells),
  stop: (r, m) => r.stopQueue(m.device, m.queue),
  halt: (r, m) => r.halt(m.device),
  abort: (r, m) => r.abort(m.device),
  control: (r, m) => r.control(m.device, m.op, m.args),
  stats: (r, m) => r.stats(m.device),
  close: (r, m) => r.close(m.device),
  shutdown: (r) => r.shutdown(),
};

/** One runtime; driven by its control side's messages (./protocol.ts). */
export class DataplaneRuntime {
  readonly #env: DataplaneEnv;
  readonly #schedule: (fn: () => void) => void;
  #init: InitMessage | null = null;
  readonly #devices = new Map<number, HostedDevice>();

  constructor(env: DataplaneEnv) {
    this.#env = env;
    this.#schedule = env.schedule ?? nextTask;
    env.endpoint.onMessage((m) => this.#onMessage(m));
  }

  #post(m: RuntimeMessage): void {
    this.#env.endpoint.postMessage(m);
  }

  #onMessage(m: unknown): void {
    if (!hasType(m)) return;
    if (m.type === "init") {
      this.#init ??= m as InitMessage;
      this.#post({ type: "ready", worker: this.#init.worker });
      return;
    }
    const msg = m as ControlMessage;
    const handler = HANDLERS[msg.type] as Handler<typeof msg.type> | undefined;
    if (handler === undefined || typeof msg.id !== "number") {
      this.#log(undefined, "error", `dataplane: unknown control message ${String(msg.type)}`);
      return;
    }
    let value: unknown;
    try {
      if (this.#init === null) throw new TypeError(`${msg.type} before init`);
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

  #log(device: number | undefined, level: LogLevel, message: string, fields?: LogFields): void {
    this.#post({
      type: "log",
      ...(device === undefined ? {} : { device }),
      level,
      message,
      ...(fields === undefined ? {} : { fields }),
    });
  }

  #loggerFor(device: number): Logger {
    const line =
      (level: LogLevel) =>
      (message: string, fields?: LogFields): void =>
        this.#log(device, level, message, fields);
    return {
      error: line("error"),
      warn: line("warn"),
      trace: this.#init?.trace === true ? line("trace") : undefined,
    };
  }

  #device(id: number): HostedDevice {
    const d = this.#devices.get(id);
    if (d === undefined) throw new RangeError(`no device ${id} in dataplane ${this.#init!.worker}`);
    return d;
  }

  /** Opens a device from its spec; replies with what the opener tells the control side. */
  async open(id: number, spec: { readonly kind: string }): Promise<unknown> {
    if (this.#devices.has(id)) throw new RangeError(`device ${id} is already open`);
    const opener = this.#env.devices[spec.kind];
    if (opener === undefined) throw new TypeError(`unknown device kind ${spec.kind}`);
    const logger = this.#loggerFor(id);
    const ctx = { worker: this.#init!.worker, logger, schedule: this.#schedule };
    const opened = await opener(spec, ctx);
    this.#devices.set(id, {
      id,
      device: opened.device,
      logger,
      spaces: new Map(),
      space: null,
      queues: new Map(),
      reported: 0,
    });
    return opened.info;
  }

  /**
   * Maps the guest memory later starts use. Running queues keep the memory
   * they started with; the space refuses to release what they may use.
   */
  async setMemory(id: number, descriptor: MemoryDescriptor): Promise<void> {
    const d = this.#device(id);
    let space = d.spaces.get(descriptor.kind);
    if (space === undefined) {
      const factory = this.#env.memory[descriptor.kind];
      if (factory === undefined) throw new TypeError(`unknown memory kind ${descriptor.kind}`);
      space = factory();
      d.spaces.set(descriptor.kind, space);
    }
    await space.update(descriptor, d.queues.size > 0);
    d.space = space;
  }

  /** Starts a queue (see the module notes). */
  startQueue(m: Msg<"start">): void {
    const d = this.#device(m.device);
    const memory = d.space?.memory() ?? null;
    if (memory === null) throw new TypeError(`queue ${m.queue} started before guest memory`);
    if (d.queues.has(m.queue)) throw new RangeError(`queue ${m.queue} is already running`);
    const open = this.#env.doorbells[m.doorbells.kind];
    if (open === undefined) throw new TypeError(`unknown doorbell kind ${m.doorbells.kind}`);
    // Throws VirtioError QUEUE_CONFIG for a ring that does not fit the memory: the queue does not start.
    const { queue, resumed } = openQueueRing(d.space, memory, m, d.logger, (err) => {
      // A queue detached by its stop is not broken by the driver: nothing to report.
      if (d.queues.get(m.queue)?.queue === queue) this.#broken(d, m.activation, m.queue, err);
    });
    const bells = open(m.queue, m.doorbells);
    let handler: QueueHandler;
    try {
      handler = d.device.startQueue(this.#context(d, m, queue, memory, bells));
    } catch (e) {
      bells.stop();
      throw e;
    }
    const r: RunningQueue = { index: m.queue, activation: m.activation, queue, handler, bells };
    d.queues.set(m.queue, r);
    bells.start(() => this.#kick(d, r));
    if (resumed) announceResume(bells);
  }

  #context(
    d: HostedDevice,
    m: Msg<"start">,
    queue: DeviceRing,
    memory: GuestMemory,
    bells: QueueDoorbells,
  ): QueueContext {
    return {
      index: m.queue,
      queue,
      memory,
      features: m.ring.features,
      logger: d.logger,
      schedule: this.#schedule,
      notify: () => {
        this.#checkMemory(d, queue);
        bells.call();
      },
      signalUsed: () => {
        this.#checkMemory(d, queue);
        queue.publishUsed();
        if (!queue.needsNotification()) return false;
        bells.call();
        return true;
      },
      memoryFault: () => d.space?.fault?.() ?? null,
      markBroken: (err) => {
        if (queue.broken === null) queue.markBroken(err);
        else this.#broken(d, m.activation, m.queue, err);
      },
    };
  }

  /**
   * A kick: the handler runs; anything it throws breaks the queue instead of
   * reaching the loop; memory pulled away during the run breaks it too.
   */
  #kick(d: HostedDevice, r: RunningQueue): void {
    try {
      r.handler.kick();
      this.#checkMemory(d, r.queue);
    } catch (e) {
      const err =
        e instanceof VirtioError
          ? e
          : new VirtioError(
              ErrorCode.DEVICE_BROKEN,
              `queue ${r.index}: device failed on a kick: ${String(e)}`,
              {
                queue: r.index,
              },
            );
      if (r.queue.broken === null) r.queue.markBroken(err);
    }
  }

  /**
   * Memory pulled away under the device's mappings breaks the queue with
   * `MEM_FAULT` (the report goes out through the queue's broken callback).
   * Asked after every run of the queue and before every used-buffer
   * notification, so the driver's side hears of it where it waits.
   */
  #checkMemory(d: HostedDevice, queue: DeviceRing): void {
    const fault = d.space?.fault?.() ?? null;
    if (fault !== null && queue.broken === null) queue.markBroken(fault);
  }

  /** Replaces a running queue's doorbells (where calls go). */
  setDoorbells(id: number, index: number, descriptor: DoorbellDescriptor): void {
    const r = this.#device(id).queues.get(index);
    if (r === undefined) return; // not running: the next start takes the new descriptor
    if (r.bells.update === undefined)
      throw new TypeError(`doorbells of kind ${descriptor.kind} cannot be changed while running`);
    r.bells.update(descriptor);
  }

  /** Stops a queue: no more kicks, in-flight requests completed, then nothing more written. */
  async stopQueue(id: number, index: number): Promise<StopResult> {
    const d = this.#device(id);
    const r = d.queues.get(index);
    if (r === undefined) throw new RangeError(`queue ${index} is not running`);
    r.bells.stop();
    const drained = r.handler.inFlight;
    try {
      await r.handler.stop();
    } finally {
      if (d.queues.get(index) === r) d.queues.delete(index);
      // Detach: the handler is stopped; this makes the queue itself refuse any later write.
      if (r.queue.broken === null)
        r.queue.markBroken(new VirtioError(ErrorCode.DEVICE_RESET, `queue ${index} stopped`));
    }
    return { base: r.queue.vringBase, drained };
  }

  /** The device is broken: every queue stops consuming and completing. */
  halt(id: number): void {
    for (const r of this.#device(id).queues.values()) r.handler.halt();
  }

  /** Shutdown: every queue's in-flight requests complete now with an error; returns how many. */
  abort(id: number): number {
    let n = 0;
    for (const r of this.#device(id).queues.values()) n += r.handler.abort?.() ?? 0;
    return n;
  }

  #broken(d: HostedDevice, activation: number, queue: number, err: VirtioError): void {
    for (const r of d.queues.values()) r.handler.halt();
    // A ring violation read from memory that was pulled away is the fault's consequence.
    err = d.space?.fault?.() ?? err;
    if (d.reported === activation) return;
    d.reported = activation;
    this.#post({ type: "broken", device: d.id, activation, queue, error: toWireError(err) });
  }

  /** A device-specific operation. */
  control(id: number, op: string, args: unknown): unknown {
    const d = this.#device(id);
    if (d.device.control === undefined) throw new TypeError(`this device has no operation ${op}`);
    return d.device.control(op, args);
  }

  /** Per-queue counters of a device. */
  stats(id: number): QueueStats[] {
    return [...this.#device(id).queues.values()].map((r) => ({
      queue: r.index,
      wakeups: r.bells.wakeups,
      calls: r.bells.calls,
      inFlight: r.handler.inFlight,
    }));
  }

  /** Stops every queue of a device, closes it and releases its memory. */
  async close(id: number): Promise<void> {
    const d = this.#device(id);
    try {
      await Promise.all([...d.queues.keys()].map((q) => this.stopQueue(id, q)));
      await d.device.close?.();
    } finally {
      this.#devices.delete(id);
      d.space = null;
      for (const s of d.spaces.values()) s.dispose();
    }
  }

  /** Closes every device. */
  async shutdown(): Promise<void> {
    const results = await Promise.allSettled([...this.#devices.keys()].map((id) => this.close(id)));
    const failed = results.find((r) => r.status === "rejected");
    if (failed !== undefined) throw failed.reason;
  }
}

/**
 * Serves a control side on `env.endpoint`: waits for `init`, then for
 * control messages. Call once at the top of a worker module (or through
 * ./local.ts on the calling thread).
 */
export function serveDataplane(env: DataplaneEnv): DataplaneRuntime {
  return new DataplaneRuntime(env);
}

/**
 * A pool of dataplane runtimes (worker threads, or one runtime on the
 * calling thread) shared by the devices it hosts: one per export of a
 * daemon, or one in-process device. Each device's queues are placed on the
 * pool's runtimes round-robin, continuing where the previous device's
 * placement ended, so several devices spread over the same threads (or, on
 * request, all of a device's queues on one runtime). Reports
 * (broken rings, log lines, a failed thread) are routed to the device they
 * are about. Portable. Not spec-defined.
 *
 * @module
 */
import { ErrorCode, isVirtioError } from "../errors.ts";
import { consoleLogger, type Logger } from "../log.ts";
import type { DeviceSpec } from "./device.ts";
import { DataplaneDeviceHandle, type DeviceEvent } from "./device-handle.ts";
import type { ThreadHost } from "./threads.ts";
import { RuntimeHandle, type RuntimeEvent } from "./worker-handle.ts";

/** Options of {@link DataplanePool.start}. */
export interface DataplanePoolOptions {
  /** Starts the runtimes (Node: `nodeThreadHost()`; calling thread: `localThreadHost(...)`). */
  readonly host: ThreadHost;
  /** The runtime's entry module (ignored by a local host). */
  readonly module: URL;
  /** Number of runtimes, ≥ 1. */
  readonly runtimes: number;
  /** Bound on a runtime's start and on every reply, in ms (default 30000). */
  readonly timeoutMs?: number;
  /** Forward devices' trace lines (default false). */
  readonly trace?: boolean;
  /** Where a runtime's own lines (not about a device) go (default the console). */
  readonly logger?: Logger;
}

/** Options of {@link DataplanePool.open}. */
export interface OpenDeviceOptions {
  /** Number of queues the device will start (they are placed now). */
  readonly queues: number;
  /**
   * Place every queue on one runtime (the next in turn) instead of spreading
   * them: for a device whose back end must be opened once — a store that
   * keeps its state in the runtime's memory, a connection that orders
   * writes and flushes (default false).
   */
  readonly oneRuntime?: boolean;
  /** The device's log lines (default the pool's logger). */
  readonly logger?: Logger;
  /** Broken rings and failed runtimes of this device (default: logged). */
  readonly onEvent?: (event: DeviceEvent) => void;
}

/** The runtimes and the devices they host. */
export class DataplanePool {
  readonly #runtimes: RuntimeHandle[] = [];
  readonly #logger: Logger;
  readonly #devices = new Map<number, DataplaneDeviceHandle>();
  #nextDevice = 1;
  #nextPlacement = 0;
  #closed: Promise<void> | null = null;

  private constructor(logger: Logger) {
    this.#logger = logger;
  }

  /**
   * Starts the runtimes and waits (bounded) until each answered.
   *
   * @throws {RangeError} for a bad runtime count; the first start failure
   *   (every runtime is terminated then).
   */
  static async start(o: DataplanePoolOptions): Promise<DataplanePool> {
    if (!Number.isInteger(o.runtimes) || o.runtimes < 1 || o.runtimes > 256)
      throw new RangeError(`runtimes must be an integer in 1..256, got ${o.runtimes}`);
    const pool = new DataplanePool(o.logger ?? consoleLogger);
    const onEvent = (index: number, ev: RuntimeEvent): void => pool.#onEvent(index, ev);
    const spawned = await Promise.allSettled(
      Array.from({ length: o.runtimes }, (_, worker) =>
        RuntimeHandle.spawn({
          host: o.host,
          module: o.module,
          init: { type: "init", worker, ...(o.trace === true ? { trace: true } : {}) },
          timeoutMs: o.timeoutMs ?? 30_000,
          onEvent,
        }),
      ),
    );
    const ok = spawned.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
    const failure = spawned.find((s) => s.status === "rejected");
    if (failure !== undefined) {
      await Promise.all(ok.map((h) => h.terminate()));
      throw failure.reason;
    }
    pool.#runtimes.push(...ok);
    return pool;
  }

  /** Number of runtimes. */
  get size(): number {
    return this.#runtimes.length;
  }

  /**
   * Opens a device on the runtimes its queues are placed on; each of them
   * runs the device's opener with `spec`.
   *
   * @throws the first open failure (the device is closed on the others).
   */
  async open(spec: DeviceSpec, o: OpenDeviceOptions): Promise<DataplaneDeviceHandle> {
    if (this.#closed !== null) throw new TypeError("the dataplane pool is closed");
    if (!Number.isInteger(o.queues) || o.queues < 1)
      throw new RangeError(`a device needs at least one queue, got ${o.queues}`);
    const n = this.#runtimes.length;
    const first = this.#nextPlacement;
    const spread = o.oneRuntime === true ? 0 : 1;
    this.#nextPlacement = (first + (spread === 0 ? 1 : o.queues)) % n;
    const placement = Array.from(
      { length: o.queues },
      (_, q) => this.#runtimes[(first + q * spread) % n]!,
    );
    const id = this.#nextDevice++;
    const logger = o.logger ?? this.#logger;
    const onEvent = o.onEvent ?? ((ev: DeviceEvent) => logEvent(logger, ev));
    const handle = await DataplaneDeviceHandle.open(id, spec, placement, logger, onEvent);
    this.#devices.set(id, handle);
    void handle.closed.then(() => this.#devices.delete(id));
    return handle;
  }

  /** Closes every device, then ends the runtimes (bounded). Idempotent. */
  close(): Promise<void> {
    this.#closed ??= this.#close();
    return this.#closed;
  }

  async #close(): Promise<void> {
    await Promise.allSettled([...this.#devices.values()].map((d) => d.close()));
    await Promise.allSettled(
      this.#runtimes.filter((r) => r.failed === null).map((r) => r.request({ type: "shutdown" })),
    );
    await Promise.all(this.#runtimes.map((r) => r.terminate()));
  }

  #onEvent(index: number, ev: RuntimeEvent): void {
    if (ev.type === "failed") {
      this.#logger.error(`dataplane ${index} failed: ${ev.error.message}`);
      for (const d of this.#devices.values()) d.runtimeFailed(index, ev.error);
      return;
    }
    const device = ev.device === undefined ? undefined : this.#devices.get(ev.device);
    if (ev.type === "log") {
      const logger = device?.logger ?? this.#logger;
      if (ev.level === "trace") logger.trace?.(ev.message, ev.fields);
      else logger[ev.level](ev.message, ev.fields);
      return;
    }
    device?.brokenReport(ev);
  }
}

function logEvent(logger: Logger, ev: DeviceEvent): void {
  if (ev.type === "failed") logger.error(`dataplane ${ev.runtime} failed: ${ev.error.message}`);
  // Memory pulled away is reported by the transport that owns it (vhost-user: one closing line).
  else if (!isVirtioError(ev.error, ErrorCode.MEM_FAULT))
    logger.error(`queue ${ev.queue} broken: ${ev.error.message}`);
}

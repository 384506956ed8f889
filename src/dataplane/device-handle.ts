/**
 * The control side's handle on one device hosted by a {@link DataplanePool}:
 * guest memory, queue start and stop, doorbell changes, halt, the device's
 * own operations and counters, each sent to the runtime(s) concerned with a
 * bounded wait. VIRTIO 1.2 §2.4 (reset: stop, drain, acknowledge) and §2.7
 * (each queue runs on one runtime). Portable. Not spec-defined.
 *
 * @module
 */
import type { Logger } from "../log.ts";
import type { RingStart } from "../ring/open-ring.ts";
import type { DeviceSpec } from "./device.ts";
import type { QueueStats, RuntimeMessage, StopResult } from "./protocol.ts";
import type { DoorbellDescriptor, MemoryDescriptor } from "./seams.ts";
import { fromWireError } from "./wire.ts";
import type { RequestOptions, RuntimeHandle } from "./worker-handle.ts";

/** What happened to a device on its own. */
export type DeviceEvent =
  | {
      readonly type: "broken";
      readonly activation: number;
      readonly queue: number;
      readonly error: Error;
    }
  | { readonly type: "failed"; readonly runtime: number; readonly error: Error };

/** One device in a pool. Created by `DataplanePool.open`. */
export class DataplaneDeviceHandle {
  readonly id: number;
  readonly logger: Logger;
  /** What each hosting runtime's opener answered, in {@link runtimes} order. */
  readonly info: readonly unknown[];
  /** Resolves once the device is closed. */
  readonly closed: Promise<void>;
  readonly #placement: readonly RuntimeHandle[];
  readonly #hosts: readonly RuntimeHandle[];
  readonly #onEvent: (event: DeviceEvent) => void;
  readonly #listeners = new Set<(event: DeviceEvent) => void>();
  #closing: Promise<void> | null = null;
  #markClosed!: () => void;

  private constructor(
    id: number,
    placement: readonly RuntimeHandle[],
    info: readonly unknown[],
    logger: Logger,
    onEvent: (event: DeviceEvent) => void,
  ) {
    this.id = id;
    this.#placement = placement;
    this.#hosts = [...new Set(placement)];
    this.info = info;
    this.logger = logger;
    this.#onEvent = onEvent;
    this.closed = new Promise((resolve) => (this.#markClosed = resolve));
  }

  /** @internal Opens the device on every runtime of `placement` (queue q on placement[q]). */
  static async open(
    id: number,
    spec: DeviceSpec,
    placement: readonly RuntimeHandle[],
    logger: Logger,
    onEvent: (event: DeviceEvent) => void,
  ): Promise<DataplaneDeviceHandle> {
    const hosts = [...new Set(placement)];
    const opened = await Promise.allSettled(
      hosts.map((r) => r.request({ type: "open", device: id, spec })),
    );
    const failure = opened.find((o) => o.status === "rejected");
    if (failure !== undefined) {
      await Promise.allSettled(
        hosts
          .filter((_, i) => opened[i]!.status === "fulfilled")
          .map((r) => r.request({ type: "close", device: id })),
      );
      throw failure.reason;
    }
    const info = opened.map((o) => (o as PromiseFulfilledResult<unknown>).value);
    return new DataplaneDeviceHandle(id, placement, info, logger, onEvent);
  }

  /** The runtimes hosting this device. */
  get runtimes(): readonly number[] {
    return this.#hosts.map((r) => r.index);
  }

  /** The runtime that runs queue `queue`. */
  runtimeOf(queue: number): number {
    return this.#runtime(queue).index;
  }

  #runtime(queue: number): RuntimeHandle {
    const r = this.#placement[queue];
    if (r === undefined)
      throw new RangeError(`queue ${queue} is not in 0..${this.#placement.length - 1}`);
    return r;
  }

  /** Maps guest memory in every hosting runtime (no queue of the device may run). */
  async setMemory(memory: MemoryDescriptor): Promise<void> {
    await this.#all((r) => r.request({ type: "memory", device: this.id, memory }));
  }

  /** Starts a queue on its runtime. @throws VirtioError `QUEUE_CONFIG` for a ring that does not fit. */
  async startQueue(
    queue: number,
    activation: number,
    ring: RingStart,
    doorbells: DoorbellDescriptor,
  ): Promise<void> {
    await this.#runtime(queue).request({
      type: "start",
      device: this.id,
      activation,
      queue,
      ring,
      doorbells,
    });
  }

  /** Changes where a running queue's calls go. */
  async setDoorbells(queue: number, doorbells: DoorbellDescriptor): Promise<void> {
    await this.#runtime(queue).request({ type: "doorbells", device: this.id, queue, doorbells });
  }

  /** Stops a queue: resolves once its in-flight requests completed into the used ring. */
  stopQueue(queue: number, options?: RequestOptions): Promise<StopResult> {
    return this.#runtime(queue).request<StopResult>(
      { type: "stop", device: this.id, queue },
      options,
    );
  }

  /** The device is broken: every runtime stops consuming and completing its queues (not awaited). */
  halt(): void {
    for (const r of this.#hosts) r.post({ type: "halt", device: this.id });
  }

  /**
   * Shutdown with requests stuck: every queue completes what it has in
   * flight now with an error status. Resolves to how many requests that was.
   */
  async abort(): Promise<number> {
    const counts = await Promise.all(
      this.#hosts.map((r) => r.request<number>({ type: "abort", device: this.id })),
    );
    return counts.reduce((a, b) => a + b, 0);
  }

  /**
   * A device-specific operation, in the first hosting runtime and then in
   * the others (e.g. a resize: the first truncates the file).
   */
  async control<T = unknown>(op: string, args?: unknown): Promise<T[]> {
    const [first, ...rest] = this.#hosts;
    const head = await first!.request<T>({ type: "control", device: this.id, op, args });
    const tail = await Promise.all(
      rest.map((r) => r.request<T>({ type: "control", device: this.id, op, args })),
    );
    return [head, ...tail];
  }

  /** Counters of every running queue, by queue number. */
  async stats(): Promise<QueueStats[]> {
    const per = await Promise.all(
      this.#hosts.map((r) => r.request<QueueStats[]>({ type: "stats", device: this.id })),
    );
    return per.flat().sort((a, b) => a.queue - b.queue);
  }

  /** Ends the runtime of `queue` at once (a stop that never finished); every device on it loses it. */
  async terminateRuntimeOf(queue: number): Promise<void> {
    await this.#runtime(queue).terminate();
  }

  /** Stops every queue and closes the device in each runtime (bounded). Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#all((r) =>
      r.failed === null ? r.request({ type: "close", device: this.id }) : Promise.resolve(),
    ).finally(() => this.#markClosed());
    return this.#closing;
  }

  /** Also tells `listener` about every event from now on; returns a function that stops it. */
  listen(listener: (event: DeviceEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** @internal A runtime reported a broken ring of this device. */
  brokenReport(m: Extract<RuntimeMessage, { type: "broken" }>): void {
    const error = fromWireError(m.error);
    this.#emit({ type: "broken", activation: m.activation, queue: m.queue, error });
  }

  /** @internal A runtime ended; reported if it hosts this device. */
  runtimeFailed(index: number, error: Error): void {
    if (this.#hosts.some((r) => r.index === index))
      this.#emit({ type: "failed", runtime: index, error });
  }

  #emit(event: DeviceEvent): void {
    this.#onEvent(event);
    for (const l of [...this.#listeners]) l(event);
  }

  /** Runs `f` on every hosting runtime; waits for all, then throws the first failure. */
  async #all(f: (r: RuntimeHandle) => Promise<unknown>): Promise<void> {
    const results = await Promise.allSettled(this.#hosts.map(f));
    const failed = results.find((r) => r.status === "rejected");
    if (failed !== undefined) throw failed.reason;
  }
}

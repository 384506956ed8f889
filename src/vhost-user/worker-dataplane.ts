/**
 * Rings on worker threads: {@link DataplaneWorker} is a long-lived worker
 * holding one instance of the device (built there by a factory module, so a
 * disk image is opened in the worker); {@link WorkerDataplane} is the
 * {@link VringDataplane} of one connection over one or more such workers.
 * Ring `i` runs on worker `i mod n`; every worker maps every region; config
 * writes and device resets reach every worker's device instance. The
 * control thread only answers vhost-user messages, so disk I/O never delays
 * them (docs/architecture.md "Threading and data flow").
 *
 * fd ownership across threads: fds are process-wide. The control thread
 * keeps owning every fd it passes and closes it only after the worker's reply
 * (a region fd once every worker has mapped it, an old call fd once the
 * worker has switched to the new one), so a worker never touches an fd
 * number that was closed (and possibly reused).
 *
 * @module
 */
import { extname } from "node:path";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import { ErrorCode, VirtioError } from "../errors.ts";
import type { RingEvents, RingStart, VringDataplane } from "./dataplane.ts";
import {
  fromWireError,
  type DataplaneEvent,
  type DataplaneReply,
  type DataplaneRequest,
  type DataplaneWorkerInit,
  type LogLevel,
} from "./dataplane-worker.ts";
import type { RegionInfo } from "./memory-table.ts";

/** Options of {@link DataplaneWorker.spawn}. */
export interface DataplaneWorkerOptions {
  /** URL of the module exporting the device factory (e.g. `import.meta.resolve("./my-device.ts")`). */
  readonly backendModule: string;
  /** Name of the factory export (default `"createBackend"`). */
  readonly backendExport?: string;
  /** Passed to the factory in the worker (structured-cloneable). */
  readonly backendOptions?: unknown;
  /**
   * URL of a module whose `register()` installs module hooks before the entry
   * loads, e.g. `import.meta.resolve("tsx/esm/api")` to run `.ts` sources
   * (Node 20 does not apply `--import` hooks to a worker's entry module).
   */
  readonly loaderRegister?: string;
  /** Window limit of the worker's mappings (tests; default 4 GiB). */
  readonly maxWindow?: number;
  /** Turn on the device's trace hook in the worker (lines arrive through `onLog`). */
  readonly trace?: boolean;
  /** Receives the device's log lines from the worker (default: dropped). */
  readonly onLog?: (level: LogLevel, message: string) => void;
}

/** The message channel to a worker (a Node Worker, or a test double). */
export interface WorkerPort {
  postMessage(message: DataplaneRequest): void;
  onMessage(handler: (message: unknown) => void): void;
  /** Called once if the worker dies (error or exit). */
  onExit(handler: (reason: string) => void): void;
  terminate(): Promise<void>;
}

type Pending = { resolve: (v: number | undefined) => void; reject: (e: VirtioError) => void };

/** Distributes request ids and session ids. */
let nextSession = 1;

/** A dataplane worker thread with one device instance. */
export class DataplaneWorker {
  readonly #port: WorkerPort;
  readonly #pending = new Map<number, Pending>();
  readonly #events = new Map<string, RingEvents>();
  readonly #onLog: ((level: LogLevel, message: string) => void) | undefined;
  #nextId = 1;
  #dead: VirtioError | undefined;
  /** Resolves once the device is built in the worker; rejects if that failed. */
  readonly ready: Promise<void>;

  /** Wraps a port; see {@link DataplaneWorker.spawn} for a real worker. */
  constructor(port: WorkerPort, onLog?: (level: LogLevel, message: string) => void) {
    this.#port = port;
    this.#onLog = onLog;
    let ready!: () => void;
    let failed!: (e: VirtioError) => void;
    this.ready = new Promise<void>((resolve, reject) => {
      ready = resolve;
      failed = reject;
    });
    // Callers that never await `ready` still get the failure through their calls.
    this.ready.catch(() => {});
    port.onMessage((m) => this.#onMessage(m as DataplaneReply | DataplaneEvent, ready, failed));
    port.onExit((reason) => {
      const err = new VirtioError(
        ErrorCode.VHOST_USER_BACKEND,
        `dataplane worker exited: ${reason}`,
      );
      this.#die(err);
      failed(err);
    });
  }

  /** Starts a worker thread running `dataplane-worker-entry`. */
  static spawn(o: DataplaneWorkerOptions): DataplaneWorker {
    const init: DataplaneWorkerInit = {
      backendModule: o.backendModule,
      backendExport: o.backendExport ?? "createBackend",
      backendOptions: o.backendOptions,
      ...(o.maxWindow === undefined ? {} : { maxWindow: o.maxWindow }),
      ...(o.trace === true ? { trace: true } : {}),
    };
    // The entry has this module's extension: .ts in the sources, .js once built.
    const entry = new URL(
      `./dataplane-worker-entry${extname(fileURLToPath(import.meta.url))}`,
      import.meta.url,
    );
    const worker =
      o.loaderRegister === undefined
        ? new Worker(entry, { workerData: init })
        : new Worker(
            `import(${JSON.stringify(o.loaderRegister)})` +
              `.then((m) => { m.register(); return import(${JSON.stringify(entry.href)}); })`,
            { eval: true, workerData: init },
          );
    return new DataplaneWorker(
      {
        postMessage: (m) => worker.postMessage(m),
        onMessage: (h) => void worker.on("message", h),
        onExit(h) {
          worker.once("error", (e) => h(e.message));
          worker.once("exit", (code) => h(`exit code ${code}`));
        },
        terminate: async () => void (await worker.terminate()),
      },
      o.onLog,
    );
  }

  /** A dataplane for one connection, with its rings on this worker. */
  createDataplane(): WorkerDataplane {
    return new WorkerDataplane([this]);
  }

  /**
   * Sends a request and resolves with the worker's answer.
   *
   * @internal used by {@link WorkerDataplane}.
   */
  async call(req: DistributiveOmit<DataplaneRequest, "id">): Promise<number | undefined> {
    await this.ready;
    if (this.#dead !== undefined) throw this.#dead;
    const id = this.#nextId++;
    return new Promise<number | undefined>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#port.postMessage({ ...req, id });
    });
  }

  /** @internal routes `broken` events of a ring to its session. */
  listen(session: number, index: number, events: RingEvents | undefined): void {
    if (events === undefined) this.#events.delete(`${session}/${index}`);
    else this.#events.set(`${session}/${index}`, events);
  }

  /** Disposes every session in the worker, then ends the thread. */
  async terminate(): Promise<void> {
    if (this.#dead === undefined) {
      await this.call({ op: "shutdown" }).catch(() => {});
      this.#die(new VirtioError(ErrorCode.VHOST_USER_BACKEND, "dataplane worker terminated"));
    }
    await this.#port.terminate();
  }

  #onMessage(
    m: DataplaneReply | DataplaneEvent,
    ready: () => void,
    failed: (e: VirtioError) => void,
  ): void {
    if ("event" in m) {
      if (m.event === "ready") ready();
      else if (m.event === "failed") failed(fromWireError(m.error));
      else if (m.event === "log") this.#onLog?.(m.level, m.message);
      else this.#events.get(`${m.session}/${m.index}`)?.broken(fromWireError(m.error));
      return;
    }
    const p = this.#pending.get(m.id);
    if (p === undefined) return;
    this.#pending.delete(m.id);
    if (m.ok) p.resolve(m.value);
    else p.reject(fromWireError(m.error));
  }

  #die(err: VirtioError): void {
    this.#dead ??= err;
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
  }
}

/** `Omit` applied to each member of a union. */
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/** The rings of one connection, spread over dataplane workers. */
export class WorkerDataplane implements VringDataplane {
  readonly #workers: readonly DataplaneWorker[];
  readonly #session = nextSession++;

  /** @param workers ring `i` runs on `workers[i % workers.length]`. */
  constructor(workers: readonly DataplaneWorker[]) {
    if (workers.length === 0) throw new RangeError("a WorkerDataplane needs at least one worker");
    this.#workers = workers;
  }

  async addRegion(region: RegionInfo, fd: number): Promise<void> {
    await this.#all({ op: "addRegion", session: this.#session, region, fd });
  }

  async removeRegion(region: RegionInfo): Promise<void> {
    await this.#all({ op: "removeRegion", session: this.#session, region });
  }

  async startRing(index: number, ring: RingStart, events: RingEvents): Promise<void> {
    const w = this.#worker(index);
    w.listen(this.#session, index, events);
    try {
      await w.call({ op: "startRing", session: this.#session, index, ring });
    } catch (e) {
      w.listen(this.#session, index, undefined);
      throw e;
    }
  }

  async stopRing(index: number): Promise<number> {
    const w = this.#worker(index);
    const next = await w.call({ op: "stopRing", session: this.#session, index });
    w.listen(this.#session, index, undefined);
    if (next === undefined)
      throw new VirtioError(ErrorCode.VHOST_USER_BACKEND, "stopRing returned no index");
    return next;
  }

  async setCallFd(index: number, fd: number | null): Promise<void> {
    await this.#worker(index).call({ op: "setCallFd", session: this.#session, index, fd });
  }

  async writeConfig(offset: number, data: Uint8Array, flags: number): Promise<void> {
    await this.#all({ op: "writeConfig", offset, data, flags });
  }

  async resetDevice(): Promise<void> {
    await this.#all({ op: "resetDevice" });
  }

  async dispose(): Promise<void> {
    await this.#all({ op: "dispose", session: this.#session });
  }

  #worker(index: number): DataplaneWorker {
    return this.#workers[index % this.#workers.length]!;
  }

  /** Sends to every worker; waits for all, then throws the first failure. */
  async #all(req: DistributiveOmit<DataplaneRequest, "id">): Promise<void> {
    const results = await Promise.allSettled(this.#workers.map((w) => w.call(req)));
    const failed = results.find((r) => r.status === "rejected");
    if (failed !== undefined) throw failed.reason;
  }
}

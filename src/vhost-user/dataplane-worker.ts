/**
 * The worker side of a dataplane worker: a device instance (built by a
 * factory module) and one {@link LocalDataplane} per front-end connection,
 * driven by request messages from the control thread. The worker maps guest
 * memory itself (fds are process-wide), watches the kick eventfds on its own
 * event loop and signals the call eventfds, so disk I/O and ring processing
 * never run on the thread that answers vhost-user messages
 * (docs/architecture.md "Threading and data flow").
 *
 * Messages (all structured-cloneable; bigints and typed arrays included):
 * requests `{ id, op, ... }` → replies `{ id, ok, value | error }`; events
 * `ready`, `failed`, `broken`. VirtioErrors cross as `{ code, message,
 * details }` and are rebuilt with the same code.
 *
 * @module
 */
import { ErrorCode, VirtioError, isVirtioError, type ErrorCodeValue } from "../errors.ts";
import type { VhostUserBackend } from "./backend.ts";
import { LocalDataplane, type RingStart } from "./dataplane.ts";
import type { BlkLogger } from "../devices/blk/log.ts";
import type { RegionInfo } from "./memory-table.ts";
import { NativeEventFds, NativeMapper } from "./native-host.ts";

/** What a dataplane worker is started with (its `workerData`). */
export interface DataplaneWorkerInit {
  /** URL of the module exporting the device factory. */
  readonly backendModule: string;
  /** Name of the factory export: `(options) => VhostUserBackend | Promise<VhostUserBackend>`. */
  readonly backendExport: string;
  /** Passed to the factory (structured-cloneable). */
  readonly backendOptions: unknown;
  /** Window limit of the worker's mappings (tests; default 4 GiB). */
  readonly maxWindow?: number;
  /** Give the device a trace hook whose lines travel to the control thread as `log` events. */
  readonly trace?: boolean;
}

/** What the factory gets besides its options: a logger whose lines reach the control thread. */
export interface DataplaneWorkerEnv {
  readonly logger: BlkLogger;
}

/** A VirtioError (or any error) as it crosses threads. */
export interface WireError {
  readonly code?: string;
  readonly message: string;
  readonly details?: Readonly<Record<string, number | string | bigint | boolean>>;
}

/** Control thread → worker. */
export type DataplaneRequest = { readonly id: number } & (
  | {
      readonly op: "addRegion";
      readonly session: number;
      readonly region: RegionInfo;
      readonly fd: number;
    }
  | { readonly op: "removeRegion"; readonly session: number; readonly region: RegionInfo }
  | {
      readonly op: "startRing";
      readonly session: number;
      readonly index: number;
      readonly ring: RingStart;
    }
  | { readonly op: "stopRing"; readonly session: number; readonly index: number }
  | {
      readonly op: "setCallFd";
      readonly session: number;
      readonly index: number;
      readonly fd: number | null;
    }
  | { readonly op: "dispose"; readonly session: number }
  | {
      readonly op: "writeConfig";
      readonly offset: number;
      readonly data: Uint8Array;
      readonly flags: number;
    }
  | { readonly op: "resetDevice" }
  | { readonly op: "shutdown" }
);

/** Worker → control thread: the answer to a request. */
export type DataplaneReply =
  | { readonly id: number; readonly ok: true; readonly value?: number }
  | { readonly id: number; readonly ok: false; readonly error: WireError };

/** Worker → control thread: things that happen on their own. */
export type DataplaneEvent =
  | { readonly event: "ready" }
  | { readonly event: "failed"; readonly error: WireError }
  | {
      readonly event: "broken";
      readonly session: number;
      readonly index: number;
      readonly error: WireError;
    }
  | { readonly event: "log"; readonly level: LogLevel; readonly message: string };

/** The level of a device log line sent from a worker. */
export type LogLevel = "error" | "warn" | "trace";

/** The other end of a message channel (a worker's parentPort, or a test double). */
export interface WorkerEndpoint {
  postMessage(message: unknown): void;
  onMessage(handler: (message: unknown) => void): () => void;
}

/** An error as a {@link WireError}. */
export function toWireError(e: unknown): WireError {
  if (isVirtioError(e)) return { code: e.code, message: e.message, details: e.details };
  return { message: e instanceof Error ? e.message : String(e) };
}

/** A {@link WireError} back as a VirtioError (VHOST_USER_BACKEND when it had no code). */
export function fromWireError(w: WireError): VirtioError {
  const known = (Object.values(ErrorCode) as string[]).includes(w.code ?? "");
  return new VirtioError(
    known ? (w.code as ErrorCodeValue) : ErrorCode.VHOST_USER_BACKEND,
    known ? w.message : `dataplane worker: ${w.message}`,
    w.details ?? {},
  );
}

/**
 * Runs a dataplane worker on `endpoint` until a `shutdown` request: builds
 * the device, posts `ready` (or `failed`), then serves requests.
 */
export async function serveDataplaneWorker(
  endpoint: WorkerEndpoint,
  init: DataplaneWorkerInit,
): Promise<void> {
  let backend: VhostUserBackend;
  try {
    const mod = (await import(init.backendModule)) as Record<string, unknown>;
    const factory = mod[init.backendExport];
    if (typeof factory !== "function")
      throw new TypeError(`${init.backendModule} has no function export ${init.backendExport}`);
    const log =
      (level: LogLevel) =>
      (message: string): void =>
        endpoint.postMessage({ event: "log", level, message } satisfies DataplaneEvent);
    const env: DataplaneWorkerEnv = {
      logger: {
        error: log("error"),
        warn: log("warn"),
        trace: init.trace ? log("trace") : undefined,
      },
    };
    type Factory = (
      o: unknown,
      env: DataplaneWorkerEnv,
    ) => VhostUserBackend | Promise<VhostUserBackend>;
    backend = await (factory as Factory)(init.backendOptions, env);
  } catch (e) {
    endpoint.postMessage({ event: "failed", error: toWireError(e) } satisfies DataplaneEvent);
    return;
  }
  const worker = new WorkerState(endpoint, backend, init);
  await new Promise<void>((resolve) => {
    const stop = endpoint.onMessage((m) => {
      void worker.handle(m as DataplaneRequest).then((done) => {
        if (done) {
          stop();
          resolve();
        }
      });
    });
    endpoint.postMessage({ event: "ready" } satisfies DataplaneEvent);
  });
}

/** The sessions of one worker. */
class WorkerState {
  readonly #endpoint: WorkerEndpoint;
  readonly #backend: VhostUserBackend;
  readonly #eventFds = new NativeEventFds();
  readonly #mapper: NativeMapper;
  readonly #sessions = new Map<number, LocalDataplane>();

  constructor(endpoint: WorkerEndpoint, backend: VhostUserBackend, init: DataplaneWorkerInit) {
    this.#endpoint = endpoint;
    this.#backend = backend;
    this.#mapper = new NativeMapper(init.maxWindow);
  }

  /** Serves one request; true once shut down. */
  async handle(req: DataplaneRequest): Promise<boolean> {
    let reply: DataplaneReply;
    try {
      const value = await this.#run(req);
      reply = value === undefined ? { id: req.id, ok: true } : { id: req.id, ok: true, value };
    } catch (e) {
      reply = { id: req.id, ok: false, error: toWireError(e) };
    }
    this.#endpoint.postMessage(reply);
    return req.op === "shutdown";
  }

  async #run(req: DataplaneRequest): Promise<number | undefined> {
    switch (req.op) {
      case "addRegion":
        return void this.#session(req.session).addRegion(req.region, req.fd);
      case "removeRegion":
        return void this.#session(req.session).removeRegion(req.region);
      case "startRing":
        return void (await this.#session(req.session).startRing(req.index, req.ring, {
          broken: (err) => this.#broken(req.session, req.index, err),
        }));
      case "stopRing":
        return this.#session(req.session).stopRing(req.index);
      case "setCallFd":
        return void this.#session(req.session).setCallFd(req.index, req.fd);
      case "dispose":
        return this.#dispose(req.session);
      case "writeConfig": {
        const config = this.#backend.config;
        if (config !== undefined)
          this.#backend.writeConfig?.(req.offset, req.data, req.flags, config);
        return undefined;
      }
      case "resetDevice":
        return void (await this.#backend.reset?.());
      case "shutdown":
        for (const session of [...this.#sessions.keys()]) await this.#dispose(session);
        await this.#backend.close?.();
        return undefined;
    }
  }

  #session(id: number): LocalDataplane {
    let dp = this.#sessions.get(id);
    if (dp === undefined) {
      dp = new LocalDataplane({
        backend: this.#backend,
        mapper: this.#mapper,
        eventFds: this.#eventFds,
      });
      this.#sessions.set(id, dp);
    }
    return dp;
  }

  async #dispose(session: number): Promise<undefined> {
    const dp = this.#sessions.get(session);
    this.#sessions.delete(session);
    await dp?.dispose();
    return undefined;
  }

  #broken(session: number, index: number, err: VirtioError): void {
    this.#endpoint.postMessage({
      event: "broken",
      session,
      index,
      error: toWireError(err),
    } satisfies DataplaneEvent);
  }
}

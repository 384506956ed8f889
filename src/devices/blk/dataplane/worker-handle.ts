/**
 * The control thread's handle on one dataplane worker: starts it, sends
 * control messages and matches replies, with every wait bounded. Portable
 * (threads come from a {@link ThreadHost}). The protocol is ./protocol.ts.
 *
 * @module
 */
import type { ThreadHost, WorkerThread } from "../../../transport/inproc/threads.ts";
import {
  type ControlMessage,
  type InitMessage,
  type WorkerMessage,
  fromWireError,
  hasType,
} from "./protocol.ts";

/** A control message without its id (the handle numbers them). */
export type ControlRequest = ControlMessage extends infer M
  ? M extends ControlMessage
    ? Omit<M, "id">
    : never
  : never;

/** What a worker reported on its own: a broken ring, a log line, or the thread failing. */
export type WorkerEvent =
  | Extract<WorkerMessage, { type: "broken" } | { type: "log" }>
  | { readonly type: "failed"; readonly error: Error };

/** The ready answer. */
export interface WorkerReady {
  readonly size: number;
  readonly readOnly: boolean;
}

interface Pending {
  readonly resolve: (v: unknown) => void;
  readonly reject: (e: Error) => void;
  readonly timer: ReturnType<typeof setTimeout>;
}

/** Options of {@link DataplaneWorkerHandle.spawn}. */
export interface SpawnOptions {
  readonly host: ThreadHost;
  readonly module: URL;
  readonly init: InitMessage;
  /** Bound on the worker's start and on every reply, in ms. */
  readonly timeoutMs: number;
  readonly onEvent: (index: number, event: WorkerEvent) => void;
}

/** One running worker seen from the control thread. */
export class DataplaneWorkerHandle {
  readonly index: number;
  readonly #thread: WorkerThread;
  readonly #timeoutMs: number;
  readonly #onEvent: (index: number, event: WorkerEvent) => void;
  readonly #pending = new Map<number, Pending>();
  readonly #offs: (() => void)[];
  #nextId = 1;
  #failed: Error | null = null;
  #ready: { resolve: (r: WorkerReady) => void; reject: (e: Error) => void } | null = null;

  private constructor(thread: WorkerThread, o: SpawnOptions) {
    this.index = o.init.worker;
    this.#thread = thread;
    this.#timeoutMs = o.timeoutMs;
    this.#onEvent = o.onEvent;
    this.#offs = [
      thread.onMessage((m) => this.#onMessage(m)),
      thread.onError((e) => this.#fail(e instanceof Error ? e : new Error(String(e)))),
    ];
  }

  /**
   * Starts a worker and waits (bounded) until it opened the disk.
   *
   * @throws the worker's init error (e.g. VirtioError `BLK_IMAGE`), or an
   *   Error on a timeout; the thread is terminated then.
   */
  static async spawn(
    o: SpawnOptions,
  ): Promise<{ handle: DataplaneWorkerHandle; ready: WorkerReady }> {
    const thread = o.host.spawn(o.module, o.init);
    const handle = new DataplaneWorkerHandle(thread, o);
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const ready = await new Promise<WorkerReady>((resolve, reject) => {
        handle.#ready = { resolve, reject };
        timer = setTimeout(
          () =>
            reject(
              new Error(`dataplane worker ${handle.index} not ready within ${o.timeoutMs} ms`),
            ),
          o.timeoutMs,
        );
      });
      return { handle, ready };
    } catch (e) {
      await handle.terminate();
      throw e;
    } finally {
      clearTimeout(timer);
      handle.#ready = null;
    }
  }

  /** The error that ended the worker, or null. */
  get failed(): Error | null {
    return this.#failed;
  }

  /**
   * Sends a control message and resolves with the reply value.
   *
   * @throws the worker's error, or an Error if the worker failed or did not
   *   answer within the timeout.
   */
  request<T = unknown>(m: ControlRequest): Promise<T> {
    if (this.#failed !== null) return Promise.reject(this.#failed);
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(
          new Error(
            `dataplane worker ${this.index} did not answer ${m.type} within ${this.#timeoutMs} ms`,
          ),
        );
      }, this.#timeoutMs);
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      this.#thread.postMessage({ ...m, id });
    });
  }

  /** Sends a message without waiting for the reply (e.g. halt). */
  post(m: ControlRequest): void {
    if (this.#failed === null) this.#thread.postMessage({ ...m, id: this.#nextId++ });
  }

  /** Stops the thread at once; pending requests fail. */
  async terminate(): Promise<void> {
    this.#fail(new Error(`dataplane worker ${this.index} terminated`), false);
    for (const off of this.#offs.splice(0)) off();
    await this.#thread.terminate();
  }

  #onMessage(m: unknown): void {
    if (!hasType(m)) return;
    const msg = m as WorkerMessage;
    switch (msg.type) {
      case "reply": {
        const p = this.#pending.get(msg.id);
        if (p === undefined) return;
        this.#pending.delete(msg.id);
        clearTimeout(p.timer);
        if ("error" in msg) p.reject(fromWireError(msg.error));
        else p.resolve(msg.value);
        return;
      }
      case "ready":
        this.#ready?.resolve({ size: msg.size, readOnly: msg.readOnly });
        return;
      case "init-failed":
        this.#ready?.reject(fromWireError(msg.error));
        return;
      case "broken":
      case "log":
        this.#onEvent(this.index, msg);
        return;
    }
  }

  #fail(error: Error, report = true): void {
    if (this.#failed !== null) return;
    this.#failed = error;
    this.#ready?.reject(error);
    for (const p of this.#pending.values()) {
      clearTimeout(p.timer);
      p.reject(error);
    }
    this.#pending.clear();
    if (report) this.#onEvent(this.index, { type: "failed", error });
  }
}

/**
 * The control side's handle on one dataplane runtime (a worker thread, or
 * the runtime on the calling thread): starts it, sends control messages and
 * matches replies, with every wait bounded. Portable (threads come from a
 * {@link ThreadHost}). The protocol is ./protocol.ts. Not spec-defined.
 *
 * @module
 */
import type { ControlRequest, InitMessage, RuntimeMessage } from "./protocol.ts";
import type { ThreadHost, WorkerThread } from "./threads.ts";
import { fromWireError, hasType } from "./wire.ts";

/** What a runtime reported on its own: a broken ring, a log line, or the thread failing. */
export type RuntimeEvent =
  | Extract<RuntimeMessage, { type: "broken" } | { type: "log" }>
  | { readonly type: "failed"; readonly error: Error };

interface Pending {
  readonly resolve: (v: unknown) => void;
  readonly reject: (e: Error) => void;
  readonly timer: ReturnType<typeof setTimeout>;
}

/** Options of {@link RuntimeHandle.spawn}. */
export interface SpawnOptions {
  readonly host: ThreadHost;
  readonly module: URL;
  readonly init: InitMessage;
  /** Bound on the runtime's start and on every reply, in ms. */
  readonly timeoutMs: number;
  readonly onEvent: (index: number, event: RuntimeEvent) => void;
}

/** Per-request bound, overriding the handle's (e.g. a stop that waits for slow I/O). */
export interface RequestOptions {
  readonly timeoutMs?: number;
}

/** One running runtime seen from the control side. */
export class RuntimeHandle {
  readonly index: number;
  readonly #thread: WorkerThread;
  readonly #timeoutMs: number;
  readonly #onEvent: (index: number, event: RuntimeEvent) => void;
  readonly #pending = new Map<number, Pending>();
  readonly #offs: (() => void)[];
  #nextId = 1;
  #failed: Error | null = null;
  #ready: { resolve: () => void; reject: (e: Error) => void } | null = null;

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
   * Starts a runtime and waits (bounded) until it answered `ready`.
   *
   * @throws an Error on a timeout or if the thread failed; it is terminated then.
   */
  static async spawn(o: SpawnOptions): Promise<RuntimeHandle> {
    const thread = o.host.spawn(o.module, o.init);
    const handle = new RuntimeHandle(thread, o);
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        handle.#ready = { resolve, reject };
        timer = setTimeout(
          () => reject(new Error(`dataplane ${handle.index} not ready within ${o.timeoutMs} ms`)),
          o.timeoutMs,
        );
      });
      return handle;
    } catch (e) {
      await handle.terminate();
      throw e;
    } finally {
      clearTimeout(timer);
      handle.#ready = null;
    }
  }

  /** The error that ended the runtime, or null. */
  get failed(): Error | null {
    return this.#failed;
  }

  /**
   * Sends a control message and resolves with the reply value.
   *
   * @throws the runtime's error, or an Error if it failed or did not answer
   *   within the timeout.
   */
  request<T = unknown>(m: ControlRequest, options: RequestOptions = {}): Promise<T> {
    if (this.#failed !== null) return Promise.reject(this.#failed);
    const id = this.#nextId++;
    const bound = options.timeoutMs ?? this.#timeoutMs;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`dataplane ${this.index} did not answer ${m.type} within ${bound} ms`));
      }, bound);
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
    this.#fail(new Error(`dataplane ${this.index} terminated`), false);
    for (const off of this.#offs.splice(0)) off();
    await this.#thread.terminate();
  }

  #onMessage(m: unknown): void {
    if (!hasType(m)) return;
    const msg = m as RuntimeMessage;
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
        this.#ready?.resolve();
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

/**
 * The small thread interface the dataplane and the in-process transport
 * start threads through, so the same code runs on Node's worker_threads
 * (./node-threads.ts, Node-only), on Web Workers (./web-threads.ts) and on
 * the calling thread (./local.ts). Only control messages travel here
 * (bootstrap, queue start and stop, reports); kicks, calls and the rings
 * themselves go through shared memory or eventfds. Not spec-defined.
 *
 * @module
 */

/** Something postMessage can transfer (MessagePort, ArrayBuffer, ...): opaque here. */
export type Transferable = object;

/** One side of a message channel: a worker seen from its parent, or the parent seen from the worker. */
export interface MessageEndpoint {
  /** Posts a structured-cloneable message (SharedArrayBuffers are shared, not copied). */
  postMessage(message: unknown): void;
  /** Registers a message handler; returns a function that removes it. */
  onMessage(handler: (message: unknown) => void): () => void;
}

/** A started thread, from its parent's side. */
export interface WorkerThread extends MessageEndpoint {
  /** Registers a handler for an uncaught error in the thread; returns a remover. */
  onError(handler: (error: unknown) => void): () => void;
  /** Stops the thread. */
  terminate(): Promise<void>;
}

/** Starts threads running an ES module. */
export interface ThreadHost {
  /**
   * Starts `module` in a new thread; `init` is posted to it as the first
   * message, with `transfer` (e.g. MessagePorts) in its transfer list.
   */
  spawn(module: URL, init: unknown, transfer?: readonly Transferable[]): WorkerThread;
}

/**
 * Waits for the first message from `endpoint` that satisfies `accept`,
 * failing after `timeoutMs` (every wait in virtio-ts is bounded).
 */
export function nextMessage<T>(
  endpoint: MessageEndpoint & Partial<Pick<WorkerThread, "onError">>,
  accept: (message: unknown) => message is T,
  timeoutMs: number,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const done = (): void => {
      clearTimeout(timer);
      offMessage();
      offError?.();
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`no matching message within ${timeoutMs} ms`));
    }, timeoutMs);
    const offMessage = endpoint.onMessage((m) => {
      if (!accept(m)) return;
      done();
      resolve(m);
    });
    const offError = endpoint.onError?.((e) => {
      done();
      reject(e instanceof Error ? e : new Error(String(e)));
    });
  });
}

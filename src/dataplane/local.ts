/**
 * A dataplane runtime on the calling thread: a {@link ThreadHost} whose
 * "thread" is a pair of in-thread endpoints. Messages are delivered in
 * order on a later microtask and are not cloned, so a device spec may carry
 * objects (a backing store written in JavaScript). Used for `--io-threads
 * 0` (the small-memory mode), for emulators whose device runs inside their
 * CPU loop, and in tests with fake fds. Portable. Not spec-defined.
 *
 * @module
 */
import type { MessageEndpoint, ThreadHost, WorkerThread } from "./threads.ts";

type Handler = (message: unknown) => void;

/** One direction of the pair: delivers to the other side's handlers on a microtask. */
class Pipe {
  readonly handlers = new Set<Handler>();
  readonly errorHandlers = new Set<(e: unknown) => void>();
  closed = false;

  send(message: unknown): void {
    if (this.closed) return;
    queueMicrotask(() => {
      if (this.closed) return;
      for (const h of [...this.handlers]) {
        try {
          h(message);
        } catch (e) {
          // A throw inside a handler must not escape as an uncaught exception of this thread.
          for (const eh of this.errorHandlers) eh(e);
        }
      }
    });
  }
}

function endpoint(out: Pipe, inbound: Pipe): MessageEndpoint {
  return {
    postMessage: (m) => out.send(m),
    onMessage(handler) {
      inbound.handlers.add(handler);
      return () => inbound.handlers.delete(handler);
    },
  };
}

/**
 * A ThreadHost that runs `serve` on the calling thread for each spawn (the
 * module URL is ignored): `serve` gets the runtime's endpoint and typically
 * calls `serveDataplane({ endpoint, ... })`.
 *
 * @example
 * ```ts
 * const host = localThreadHost((endpoint) => serveDataplane({ endpoint, ...env }));
 * ```
 */
export function localThreadHost(serve: (endpoint: MessageEndpoint) => void): ThreadHost {
  return {
    spawn(_module: URL, init: unknown): WorkerThread {
      const toRuntime = new Pipe();
      const toControl = new Pipe();
      serve(endpoint(toControl, toRuntime));
      toRuntime.send(init);
      return {
        ...endpoint(toRuntime, toControl),
        onError(handler) {
          toRuntime.errorHandlers.add(handler);
          return () => toRuntime.errorHandlers.delete(handler);
        },
        terminate() {
          toRuntime.closed = true;
          toControl.closed = true;
          return Promise.resolve();
        },
      };
    },
  };
}

/** The module URL to pass with a {@link localThreadHost} (nothing is loaded). */
export const LOCAL_RUNTIME = new URL("local:dataplane");

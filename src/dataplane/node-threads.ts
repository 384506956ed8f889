/**
 * {@link ThreadHost} on Node's worker_threads. Node-only (imports
 * node:worker_threads); the portable code depends on ./threads.ts only.
 *
 * @module
 */
import { Worker, isMainThread, parentPort } from "node:worker_threads";
import type { ResourceLimits, TransferListItem } from "node:worker_threads";
import type { MessageEndpoint, ThreadHost, Transferable, WorkerThread } from "./threads.ts";

/** Options of {@link nodeThreadHost}. */
export interface NodeThreadHostOptions {
  /**
   * URL of a module whose exported `register()` installs module hooks in the
   * new thread before the entry module loads — e.g.
   * `import.meta.resolve("tsx/esm/api")` to start `.ts` entry modules
   * during development (Node 20 does not apply `--import` hooks to a
   * worker's entry module).
   */
  readonly loaderRegister?: string;
  /**
   * The new threads' V8 heap limits (Node's `resourceLimits`). A dataplane
   * thread allocates only short-lived objects per request, so a small young
   * generation bounds its resident memory at the cost of more frequent (and
   * cheap) scavenges.
   */
  readonly resourceLimits?: ResourceLimits;
}

/** A ThreadHost that starts worker_threads. */
export function nodeThreadHost(options: NodeThreadHostOptions = {}): ThreadHost {
  return {
    spawn(module: URL, init: unknown, transfer: readonly Transferable[] = []): WorkerThread {
      const limits =
        options.resourceLimits === undefined ? {} : { resourceLimits: options.resourceLimits };
      const w =
        options.loaderRegister === undefined
          ? new Worker(module, limits)
          : new Worker(
              `import(${JSON.stringify(options.loaderRegister)})` +
                `.then((m) => { m.register(); return import(${JSON.stringify(module.href)}); })`,
              { eval: true, ...limits },
            );
      w.postMessage(init, transfer as readonly TransferListItem[]);
      return {
        postMessage: (m) => w.postMessage(m),
        onMessage(handler) {
          w.on("message", handler);
          return () => w.off("message", handler);
        },
        onError(handler) {
          w.on("error", handler);
          return () => w.off("error", handler);
        },
        async terminate() {
          await w.terminate();
        },
      };
    },
  };
}

/**
 * Inside a worker_threads worker: the parent as a {@link MessageEndpoint}.
 *
 * @throws {TypeError} on the main thread.
 */
export function nodeParentEndpoint(): MessageEndpoint {
  if (isMainThread || parentPort === null) throw new TypeError("not inside a worker thread");
  const port = parentPort;
  return {
    postMessage: (m) => port.postMessage(m),
    onMessage(handler) {
      port.on("message", handler);
      return () => port.off("message", handler);
    },
  };
}

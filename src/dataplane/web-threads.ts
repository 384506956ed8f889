/**
 * {@link ThreadHost} on Web Workers (browsers with cross-origin isolation,
 * so SharedArrayBuffer is available; also Deno). Portable: it touches only
 * the global `Worker` / `self`, typed structurally here because the project
 * builds without the DOM library.
 *
 * @module
 */
import type { MessageEndpoint, ThreadHost, Transferable, WorkerThread } from "./threads.ts";

interface WebMessageEvent {
  readonly data: unknown;
}
interface WebEventTarget {
  addEventListener(type: string, fn: (e: WebMessageEvent) => void): void;
  removeEventListener(type: string, fn: (e: WebMessageEvent) => void): void;
  postMessage(message: unknown): void;
}
interface WebWorker extends WebEventTarget {
  postMessage(message: unknown, transfer?: readonly Transferable[]): void;
  terminate(): void;
}
type WebWorkerConstructor = new (url: URL | string, options?: { type?: "module" }) => WebWorker;

function endpointOf(target: WebEventTarget): MessageEndpoint {
  return {
    postMessage: (m) => target.postMessage(m),
    onMessage(handler) {
      const fn = (e: WebMessageEvent): void => handler(e.data);
      target.addEventListener("message", fn);
      return () => target.removeEventListener("message", fn);
    },
  };
}

/**
 * A ThreadHost that starts module Web Workers.
 *
 * @throws {TypeError} where the runtime has no `Worker`.
 */
export function webThreadHost(): ThreadHost {
  const Ctor = (globalThis as { Worker?: WebWorkerConstructor }).Worker;
  if (Ctor === undefined) throw new TypeError("this runtime has no Web Worker");
  return {
    spawn(module: URL, init: unknown, transfer: readonly Transferable[] = []): WorkerThread {
      const w = new Ctor(module, { type: "module" });
      w.postMessage(init, transfer);
      return {
        ...endpointOf(w),
        onError(handler) {
          const fn = (e: WebMessageEvent): void => handler(e);
          w.addEventListener("error", fn);
          return () => w.removeEventListener("error", fn);
        },
        terminate() {
          w.terminate();
          return Promise.resolve();
        },
      };
    },
  };
}

/**
 * Inside a Web Worker: the parent as a {@link MessageEndpoint}.
 *
 * @throws {TypeError} outside a worker.
 */
export function webParentEndpoint(): MessageEndpoint {
  const self = (globalThis as { self?: WebEventTarget }).self;
  if (self === undefined || typeof self.postMessage !== "function")
    throw new TypeError("not inside a Web Worker");
  return endpointOf(self);
}

/**
 * Entry module of a dataplane worker thread: serves the control thread on
 * `parentPort` with the device described by `workerData`
 * ({@link DataplaneWorkerInit}). Started by `DataplaneWorker.spawn`.
 *
 * @module
 */
import { parentPort, workerData } from "node:worker_threads";
import { serveDataplaneWorker, type DataplaneWorkerInit } from "./dataplane-worker.ts";

if (parentPort === null) throw new TypeError("dataplane-worker-entry must run in a worker thread");
const port = parentPort;
await serveDataplaneWorker(
  {
    postMessage: (m) => port.postMessage(m),
    onMessage(handler) {
      port.on("message", handler);
      return () => port.off("message", handler);
    },
  },
  workerData as DataplaneWorkerInit,
);

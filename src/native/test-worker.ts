/**
 * Worker body for watch.test.ts: exercises {@link watch} on a worker's own
 * event loop. `workerData` is `{ mode, fd }`; the worker posts "ready" once
 * its watch is running. Not part of the library's API.
 *
 * @module
 */
import { parentPort, workerData } from "node:worker_threads";
import { eventfdRead } from "./eventfd.ts";
import { ftruncate, memfdCreate } from "./files.ts";
import { mmap } from "./memory.ts";
import { PollEvent, watch } from "./watch.ts";

interface Data {
  /** kick: report the first kick, then stop; unref: unref'd watch; hold: ref'd watch (and a mapping); throw: callback throws. */
  readonly mode: "kick" | "unref" | "hold" | "throw";
  readonly fd: number;
}

const { mode, fd } = workerData as Data;
const port = parentPort;
if (port === null) throw new Error("test-worker.ts runs in a worker");

const w = watch(fd, PollEvent.READABLE, (error, events) => {
  if (mode === "throw") throw new Error("thrown by a watch callback");
  const value = eventfdRead(fd);
  w.stop();
  port.postMessage({ error: error?.errnoCode ?? null, events, value });
});
if (mode === "unref") w.unref();
if (mode === "hold") {
  const mem = memfdCreate("worker");
  ftruncate(mem, 4096);
  new Uint8Array(mmap(mem, 4096, 0))[0] = 1;
}
port.postMessage("ready");

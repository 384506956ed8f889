/**
 * The baseline of the ring benchmark: the same round trips carried by
 * postMessage over a MessagePort between two worker_threads. Role "echo"
 * answers every message; role "driver" runs the same jobs as the ring
 * driver (throughput with up to `window` in flight, posting `batch`
 * messages per turn; ping-pong with one in flight) and reports.
 *
 * @module
 */
import type { MessagePort } from "node:worker_threads";
import { nodeParentEndpoint } from "../src/dataplane/node-threads.ts";
import type { RingJob } from "./ring-driver-worker.ts";

export interface PostMessageInit {
  readonly role: "echo" | "driver";
  readonly port: MessagePort;
  readonly jobs?: readonly RingJob[];
  readonly window?: number;
}

export interface PostMessageJobResult {
  readonly job: RingJob;
  readonly elapsedMs: number;
  readonly roundTripsPerSec: number;
  readonly medianUs?: number;
  readonly p99Us?: number;
}

const parent = nodeParentEndpoint();
const off = parent.onMessage((m) => {
  off();
  const init = m as PostMessageInit;
  if (init.role === "echo") {
    init.port.on("message", (v: number) => init.port.postMessage(v));
    parent.postMessage({ type: "echo-ready" });
  } else {
    void drive(init).then(
      (results) => parent.postMessage({ type: "pm-done", results }),
      (e: unknown) => parent.postMessage({ type: "pm-error", message: String(e) }),
    );
  }
});

async function drive(init: PostMessageInit): Promise<PostMessageJobResult[]> {
  const results: PostMessageJobResult[] = [];
  for (const job of init.jobs ?? []) {
    results.push(
      job.kind === "throughput"
        ? await throughput(init.port, job.total, job.batch, init.window ?? 256)
        : await pingpong(init.port, job.total),
    );
  }
  init.port.close();
  return results;
}

function throughput(
  port: MessagePort,
  total: number,
  batch: number,
  window: number,
): Promise<PostMessageJobResult> {
  return new Promise((resolve) => {
    let started = 0;
    let completed = 0;
    const t0 = performance.now();
    // Fill the window in groups of `batch` (the ring driver's kick batch), like the ring loop.
    const pump = (): void => {
      while (
        started < total &&
        window - (started - completed) >= Math.min(batch, total - started)
      ) {
        for (let k = 0; k < batch && started < total; k++) port.postMessage(started++);
      }
    };
    const onReply = (): void => {
      completed++;
      if (completed === total) {
        port.off("message", onReply);
        const elapsedMs = performance.now() - t0;
        resolve({
          job: { kind: "throughput", total, batch },
          elapsedMs,
          roundTripsPerSec: total / (elapsedMs / 1000),
        });
        return;
      }
      pump();
    };
    port.on("message", onReply);
    pump();
  });
}

function pingpong(port: MessagePort, total: number): Promise<PostMessageJobResult> {
  return new Promise((resolve) => {
    const samples = new Float64Array(total);
    let i = 0;
    let t = 0;
    const t0 = performance.now();
    const send = (): void => {
      t = performance.now();
      port.postMessage(i);
    };
    const onReply = (): void => {
      samples[i] = performance.now() - t;
      if (++i === total) {
        port.off("message", onReply);
        const elapsedMs = performance.now() - t0;
        samples.sort();
        resolve({
          job: { kind: "pingpong", total },
          elapsedMs,
          roundTripsPerSec: total / (elapsedMs / 1000),
          medianUs: samples[Math.floor(total / 2)]! * 1000,
          p99Us: samples[Math.floor(total * 0.99)]! * 1000,
        });
        return;
      }
      send();
    };
    port.on("message", onReply);
    send();
  });
}

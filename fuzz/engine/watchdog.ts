/**
 * The engine's watchdog, a worker thread beside the fuzz loop (which may be
 * stuck in a synchronous loop, so it cannot watch itself). Every 100 ms it
 * samples the process's resident set size and the run counter in shared
 * memory. When one run takes longer than the timeout, or the RSS passes the
 * limit, it saves the input being run (also kept in shared memory), prints a
 * one-line JSON verdict on stdout and kills the process.
 *
 * @module
 */
import { writeFileSync, writeSync } from "node:fs";
import { workerData } from "node:worker_threads";
import { saveFinding, type WatchdogShared, STATE } from "./shared.ts";

const { shared, timeoutMs, rssLimitMb, crashDir, target } = workerData as {
  shared: WatchdogShared;
  timeoutMs: number;
  rssLimitMb: number;
  crashDir: string;
  target: string;
};
const state = new Int32Array(shared.state);
const input = new Uint8Array(shared.input);
let lastRun = -1;
let since = Date.now();

function die(kind: "timeout" | "rss", detail: string): void {
  const len = Atomics.load(state, STATE.INPUT_LEN);
  const file = saveFinding(crashDir, kind, input.slice(0, len), writeFileSync);
  writeSync(1, `${JSON.stringify({ type: kind, target, detail, input: file })}\n`);
  process.kill(process.pid, "SIGKILL");
}

setInterval(() => {
  const rssMb = Math.ceil(process.memoryUsage.rss() / 2 ** 20);
  if (rssMb > Atomics.load(state, STATE.PEAK_RSS_MB))
    Atomics.store(state, STATE.PEAK_RSS_MB, rssMb);
  if (rssMb > rssLimitMb) die("rss", `resident set ${rssMb} MiB over the ${rssLimitMb} MiB limit`);
  const run = Atomics.load(state, STATE.RUN);
  const busy = Atomics.load(state, STATE.BUSY) === 1;
  if (run !== lastRun || !busy) {
    lastRun = run;
    since = Date.now();
  } else if (Date.now() - since > timeoutMs) {
    die("timeout", `one run took over ${timeoutMs} ms`);
  }
}, 100);

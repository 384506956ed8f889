// The engine's watchdog, a worker thread beside the fuzz loop (which may be
// stuck in a synchronous loop, so it cannot watch itself). Every 100 ms it
// samples the process's resident set size and the run counter in shared
// memory (layout: ./shared.ts). When one run takes longer than the timeout,
// or the RSS passes the limit, it saves the input being run (also kept in
// shared memory) as <crashDir>/<timeout|rss>-<sha1>, prints a one-line JSON
// verdict on stdout and kills the process. Plain JavaScript: a worker thread
// must load it without the TypeScript loader.
import { createHash } from "node:crypto";
import { writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { workerData } from "node:worker_threads";

/** Indexes into the shared state (STATE in ./shared.ts). */
const RUN = 0;
const BUSY = 1;
const INPUT_LEN = 2;
const PEAK_RSS_MB = 3;

const { shared, timeoutMs, rssLimitMb, crashDir, target } = workerData;
const state = new Int32Array(shared.state);
const input = new Uint8Array(shared.input);
let lastRun = -1;
let since = Date.now();

/** @param {string} kind @param {string} detail */
function die(kind, detail) {
  const data = input.slice(0, Atomics.load(state, INPUT_LEN));
  const file = join(crashDir, `${kind}-${createHash("sha1").update(data).digest("hex")}`);
  writeFileSync(file, data);
  writeSync(1, `${JSON.stringify({ type: kind, target, detail, input: file })}\n`);
  process.kill(process.pid, "SIGKILL");
}

setInterval(() => {
  const rssMb = Math.ceil(process.memoryUsage.rss() / 2 ** 20);
  if (rssMb > Atomics.load(state, PEAK_RSS_MB)) Atomics.store(state, PEAK_RSS_MB, rssMb);
  if (rssMb > rssLimitMb) die("rss", `resident set ${rssMb} MiB over the ${rssLimitMb} MiB limit`);
  const run = Atomics.load(state, RUN);
  const busy = Atomics.load(state, BUSY) === 1;
  if (run !== lastRun || !busy) {
    lastRun = run;
    since = Date.now();
  } else if (Date.now() - since > timeoutMs) {
    die("timeout", `one run took over ${timeoutMs} ms`);
  }
}, 100);

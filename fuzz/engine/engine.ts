/**
 * The fuzz engine: one target, one process. Run by ../run.ts (and the suite
 * test) as `node --import tsx --import ./fuzz/engine/register.mjs
 * fuzz/engine/engine.ts --target NAME ...`, so that every project source the
 * target imports carries coverage counters.
 *
 * Loop: run every seed input (the committed corpus, then the work corpus of
 * earlier campaigns), then until the time or run budget is spent pick a
 * corpus entry, mutate it (./mutate.ts), run it, and keep it if it reached
 * new coverage (./coverage.ts). An exception escaping the target is a crash:
 * its input is saved under <work>/crashes/ and the process exits 1. A
 * watchdog thread (./watchdog.mjs) catches runs that do not end and memory
 * that grows past the limit.
 *
 * Prints JSON lines on stdout: `progress` every few seconds, then one
 * `done` (or `crash`, `timeout`, `rss`).
 *
 * @module
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Worker } from "node:worker_threads";
import { findTarget } from "../targets/index.ts";
import { Coverage } from "./coverage.ts";
import { Mutator, Rng } from "./mutate.ts";
import { STATE, allocateShared, saveFinding, sha1 } from "./shared.ts";

const { values } = parseArgs({
  options: {
    target: { type: "string" },
    seconds: { type: "string", default: "10" },
    runs: { type: "string" },
    seed: { type: "string", default: "1" },
    corpus: { type: "string" },
    work: { type: "string" },
    "timeout-ms": { type: "string", default: "10000" },
    "rss-limit-mb": { type: "string", default: "2048" },
    "progress-ms": { type: "string", default: "5000" },
  },
});

const info = findTarget(values.target ?? "");
if (info === undefined) throw new Error(`unknown target ${values.target}`);
const root = fileURLToPath(new URL("../..", import.meta.url));
const corpusDir = values.corpus ?? join(root, "fuzz", "corpus", info.name);
const work = values.work ?? join(root, ".cache", "fuzz", info.name);
const workCorpus = join(work, "corpus");
const crashDir = join(work, "crashes");
mkdirSync(workCorpus, { recursive: true });
mkdirSync(crashDir, { recursive: true });

const seconds = Number(values.seconds);
const maxRuns = values.runs === undefined ? Infinity : Number(values.runs);
const rng = new Rng(Number(values.seed));
const mutator = new Mutator(rng, info.maxLen);
const shared = allocateShared(info.maxLen);
const state = new Int32Array(shared.state);
const inputView = new Uint8Array(shared.input);
const watchdog = new Worker(new URL("./watchdog.mjs", import.meta.url), {
  execArgv: [],
  workerData: {
    shared,
    timeoutMs: Number(values["timeout-ms"]),
    rssLimitMb: Number(values["rss-limit-mb"]),
    crashDir,
    target: info.name,
  },
});
watchdog.unref();

const mod = (await import(new URL(`../targets/${info.module}`, import.meta.url).href)) as {
  fuzz: (data: Uint8Array) => void | Promise<void>;
};
const coverage = new Coverage();
const corpus: Uint8Array[] = [];
const known = new Set<string>();

const emit = (o: Record<string, unknown>): void => {
  process.stdout.write(`${JSON.stringify({ target: info.name, ...o })}\n`);
};

let runs = 0;
/** Runs one input; returns true if it reached new coverage. Exits on a crash. */
async function runOne(data: Uint8Array): Promise<boolean> {
  inputView.set(data);
  Atomics.store(state, STATE.INPUT_LEN, data.byteLength);
  Atomics.store(state, STATE.RUN, ++runs);
  Atomics.store(state, STATE.BUSY, 1);
  try {
    const r = mod.fuzz(data);
    if (r !== undefined) await r;
  } catch (e) {
    const file = saveFinding(crashDir, "crash", data, writeFileSync);
    const err = e instanceof Error ? (e.stack ?? e.message) : String(e);
    process.stderr.write(`${err}\n`);
    emit({ type: "crash", error: String(e), input: file, runs });
    process.exit(1);
  }
  Atomics.store(state, STATE.BUSY, 0);
  return coverage.collect();
}

function addToCorpus(data: Uint8Array, save: boolean): void {
  const h = sha1(data);
  if (known.has(h)) return;
  known.add(h);
  corpus.push(data);
  if (save) writeFileSync(join(workCorpus, h), data);
}

const readDir = (dir: string): Uint8Array[] => {
  try {
    return readdirSync(dir)
      .sort()
      .map((n) => new Uint8Array(readFileSync(join(dir, n))));
  } catch {
    return [];
  }
};

const started = performance.now();
const seeds = [...readDir(corpusDir), ...readDir(workCorpus)];
if (seeds.length === 0) seeds.push(new Uint8Array(0));
for (const s of seeds) {
  const d = s.subarray(0, info.maxLen);
  await runOne(d);
  addToCorpus(d, false);
}
const seedRuns = runs;

const deadline = started + seconds * 1000;
const progressMs = Number(values["progress-ms"]);
let nextProgress = performance.now() + progressMs;
const progress = (type: string): void => {
  const secs = (performance.now() - started) / 1000;
  emit({
    type,
    runs,
    seedRuns,
    seconds: Number(secs.toFixed(1)),
    execPerSec: Math.round(runs / Math.max(secs, 1e-3)),
    corpus: corpus.length,
    covered: coverage.covered,
    points: coverage.points,
    peakRssMb: Math.max(
      Atomics.load(state, STATE.PEAK_RSS_MB),
      Math.ceil(process.memoryUsage.rss() / 2 ** 20),
    ),
  });
};
while (runs < maxRuns) {
  if ((runs & 255) === 0) {
    const now = performance.now();
    if (now >= deadline) break;
    if (now >= nextProgress) {
      progress("progress");
      nextProgress = now + progressMs;
    }
  }
  const base = corpus[rng.below(corpus.length)]!;
  const other = corpus[rng.below(corpus.length)]!;
  const data = mutator.mutate(base, other);
  if (await runOne(data)) addToCorpus(data.slice(), true);
}
progress("done");
process.exit(0);

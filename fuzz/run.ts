/**
 * `npm run fuzz -- [options]`: a fuzz campaign over every target (the time
 * split evenly between them, one after another) or one target. Each target
 * runs in a process of its own under the coverage instrumentation
 * (./engine/engine.ts); this prints its progress and a summary table, and
 * exits 1 if any target crashed, hung or outgrew the memory limit (the
 * input is saved under .cache/fuzz/<target>/crashes/).
 *
 * @module
 */
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { FUZZ_TARGETS, findTarget } from "./targets/index.ts";

const HELP = `Usage: npm run fuzz -- [options]

Runs a coverage-guided fuzz campaign (docs/fuzzing.md).

Options:
  --minutes N        campaign length; split evenly between the targets (default 1)
  --runs N           stop each target after N runs instead (seed runs included)
  --target NAME      fuzz only this target (repeatable); default: all of them
  --seed N           PRNG seed of the mutations (default 1); same seed, same runs
  --work DIR         where found inputs and crashes go (default .cache/fuzz/<target>)
  --timeout-ms N     one run taking longer is a hang (default 10000)
  --rss-limit-mb N   resident memory beyond this is a finding (default 2048)
  --progress-ms N    progress line interval (default 10000)
  --quiet            no progress lines, only the summary
  --list             list the targets and exit
  --help             this text

Targets:
${FUZZ_TARGETS.map((t) => `  ${t.name.padEnd(18)} ${t.description}`).join("\n")}
`;

interface Result {
  target: string;
  type: string;
  runs?: number;
  seconds?: number;
  execPerSec?: number;
  corpus?: number;
  covered?: number;
  points?: number;
  peakRssMb?: number;
  detail?: string;
  error?: string;
  input?: string;
}

/** Options of {@link fuzzTarget}. */
export interface FuzzRunOptions {
  readonly target: string;
  readonly seconds: number;
  readonly runs?: number;
  readonly seed?: number;
  readonly work?: string;
  readonly timeoutMs?: number;
  readonly rssLimitMb?: number;
  readonly progressMs?: number;
  /** Called with every progress line. */
  readonly onProgress?: (r: Result) => void;
}

const root = fileURLToPath(new URL("..", import.meta.url));

/** Runs one target in a child process; resolves with its last report. */
export function fuzzTarget(o: FuzzRunOptions): Promise<Result & { exitCode: number | null }> {
  const args = [
    "--import",
    "tsx",
    "--import",
    "./fuzz/engine/register.mjs",
    "fuzz/engine/engine.ts",
    "--target",
    o.target,
    "--seconds",
    String(o.seconds),
    "--seed",
    String(o.seed ?? 1),
    "--timeout-ms",
    String(o.timeoutMs ?? 10000),
    "--rss-limit-mb",
    String(o.rssLimitMb ?? 2048),
    "--progress-ms",
    String(o.progressMs ?? 10000),
    ...(o.runs === undefined ? [] : ["--runs", String(o.runs)]),
    ...(o.work === undefined ? [] : ["--work", o.work]),
  ];
  const child = spawn(process.execPath, args, { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
  let last: Result = { target: o.target, type: "died" };
  let stderr = "";
  child.stderr.on("data", (b: Buffer) => (stderr = (stderr + b.toString()).slice(-8000)));
  createInterface({ input: child.stdout }).on("line", (line) => {
    let r: Result;
    try {
      r = JSON.parse(line) as Result;
    } catch {
      return;
    }
    if (r.type === "progress") o.onProgress?.(r);
    else last = r;
  });
  return new Promise((resolve) => {
    child.on("close", (code) => {
      if (last.type !== "done" && last.error === undefined && stderr !== "")
        last = { ...last, error: stderr.trim().split("\n").slice(0, 12).join("\n") };
      resolve({ ...last, exitCode: code });
    });
  });
}

function num(v: string | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number`);
  return n;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      minutes: { type: "string" },
      runs: { type: "string" },
      target: { type: "string", multiple: true },
      seed: { type: "string" },
      work: { type: "string" },
      "timeout-ms": { type: "string" },
      "rss-limit-mb": { type: "string" },
      "progress-ms": { type: "string" },
      quiet: { type: "boolean", default: false },
      list: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (values.list) {
    for (const t of FUZZ_TARGETS) console.log(t.name);
    return 0;
  }
  const names = values.target ?? FUZZ_TARGETS.map((t) => t.name);
  for (const n of names) if (findTarget(n) === undefined) throw new Error(`unknown target ${n}`);
  const runs = num(values.runs, "runs");
  const minutes = num(values.minutes, "minutes") ?? (runs === undefined ? 1 : 1e6);
  const seconds = (minutes * 60) / names.length;
  const results: (Result & { exitCode: number | null })[] = [];
  for (const target of names) {
    const started = Date.now();
    console.log(
      `fuzz: ${target}: ${runs === undefined ? `${seconds.toFixed(0)} s` : `${runs} runs`}`,
    );
    const r = await fuzzTarget({
      target,
      seconds,
      ...(runs === undefined ? {} : { runs }),
      ...(values.seed === undefined ? {} : { seed: Number(values.seed) }),
      ...(values.work === undefined ? {} : { work: `${values.work}/${target}` }),
      ...(values["timeout-ms"] === undefined ? {} : { timeoutMs: Number(values["timeout-ms"]) }),
      ...(values["rss-limit-mb"] === undefined
        ? {}
        : { rssLimitMb: Number(values["rss-limit-mb"]) }),
      ...(values["progress-ms"] === undefined ? {} : { progressMs: Number(values["progress-ms"]) }),
      onProgress: (p) => {
        if (!values.quiet)
          console.log(
            `  ${p.target}: ${p.runs} runs, ${p.execPerSec} exec/s, corpus ${p.corpus}, ` +
              `covered ${p.covered}/${p.points}, rss ${p.peakRssMb} MiB`,
          );
      },
    });
    if (r.type !== "done") {
      console.log(
        `  ${target}: ${r.type.toUpperCase()}: ${r.detail ?? r.error ?? `exit ${r.exitCode}`}`,
      );
      if (r.input !== undefined) console.log(`  input saved: ${r.input}`);
    }
    results.push({ ...r, seconds: r.seconds ?? (Date.now() - started) / 1000 });
  }
  console.log("");
  console.log(
    "target              runs        exec/s   seconds  corpus  covered      peak RSS  findings",
  );
  for (const r of results) {
    const finding = r.type === "done" ? 0 : 1;
    console.log(
      [
        r.target.padEnd(18),
        String(r.runs ?? "-").padStart(10),
        String(r.execPerSec ?? "-").padStart(10),
        String(r.seconds?.toFixed(0) ?? "-").padStart(9),
        String(r.corpus ?? "-").padStart(7),
        `${r.covered ?? "-"}/${r.points ?? "-"}`.padStart(10),
        `${r.peakRssMb ?? "-"} MiB`.padStart(12),
        String(finding).padStart(9),
      ].join(" "),
    );
  }
  return results.every((r) => r.type === "done" && r.exitCode === 0) ? 0 : 1;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().then(
    (code) => process.exit(code),
    (e: unknown) => {
      console.error(e instanceof Error ? e.message : String(e));
      process.exit(2);
    },
  );
}

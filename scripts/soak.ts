/**
 * `npm run soak -- --minutes N`: the soak scenario (test/interop/guest/soak.ts)
 * for a long time, cycling through configurations (1 and 2 queues, with and
 * without O_DIRECT), until the time is up or a run stalls. Prints one line
 * per run and a summary table; exit status 1 on the first failure.
 *
 *   --minutes N      total time (default 10)
 *   --run-seconds N  seconds of I/O per run (default 120)
 *   --guestless      no guest: the project's front-end drives the back-end
 *                    (test/reliability/guestless-soak.ts: 4 KiB random reads
 *                    and writes at depth 32, every read checked)
 *
 * @module
 */
import { parseArgs } from "node:util";
import { startVirtioTsCli } from "../test/interop/guest/backends.ts";
import { soakScenario } from "../test/interop/guest/soak.ts";
import { guestlessSoak } from "../test/reliability/guestless-soak.ts";

const { values } = parseArgs({
  options: {
    minutes: { type: "string", default: "10" },
    "run-seconds": { type: "string", default: "120" },
    guestless: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (values.help) {
  console.log("usage: npm run soak -- [--minutes N] [--run-seconds N] [--guestless]");
  process.exit(0);
}
const minutes = Number(values.minutes);
const runSeconds = Number(values["run-seconds"]);
if (!(minutes > 0) || !(Number.isInteger(runSeconds) && runSeconds >= 10)) {
  console.error("soak: --minutes must be > 0 and --run-seconds an integer ≥ 10");
  process.exit(2);
}

const configs = [
  { label: "1 queue, --direct --writeback", numQueues: 1, cliArgs: ["--direct", "--writeback"] },
  { label: "2 queues, 2 I/O threads", numQueues: 2, cliArgs: ["--io-threads", "2"] },
  { label: "1 queue", numQueues: 1, cliArgs: [] },
  {
    label: "2 queues, --direct, 2 I/O threads",
    numQueues: 2,
    cliArgs: ["--direct", "--io-threads", "2"],
  },
];
type Config = (typeof configs)[number];

async function guestRun(c: Config): Promise<[string, string, string]> {
  const r = await soakScenario(startVirtioTsCli, { ...c, seconds: runSeconds });
  return [String(r.ios[0]), String(r.ios[1]), ""];
}

async function guestlessRun(c: Config): Promise<[string, string, string]> {
  const r = await guestlessSoak({ ...c, seconds: runSeconds });
  const note = `; longest pause ${r.longestPauseMs} ms, ${r.repaired} lost wake-ups repaired`;
  return [String(r.reads), String(r.writes), note];
}

const end = Date.now() + minutes * 60_000;
const rows: string[][] = [];
let failed = false;
for (let i = 0; Date.now() < end && !failed; i++) {
  const c = configs[i % configs.length]!;
  const t0 = Date.now();
  try {
    const [reads, writes, note] = values.guestless ? await guestlessRun(c) : await guestRun(c);
    const s = ((Date.now() - t0) / 1000).toFixed(0);
    rows.push([String(i + 1), c.label, reads, writes, `${s} s`, `ok${note}`]);
  } catch (e) {
    failed = true;
    rows.push([String(i + 1), c.label, "", "", "", "FAILED"]);
    console.error(e instanceof Error ? e.message : String(e));
  }
  console.log(`soak run ${rows.at(-1)!.join("  ")}`);
}
const header = ["run", "configuration", "reads", "writes", "time", "result"];
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
const line = (r: string[]): string => r.map((c, i) => c.padEnd(widths[i]!)).join("  ");
console.log(
  ["", line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n"),
);
process.exit(failed ? 1 : 0);

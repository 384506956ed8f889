/**
 * Summarizes V8 CPU profiles (`node --cpu-prof`, e.g. from
 * `npm run bench -- --cpu-prof DIR`): self time per function and per source
 * file, as a share of the busy (non-idle) time of each thread's profile.
 *
 *   node --import tsx bench/profile-summary.ts DIR_OR_FILES... [--top N]
 *
 * @module
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { basename, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

/** The parts of a .cpuprofile this summary reads. */
export interface CpuProfile {
  readonly nodes: readonly {
    readonly id: number;
    readonly callFrame: {
      readonly functionName: string;
      readonly url: string;
      readonly lineNumber: number;
    };
  }[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

/** Self time of one function or file. */
export interface SelfTime {
  readonly name: string;
  readonly micros: number;
  /** Share of the busy time (every sample except "(idle)"). */
  readonly share: number;
}

/** A profile's summary. */
export interface ProfileSummary {
  readonly totalMicros: number;
  readonly idleMicros: number;
  readonly byFunction: readonly SelfTime[];
  readonly byFile: readonly SelfTime[];
}

const ROOT = fileURLToPath(new URL("../", import.meta.url));

function shortUrl(url: string): string {
  if (url === "") return "(native)";
  const path = url.startsWith("file://") ? fileURLToPath(url) : url;
  return path.startsWith(ROOT) ? relative(ROOT, path) : path;
}

/** Self time per function (name, file, line) and per file. */
export function summarizeProfile(p: CpuProfile): ProfileSummary {
  const byNode = new Map<number, number>();
  let total = 0;
  p.samples.forEach((id, i) => {
    const dt = Math.max(0, p.timeDeltas[i] ?? 0);
    byNode.set(id, (byNode.get(id) ?? 0) + dt);
    total += dt;
  });
  const fn = new Map<string, number>();
  const file = new Map<string, number>();
  let idle = 0;
  for (const n of p.nodes) {
    const t = byNode.get(n.id) ?? 0;
    if (t === 0) continue;
    const f = n.callFrame;
    if (f.functionName === "(idle)") {
      idle += t;
      continue;
    }
    const where = shortUrl(f.url);
    const key = f.url
      ? `${f.functionName || "(anonymous)"} ${where}:${f.lineNumber + 1}`
      : f.functionName;
    fn.set(key, (fn.get(key) ?? 0) + t);
    file.set(where, (file.get(where) ?? 0) + t);
  }
  const busy = Math.max(1, total - idle);
  const sorted = (m: Map<string, number>): SelfTime[] =>
    [...m.entries()]
      .map(([name, micros]) => ({ name, micros, share: micros / busy }))
      .sort((a, b) => b.micros - a.micros);
  return { totalMicros: total, idleMicros: idle, byFunction: sorted(fn), byFile: sorted(file) };
}

function profilesIn(paths: readonly string[]): string[] {
  return paths.flatMap((p) =>
    statSync(p).isDirectory()
      ? readdirSync(p)
          .filter((f) => f.endsWith(".cpuprofile"))
          .sort()
          .map((f) => join(p, f))
      : [p],
  );
}

function main(): void {
  const args = process.argv.slice(2);
  const topAt = args.indexOf("--top");
  const top = topAt >= 0 ? Number(args.splice(topAt, 2)[1]) : 25;
  if (args.length === 0) {
    console.error("usage: profile-summary.ts DIR_OR_FILES... [--top N]");
    process.exit(2);
  }
  for (const file of profilesIn(args)) {
    const s = summarizeProfile(JSON.parse(readFileSync(file, "utf8")) as CpuProfile);
    const busy = s.totalMicros - s.idleMicros;
    console.log(
      `\n${basename(file)}: ${(s.totalMicros / 1e6).toFixed(2)} s sampled, ${(busy / 1e6).toFixed(2)} s busy (${((100 * busy) / Math.max(1, s.totalMicros)).toFixed(0)}%)`,
    );
    console.log("  self time by file:");
    for (const t of s.byFile.slice(0, 12))
      console.log(`    ${(100 * t.share).toFixed(1).padStart(5)}%  ${t.name}`);
    console.log("  self time by function:");
    for (const t of s.byFunction.slice(0, top))
      console.log(`    ${(100 * t.share).toFixed(1).padStart(5)}%  ${t.name}`);
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) main();

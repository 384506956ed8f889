/**
 * Replays saved inputs through a target without instrumentation, e.g. a
 * crash the engine saved: `node --import tsx fuzz/replay.ts TARGET FILE...`.
 * Prints each file's outcome; exits 1 if any input fails.
 *
 * @module
 */
import { readFileSync } from "node:fs";
import { findTarget } from "./targets/index.ts";

const [name, ...files] = process.argv.slice(2);
const info = findTarget(name ?? "");
if (info === undefined || files.length === 0) {
  console.error("usage: node --import tsx fuzz/replay.ts TARGET FILE...");
  process.exit(2);
}
const mod = (await import(`./targets/${info.module}`)) as {
  fuzz: (d: Uint8Array) => void | Promise<void>;
};
let failed = 0;
for (const f of files) {
  try {
    await mod.fuzz(new Uint8Array(readFileSync(f)));
    console.log(`${f}: ok`);
  } catch (e) {
    failed++;
    console.log(`${f}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  }
}
process.exit(failed > 0 ? 1 : 0);

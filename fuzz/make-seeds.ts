/**
 * Writes the seed corpus (fuzz/corpus/<target>/seed-<n>) from the seed
 * builders in fuzz/seeds/. Run after changing a target's input format:
 * `node --import tsx fuzz/make-seeds.ts`.
 *
 * @module
 */
import { mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { blkRequestSeeds } from "./seeds/blk-request.ts";
import { emulatedRegistersSeeds } from "./seeds/emulated-registers.ts";
import { inflightLogSeeds } from "./seeds/inflight-log.ts";
import { packedRingSeeds } from "./seeds/packed-ring.ts";
import { splitRingSeeds } from "./seeds/split-ring.ts";
import { vhostUserReaderSeeds } from "./seeds/vhost-user-reader.ts";
import { vhostUserSessionSeeds } from "./seeds/vhost-user-session.ts";

const SEEDS: Record<string, () => Uint8Array[]> = {
  "split-ring": splitRingSeeds,
  "packed-ring": packedRingSeeds,
  "inflight-log": inflightLogSeeds,
  "blk-request": blkRequestSeeds,
  "emulated-registers": emulatedRegistersSeeds,
  "vhost-user-reader": vhostUserReaderSeeds,
  "vhost-user-session": vhostUserSessionSeeds,
};

const root = fileURLToPath(new URL("corpus", import.meta.url));
for (const [name, make] of Object.entries(SEEDS)) {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  for (const f of readdirSync(dir)) if (f.startsWith("seed-")) rmSync(join(dir, f));
  const seeds = make();
  seeds.forEach((s, i) => writeFileSync(join(dir, `seed-${String(i).padStart(2, "0")}`), s));
  console.log(`${name}: ${seeds.length} seeds`);
}

#!/usr/bin/env node
// Import-direction check (docs/architecture.md "Layers"): a module may import
// from its own folder or from a folder of a lower rank. Two different
// folders of the same rank may not import each other unless the pair is
// listed in SAME_RANK with the reason.
import { readFileSync, readdirSync, statSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const src = fileURLToPath(new URL("../src", import.meta.url));
// spec < memory < ring < device < dataplane < transports < devices < cli < api
const rank = {
  "errors.ts": 0,
  "log.ts": 0,
  spec: 0,
  native: 1,
  memory: 1,
  ring: 2,
  device: 3,
  testing: 3,
  dataplane: 4,
  transport: 5,
  "vhost-user": 5,
  nbd: 5,
  devices: 6,
  cli: 7,
  api: 8,
};
/** Allowed imports between different folders of one rank: "from -> to": reason. */
const SAME_RANK = {};
const layerOf = (file) => relative(src, file).split(sep)[0];
const files = [];
(function walk(d) {
  for (const n of readdirSync(d)) {
    const p = join(d, n);
    if (statSync(p).isDirectory()) walk(p);
    else if (n.endsWith(".ts") && !n.endsWith(".test.ts")) files.push(p);
  }
})(src);
let bad = 0;
for (const f of files) {
  const from = layerOf(f);
  if (!(from in rank)) {
    console.error(`unknown layer for ${relative(src, f)}`);
    bad++;
    continue;
  }
  const text = readFileSync(f, "utf8");
  for (const m of text.matchAll(/(?:import|export)[^"']*?from\s+["'](\.[^"']+)["']/g)) {
    const to = layerOf(resolve(dirname(f), m[1]));
    if (!(to in rank) || to === from) continue;
    if (rank[to] > rank[from]) {
      console.error(`layer violation: ${relative(src, f)} (${from}) imports ${m[1]} (${to})`);
      bad++;
    } else if (rank[to] === rank[from] && !(`${from} -> ${to}` in SAME_RANK)) {
      console.error(
        `layer violation: ${relative(src, f)} (${from}) imports ${m[1]} (${to}, same rank; list the pair in SAME_RANK with a reason)`,
      );
      bad++;
    }
  }
}
if (bad) process.exit(1);
console.log(`layers ok (${files.length} modules)`);

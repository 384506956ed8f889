#!/usr/bin/env node
// Import-direction check: a module may import only from its own layer or a
// lower one (see docs/architecture.md).
import { readFileSync, readdirSync, statSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const src = fileURLToPath(new URL("../src", import.meta.url));
const rank = {
  "errors.ts": 0,
  spec: 0,
  native: 1,
  memory: 1,
  ring: 2,
  device: 3,
  testing: 3,
  devices: 4,
  transport: 4,
  "vhost-user": 4,
  cli: 5,
  "index.ts": 6,
};
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
    if (!(to in rank)) continue;
    if (rank[to] > rank[from]) {
      console.error(`layer violation: ${relative(src, f)} (${from}) imports ${m[1]} (${to})`);
      bad++;
    }
  }
}
if (bad) process.exit(1);
console.log(`layers ok (${files.length} modules)`);

#!/usr/bin/env node
// The virtio-ts command: runs the compiled CLI in dist/ (built by
// `npm run build`, which `npm ci` and `npm install` run through the
// `prepare` script). No transpiler is loaded at run time, in this thread or
// in the dataplane workers.
import { existsSync } from "node:fs";

const entry = new URL("../dist/cli/main.js", import.meta.url);
if (!existsSync(entry)) {
  console.error(
    "virtio-ts: the compiled CLI (dist/cli/main.js) is missing; run `npm run build` in the package directory",
  );
  process.exit(1);
}
const { runProcess } = await import(entry.href);
await runProcess();

#!/usr/bin/env -S node --max-semi-space-size=1
// The virtio-ts command: runs the compiled CLI in dist/ (built by
// `npm run build`, which `npm ci` and `npm install` run through the
// `prepare` script). No transpiler is loaded at run time, in this thread or
// in the dataplane workers. The V8 flag keeps the young generation small:
// with `--io-threads 0` requests are served on this thread, and their
// short-lived garbage would otherwise grow the heap by tens of MiB.
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

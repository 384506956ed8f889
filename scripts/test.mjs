#!/usr/bin/env node
// The whole test suite: the build (dist/, which the CLI and its dataplane
// workers run), typecheck, lint, layer check, then every *.test.ts under
// src/ and test/ on Node's built-in runner (the tests themselves loaded by tsx).
//   VIRTIO_TS_TEST_ONLY=substr   run only test files whose path contains substr
//   VIRTIO_TS_SKIP_STATIC=1      skip typecheck and lint (local iteration only)
import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const run = (cmd, args) => {
  const r = spawnSync(cmd, args, { cwd: root, stdio: "inherit" });
  if (r.status !== 0) {
    console.error(`\n${cmd} ${args.join(" ")} failed (${r.status ?? r.signal})`);
    process.exit(r.status ?? 1);
  }
};

function findTests(dir, out = []) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) findTests(p, out);
    else if (name.endsWith(".test.ts")) out.push(relative(root, p));
  }
  return out;
}

// Always: every test that starts the `virtio-ts` command runs the compiled CLI.
run("npm", ["run", "--silent", "build"]);
if (process.env.VIRTIO_TS_SKIP_STATIC !== "1") {
  run("node_modules/.bin/tsc", ["-p", "tsconfig.json", "--noEmit"]);
  run("node_modules/.bin/eslint", ["."]);
  run("node", ["scripts/check-layers.mjs"]);
  run("node", ["scripts/gen-spec-map.mjs", "--check"]);
}
const only = process.env.VIRTIO_TS_TEST_ONLY;
const files = ["src", "test"]
  .flatMap((d) => findTests(join(root, d)))
  .filter((f) => !only || f.includes(only))
  .sort();
if (files.length === 0) {
  console.error("no test files found");
  process.exit(1);
}
// A hung test fails after 10 minutes instead of holding CI.
run("node", [
  "--import",
  "tsx",
  "--test",
  "--test-concurrency=2",
  "--test-timeout=600000",
  ...files,
]);

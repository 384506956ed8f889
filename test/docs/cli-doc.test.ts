// docs/cli.md's flag table has a row for every flag of every command, and
// names every alias.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { COMMANDS, COMMON_FLAGS } from "../../src/cli/main.ts";

const doc = readFileSync(new URL("../../docs/cli.md", import.meta.url), "utf8");

test("every flag has a row in docs/cli.md's flag table and every alias is named", () => {
  const rows = doc.split("\n").filter((l) => l.startsWith("| `--"));
  const missing: string[] = [];
  for (const c of COMMANDS.values())
    for (const f of [...c.flags, ...COMMON_FLAGS]) {
      if (!rows.some((r) => r.startsWith(`| \`--${f.name}`))) missing.push(`--${f.name}`);
      for (const a of f.aliases ?? []) if (!doc.includes(`\`--${a} `)) missing.push(`--${a}`);
    }
  assert.deepEqual(missing, [], `not in docs/cli.md: ${missing.join(", ")}`);
});

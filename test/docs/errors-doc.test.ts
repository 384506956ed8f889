// docs/errors.md lists every error code, and nothing else.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { ErrorCode } from "../../src/errors.ts";

const doc = readFileSync(new URL("../../docs/errors.md", import.meta.url), "utf8");

test("every ErrorCode is documented in docs/errors.md", () => {
  const missing = Object.values(ErrorCode).filter((c) => !doc.includes(`\`${c}\``));
  assert.deepEqual(missing, [], `undocumented codes: ${missing.join(", ")}`);
});

test("docs/errors.md documents no code that does not exist", () => {
  const known = new Set<string>(Object.values(ErrorCode));
  const documented = [...doc.matchAll(/`(VIRTIO_ERR_[A-Z0-9_]+)`/g)].map((m) => m[1]!);
  const stale = documented.filter((c) => !known.has(c));
  assert.deepEqual(stale, [], `documented but unknown: ${stale.join(", ")}`);
});

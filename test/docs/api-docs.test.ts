/**
 * docs/api/ is the API reference generated from the doc comments (typedoc.json):
 * typedoc runs into a temporary directory with warnings as errors, and must
 * pass without a warning (no broken link, no type of the public API left
 * unexported), and its output must equal the checked-in docs/api/ byte for
 * byte, so the reference cannot go stale. Every link between its pages
 * lands on a page and on an anchor that page defines.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve, sep } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../..", import.meta.url));
const checkedIn = join(root, "docs", "api");
const REGENERATE = "run `npm run docs:api` and commit docs/api/";

/** Every file under `dir`, as sorted '/'-separated paths relative to it. */
function filesUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else out.push(relative(dir, p).split(sep).join("/"));
    }
  };
  if (existsSync(dir)) walk(dir);
  return out.sort();
}

describe("API reference (docs/api/)", { timeout: 240_000 }, () => {
  const out = mkdtempSync(join(tmpdir(), "virtio-ts-api-docs-"));
  let status: number | null = null;
  let log = "";

  before(() => {
    const r = spawnSync(
      process.execPath,
      [
        join(root, "node_modules", "typedoc", "bin", "typedoc"),
        "--out",
        out,
        "--treatWarningsAsErrors",
        "--logLevel",
        "Warn",
      ],
      { cwd: root, encoding: "utf8", timeout: 180_000, env: { ...process.env, NO_COLOR: "1" } },
    );
    status = r.status;
    // Whatever typedoc prints at level Warn or above is a warning or an error.
    log = `${r.stdout}${r.stderr}${r.error ? String(r.error) : ""}`.trim();
  });
  after(() => rmSync(out, { recursive: true, force: true }));

  test("typedoc passes with warnings as errors, and warns of nothing", () => {
    assert.equal(log, "", `typedoc reported problems in the doc comments:\n${log}`);
    assert.equal(status, 0, `typedoc exited with ${status}:\n${log}`);
  });

  test("the checked-in docs/api/ is what typedoc generates", () => {
    assert.equal(status, 0, `typedoc failed, so docs/api/ could not be compared:\n${log}`);
    const generated = filesUnder(out);
    const present = filesUnder(checkedIn);
    assert.ok(generated.length > 0, "typedoc generated no files");
    const missing = generated.filter((f) => !present.includes(f));
    const extra = present.filter((f) => !generated.includes(f));
    const differing = generated.filter(
      (f) =>
        present.includes(f) && !readFileSync(join(out, f)).equals(readFileSync(join(checkedIn, f))),
    );
    assert.deepEqual(
      { missing, extra, differing },
      { missing: [], extra: [], differing: [] },
      `docs/api/ is out of date (missing: files typedoc generates that are not checked in; ` +
        `extra: checked in but no longer generated; differing: content changed): ${REGENERATE}`,
    );
  });

  test("every link between the pages of docs/api/ lands on a page and an anchor it defines", () => {
    const pages = filesUnder(checkedIn);
    const anchors = new Map(
      pages.map((f) => {
        const text = readFileSync(join(checkedIn, f), "utf8");
        return [f, new Set([...text.matchAll(/<a id="([^"]+)"><\/a>/g)].map((m) => m[1]!))];
      }),
    );
    const broken: string[] = [];
    let checked = 0;
    for (const f of pages) {
      const text = readFileSync(join(checkedIn, f), "utf8");
      for (const [, href] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        if (/^[a-z]+:/i.test(href!)) continue; // another site
        const [path, anchor] = href!.split("#");
        const target = path
          ? relative(checkedIn, resolve(dirname(join(checkedIn, f)), path))
              .split(sep)
              .join("/")
          : f;
        checked++;
        if (!anchors.has(target)) broken.push(`${f}: ${href} (no such page)`);
        else if (anchor !== undefined && !anchors.get(target)!.has(anchor))
          broken.push(`${f}: ${href} (no such anchor)`);
      }
    }
    assert.ok(checked > 100, `only ${checked} links found in docs/api/`);
    assert.equal(
      broken.length,
      0,
      `${broken.length} broken links in docs/api/, the first:\n${broken.slice(0, 20).join("\n")}`,
    );
  });
});

/**
 * Tables for the benchmark output: one model, rendered as aligned text for
 * the terminal or as a Markdown table for docs/benchmarks.md.
 *
 * @module
 */
import type { Spread } from "./stats.ts";

/** A table: a header row and body rows of the same width. */
export interface Table {
  readonly header: readonly string[];
  readonly rows: readonly (readonly string[])[];
}

/** A plain number for tables: integers with thousands separators from 100 up, else 2 decimals. */
export function fmt(n: number): string {
  if (!Number.isFinite(n)) return "–";
  if (Math.abs(n) >= 100) return Math.round(n).toLocaleString("en-US");
  if (Math.abs(n) >= 10) return n.toFixed(1);
  return n.toFixed(2);
}

/** "median (min–max)", or "–" when not measured. */
export function spreadCell(s: Spread | undefined, f: (n: number) => string = fmt): string {
  if (s === undefined) return "–";
  return s.min === s.max ? f(s.median) : `${f(s.median)} (${f(s.min)}–${f(s.max)})`;
}

/** A ratio with two decimals and its spread, e.g. "0.93 (0.90–0.97)". */
export function ratioCell(s: Spread | undefined): string {
  return spreadCell(s, (n) => n.toFixed(2));
}

/** Aligned plain text, columns separated by two spaces. */
export function textTable(t: Table): string {
  const widths = t.header.map((h, i) =>
    Math.max(h.length, ...t.rows.map((r) => (r[i] ?? "").length)),
  );
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join("  ")
      .trimEnd();
  return [line(t.header), widths.map((w) => "-".repeat(w)).join("  "), ...t.rows.map(line)].join(
    "\n",
  );
}

/** A GitHub-flavoured Markdown table (pipes in cells escaped). */
export function markdownTable(t: Table): string {
  const row = (cells: readonly string[]): string =>
    `| ${cells.map((c) => c.replace(/\|/g, "\\|")).join(" | ")} |`;
  return [row(t.header), row(t.header.map(() => "---")), ...t.rows.map(row)].join("\n");
}

/** Orders rows of a job table: read/write, depth, queues, then backend (backends of a job adjacent). */
export function byJob(
  a: { rw: string; depth: number; queues: number; backend: string },
  b: { rw: string; depth: number; queues: number; backend: string },
): number {
  return (
    a.rw.localeCompare(b.rw) ||
    a.depth - b.depth ||
    a.queues - b.queues ||
    a.backend.localeCompare(b.backend)
  );
}

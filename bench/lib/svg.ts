/**
 * Small self-contained SVG bar charts for docs/benchmarks.md: groups of bars
 * (one group per workload, one bar per backend) at the median, with a
 * min–max whisker, value labels, a legend and a linear axis from zero.
 *
 * @module
 */
import type { Spread } from "./stats.ts";

/** One series: a backend, with one value per category (undefined = not measured). */
export interface BarSeries {
  readonly name: string;
  readonly color: string;
  readonly values: readonly (Spread | undefined)[];
}

/** A grouped bar chart. */
export interface BarChart {
  readonly title: string;
  /** Axis label, e.g. "IOPS" or "µs per I/O". */
  readonly unit: string;
  readonly categories: readonly string[];
  readonly series: readonly BarSeries[];
}

/** Colors of the backends, fixed across charts. */
export const SERIES_COLORS = ["#2f6fbd", "#d9822b", "#7a7a7a", "#3a9a5b", "#9b59b6"] as const;

function esc(s: string): string {
  return s
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;");
}

/** A compact number: 1234 → "1.2k", 12.34 → "12.3", 0.123 → "0.12". */
export function compact(n: number): string {
  if (n >= 1e6) return `${(n / 1e6).toFixed(n >= 1e7 ? 0 : 1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(n >= 1e4 ? 0 : 1)}k`;
  if (n >= 10) return n.toFixed(n >= 100 ? 0 : 1);
  return n.toFixed(2);
}

/** An axis tick label: up to 3 significant digits, k/M suffixes, "0" for zero. */
export function tickLabel(n: number): string {
  if (n === 0) return "0";
  const [div, suffix] = n >= 1e6 ? [1e6, "M"] : n >= 1e3 ? [1e3, "k"] : [1, ""];
  return `${Number((n / div).toPrecision(3))}${suffix}`;
}

/** A "nice" tick step (1, 2 or 5 × 10^k) at or above `v`. */
export function niceStep(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v * (1 - 1e-9)) return m * p;
  return 10 * p;
}

/** Renders the chart as an SVG document. */
export function renderBarChart(c: BarChart): string {
  const n = c.series.length;
  const barW = 18;
  const gap = 4;
  const groupW = Math.max(n * (barW + gap) + 24, 92); // room for two-line labels
  const left = 64;
  const top = 44;
  const plotH = 220;
  const bottom = 56;
  const width = Math.ceil(
    Math.max(420, left + c.categories.length * groupW + 16, left + c.title.length * 8 + 8),
  );
  const height = top + plotH + bottom;
  const all = c.series.flatMap((s) => s.values.flatMap((v) => (v ? [v.max, v.median] : [])));
  const step = niceStep(Math.max(0, ...all) / 4);
  const ticks = Math.max(1, Math.ceil(Math.max(0, ...all) / step));
  const max = step * ticks;
  const y = (v: number): number => top + plotH - (v / max) * plotH;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${left}" y="18" font-size="13" font-weight="bold">${esc(c.title)}</text>`,
  );
  // Legend.
  let lx = left;
  for (const s of c.series) {
    out.push(
      `<rect x="${lx}" y="26" width="10" height="10" fill="${s.color}"/>`,
      `<text x="${lx + 14}" y="35">${esc(s.name)}</text>`,
    );
    lx += 24 + s.name.length * 6.5;
  }
  // Axis and grid.
  for (let i = 0; i <= ticks; i++) {
    const v = step * i;
    const yy = y(v).toFixed(1);
    out.push(
      `<line x1="${left}" x2="${width - 8}" y1="${yy}" y2="${yy}" stroke="#e4e4e4"/>`,
      `<text x="${left - 6}" y="${yy}" text-anchor="end" dominant-baseline="middle">${tickLabel(v)}</text>`,
    );
  }
  out.push(
    `<text transform="translate(14 ${top + plotH / 2}) rotate(-90)" text-anchor="middle">${esc(c.unit)}</text>`,
    `<line x1="${left}" x2="${left}" y1="${top}" y2="${top + plotH}" stroke="#888"/>`,
  );
  // Bars.
  c.categories.forEach((cat, ci) => {
    const gx = left + 12 + ci * groupW + (groupW - 24 - n * (barW + gap)) / 2;
    c.series.forEach((s, si) => {
      const v = s.values[ci];
      const x = gx + si * (barW + gap);
      if (!v) {
        out.push(
          `<text x="${x + barW / 2}" y="${top + plotH - 4}" text-anchor="middle" fill="#999">–</text>`,
        );
        return;
      }
      const yt = y(v.median);
      out.push(
        `<rect x="${x}" y="${yt.toFixed(1)}" width="${barW}" height="${(top + plotH - yt).toFixed(1)}" fill="${s.color}"><title>${esc(`${s.name}, ${cat}: ${compact(v.median)} (${compact(v.min)}–${compact(v.max)})`)}</title></rect>`,
      );
      if (v.max > v.min) {
        const cx = x + barW / 2;
        out.push(
          `<line x1="${cx}" x2="${cx}" y1="${y(v.min).toFixed(1)}" y2="${y(v.max).toFixed(1)}" stroke="#222"/>`,
          `<line x1="${cx - 4}" x2="${cx + 4}" y1="${y(v.max).toFixed(1)}" y2="${y(v.max).toFixed(1)}" stroke="#222"/>`,
          `<line x1="${cx - 4}" x2="${cx + 4}" y1="${y(v.min).toFixed(1)}" y2="${y(v.min).toFixed(1)}" stroke="#222"/>`,
        );
      }
      out.push(
        `<text x="${x + barW / 2}" y="${(Math.min(yt, y(v.max)) - 3).toFixed(1)}" text-anchor="middle" font-size="9">${compact(v.median)}</text>`,
      );
    });
    const labelX = gx + (n * (barW + gap)) / 2 - gap / 2;
    const words = cat.split(" ");
    const half = Math.ceil(words.length / 2);
    out.push(
      `<text x="${labelX}" y="${top + plotH + 16}" text-anchor="middle">${esc(words.slice(0, half).join(" "))}</text>`,
      `<text x="${labelX}" y="${top + plotH + 30}" text-anchor="middle">${esc(words.slice(half).join(" "))}</text>`,
    );
  });
  out.push(`</svg>`);
  return out.join("\n") + "\n";
}

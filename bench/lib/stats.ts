/**
 * Summaries of repeated measurements for the benchmark reports: every figure
 * is run several times and reported as median with min and max.
 *
 * @module
 */

/** Median / min / max of repeated measurements, and how many there were. */
export interface Spread {
  readonly median: number;
  readonly min: number;
  readonly max: number;
  /** Number of measurements (runs that produced a value). */
  readonly n: number;
}

/**
 * Median, min and max of `values` (NaN and non-finite values are left out);
 * undefined when none is left.
 */
export function spreadOf(values: readonly number[]): Spread | undefined {
  const s = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (s.length === 0) return undefined;
  const mid = s.length >> 1;
  const median = s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
  return { median, min: s[0]!, max: s[s.length - 1]!, n: s.length };
}

/**
 * The `p`-th percentile (0 < p <= 100) of an ascending-sorted array, by the
 * nearest-rank method; NaN for an empty array.
 */
export function percentileSorted(sorted: ArrayLike<number>, p: number): number {
  if (!(p > 0 && p <= 100)) throw new RangeError(`percentile must be in (0, 100], got ${p}`);
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

/** `a / b` when both are positive finite numbers, else undefined. */
export function ratio(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined || b === undefined) return undefined;
  return Number.isFinite(a) && Number.isFinite(b) && b > 0 ? a / b : undefined;
}

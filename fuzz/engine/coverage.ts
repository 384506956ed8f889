/**
 * The engine's view of the coverage counters that ./instrument-hooks.mjs
 * compiles into the sources: after each run, every counter hit is folded
 * into AFL-style hit-count buckets (1, 2, 3, 4-7, 8-15, 16-31, 32-127,
 * 128+) and cleared; a run that reaches a bucket no run reached before
 * found new coverage.
 *
 * @module
 */

interface CoverageGlobals {
  __virtioFuzzCov?: Uint8Array;
  __virtioFuzzEdges?: number;
}

const g = globalThis as CoverageGlobals;

const BUCKET = new Uint8Array(256);
for (let i = 1; i < 256; i++)
  BUCKET[i] =
    i === 1
      ? 1
      : i === 2
        ? 2
        : i === 3
          ? 4
          : i < 8
            ? 8
            : i < 16
              ? 16
              : i < 32
                ? 32
                : i < 128
                  ? 64
                  : 128;

/** Accumulated coverage of one campaign. */
export class Coverage {
  readonly #counters: Uint8Array;
  readonly #words: Uint32Array;
  readonly #seen: Uint8Array;
  #points = 0;

  constructor() {
    const c = g.__virtioFuzzCov;
    if (c === undefined)
      throw new Error("coverage counters missing: run under --import ./fuzz/engine/register.mjs");
    this.#counters = c;
    this.#words = new Uint32Array(c.buffer, c.byteOffset, c.byteLength >>> 2);
    this.#seen = new Uint8Array(c.byteLength);
  }

  /** Instrumented points in the modules loaded so far. */
  get points(): number {
    return g.__virtioFuzzEdges ?? 0;
  }

  /** Points reached by some run. */
  get covered(): number {
    return this.#points;
  }

  /** Folds the counters of the last run in and clears them; true if the run found new coverage. */
  collect(): boolean {
    const c = this.#counters;
    const words = this.#words;
    const seen = this.#seen;
    const end = Math.min(words.length, (this.points >>> 2) + 1);
    let fresh = false;
    for (let w = 0; w < end; w++) {
      if (words[w] === 0) continue;
      for (let i = w << 2, e = i + 4; i < e; i++) {
        const hits = c[i]!;
        if (hits === 0) continue;
        const b = BUCKET[hits]!;
        const old = seen[i]!;
        if ((old & b) === 0) {
          if (old === 0) this.#points++;
          seen[i] = old | b;
          fresh = true;
        }
      }
      words[w] = 0;
    }
    return fresh;
  }
}

/**
 * Input mutations for the fuzz engine, in the manner of libFuzzer's and
 * AFL's: bit flips, random and "interesting" bytes and integers, small
 * arithmetic, erasing, inserting and duplicating runs, and crossover with
 * another corpus entry. Deterministic for a given seed.
 *
 * @module
 */

/** A small, fast deterministic PRNG (xorshift32). */
export class Rng {
  #s: number;

  constructor(seed: number) {
    this.#s = seed >>> 0 || 0x9e3779b9;
  }

  /** A u32. */
  next(): number {
    let x = this.#s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#s = x >>> 0;
    return this.#s;
  }

  /** An integer in [0, n). */
  below(n: number): number {
    return n <= 1 ? 0 : this.next() % n;
  }
}

const INTERESTING_8 = [0, 1, 2, 4, 8, 15, 16, 32, 64, 0x7f, 0x80, 0xfe, 0xff];
const INTERESTING_16 = [0, 1, 0xff, 0x100, 0x1000, 0x7fff, 0x8000, 0xfffe, 0xffff];
const INTERESTING_32 = [0, 1, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];

/** Mutates inputs; `maxLen` bounds every result. */
export class Mutator {
  readonly #rng: Rng;
  readonly #maxLen: number;

  constructor(rng: Rng, maxLen: number) {
    this.#rng = rng;
    this.#maxLen = maxLen;
  }

  /**
   * A mutated copy of `base`: one to eight stacked mutations; `other` (another
   * corpus entry) feeds crossover.
   */
  mutate(base: Uint8Array, other: Uint8Array): Uint8Array {
    let d: Uint8Array = base.slice(0, this.#maxLen);
    const n = 1 << this.#rng.below(4);
    for (let i = 0; i < n; i++) d = this.#one(d, other);
    return d.byteLength > this.#maxLen ? d.subarray(0, this.#maxLen) : d;
  }

  #one(d: Uint8Array, other: Uint8Array): Uint8Array {
    const r = this.#rng;
    const len = d.byteLength;
    const kind = len === 0 ? 6 : r.below(11);
    switch (kind) {
      case 0:
        d[r.below(len)]! ^= 1 << r.below(8);
        return d;
      case 1:
        d[r.below(len)] = r.below(256);
        return d;
      case 2:
        d[r.below(len)] = INTERESTING_8[r.below(INTERESTING_8.length)]!;
        return d;
      case 3:
        return this.#putInt(d, 2, INTERESTING_16[r.below(INTERESTING_16.length)]!);
      case 4:
        return this.#putInt(d, 4, INTERESTING_32[r.below(INTERESTING_32.length)]!);
      case 5: {
        // Small arithmetic on a u8, u16 or u32 (little-endian).
        const width = 1 << r.below(3);
        if (len < width) return d;
        const at = r.below(len - width + 1);
        let v = 0;
        for (let i = width - 1; i >= 0; i--) v = v * 256 + d[at + i]!;
        const delta = 1 + r.below(35);
        v = r.below(2) === 0 ? v + delta : v - delta;
        return this.#putIntAt(d, at, width, v);
      }
      case 6: {
        // Insert 1..16 random or repeated bytes.
        const n = 1 + r.below(16);
        const at = r.below(len + 1);
        const ins = new Uint8Array(n);
        const fill = r.below(2) === 0 ? -1 : r.below(256);
        for (let i = 0; i < n; i++) ins[i] = fill < 0 ? r.below(256) : fill;
        return splice(d, at, 0, ins);
      }
      case 7: {
        const at = r.below(len);
        return splice(d, at, 1 + r.below(Math.min(16, len - at)), new Uint8Array(0));
      }
      case 8: {
        // Copy a run of the input over another place in it, or insert it there.
        const from = r.below(len);
        const n = 1 + r.below(Math.min(32, len - from));
        const run = d.slice(from, from + n);
        const to = r.below(len);
        if (r.below(2) === 0) return splice(d, to, 0, run);
        d.set(run.subarray(0, Math.min(n, len - to)), to);
        return d;
      }
      case 9: {
        // Crossover: a run of another corpus entry, inserted or overwritten.
        if (other.byteLength === 0) return d;
        const from = r.below(other.byteLength);
        const n = 1 + r.below(Math.min(64, other.byteLength - from));
        const run = other.slice(from, from + n);
        const to = r.below(len + 1);
        if (r.below(2) === 0 || to === len) return splice(d, to, 0, run);
        d.set(run.subarray(0, Math.min(n, len - to)), to);
        return d;
      }
      default:
        // Small values steer the "which operation next" bytes of the targets.
        d[r.below(len)] = r.below(16);
        return d;
    }
  }

  #putInt(d: Uint8Array, width: number, v: number): Uint8Array {
    if (d.byteLength < width) return d;
    return this.#putIntAt(d, this.#rng.below(d.byteLength - width + 1), width, v);
  }

  #putIntAt(d: Uint8Array, at: number, width: number, v: number): Uint8Array {
    let x = v >>> 0;
    for (let i = 0; i < width; i++) {
      d[at + i] = x & 0xff;
      x >>>= 8;
    }
    return d;
  }
}

/** `d` with `del` bytes at `at` replaced by `ins`. */
function splice(d: Uint8Array, at: number, del: number, ins: Uint8Array): Uint8Array {
  const out = new Uint8Array(d.byteLength - del + ins.byteLength);
  out.set(d.subarray(0, at), 0);
  out.set(ins, at);
  out.set(d.subarray(at + del), at + ins.byteLength);
  return out;
}

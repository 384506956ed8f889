/**
 * A cursor over one fuzz input: the targets take every decision (sizes,
 * values, which operation comes next) from it, so an input replays exactly.
 * Reads past the end yield zeros, so every input, even an empty one, is a
 * complete program.
 *
 * @module
 */

/** Reads integers and byte runs from a fuzz input, front to back. */
export class FuzzInput {
  readonly #data: Uint8Array;
  #off = 0;

  constructor(data: Uint8Array) {
    this.#data = data;
  }

  /** Bytes not read yet. */
  get remaining(): number {
    return this.#data.byteLength - this.#off;
  }

  /** True once every byte was read. */
  get done(): boolean {
    return this.#off >= this.#data.byteLength;
  }

  u8(): number {
    return this.#off < this.#data.byteLength ? this.#data[this.#off++]! : 0;
  }

  u16(): number {
    return this.u8() | (this.u8() << 8);
  }

  u32(): number {
    return (this.u16() | (this.u16() << 16)) >>> 0;
  }

  u64(): bigint {
    const lo = BigInt(this.u32());
    return (BigInt(this.u32()) << 32n) | lo;
  }

  bool(): boolean {
    return (this.u8() & 1) !== 0;
  }

  /** An integer in [0, n) (n ≤ 256). */
  below(n: number): number {
    return n <= 1 ? 0 : this.u8() % n;
  }

  /** The next `n` bytes (fewer at the end of the input), as a copy. */
  bytes(n: number): Uint8Array {
    const end = Math.min(this.#data.byteLength, this.#off + n);
    const out = this.#data.slice(this.#off, end);
    this.#off = end;
    return out;
  }

  /** A cursor over the next `n` bytes (fewer at the end of the input). */
  sub(n: number): FuzzInput {
    return new FuzzInput(this.bytes(n));
  }

  /** Exactly `n` bytes: the next ones, zero-padded at the end of the input. */
  exactly(n: number): Uint8Array {
    const out = new Uint8Array(n);
    out.set(this.bytes(n));
    return out;
  }
}

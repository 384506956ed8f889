/**
 * Rate limiting of log lines per kind: a storm of one message (a front-end
 * that connects and misbehaves in a loop, a disk that fails every request)
 * costs a bounded number of lines, and what was dropped is counted and
 * reported. Not spec-defined.
 *
 * A line's kind is its text with every number taken out, so
 * `conn 7: ring 0 broken` and `conn 8: ring 1 broken` are one kind.
 *
 * @module
 */

/** What a window allows and how long it lasts. */
export interface RateLimitOptions {
  /** Lines of one kind per window (default 20). */
  readonly lines?: number;
  /** Window length in ms (default 10000). */
  readonly windowMs?: number;
}

interface Kind {
  started: number;
  count: number;
  dropped: number;
  example: string;
}

const NUMBERS = /0x[0-9a-f]+|\d+/gi;

/** Decides per line whether to write it; reports drops through `report`. */
export class LineRateLimiter {
  readonly #lines: number;
  readonly #windowMs: number;
  readonly #report: (summary: string) => void;
  readonly #kinds = new Map<string, Kind>();
  readonly #now: () => number;
  #timer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    report: (summary: string) => void,
    o: RateLimitOptions = {},
    now: () => number = Date.now,
  ) {
    this.#lines = o.lines ?? 20;
    this.#windowMs = o.windowMs ?? 10_000;
    this.#report = report;
    this.#now = now;
  }

  /** True if `line` may be written now. */
  allow(line: string): boolean {
    const key = line.replace(NUMBERS, "#");
    const now = this.#now();
    let k = this.#kinds.get(key);
    if (k !== undefined && now - k.started >= this.#windowMs) {
      this.#summarize(k);
      k = undefined;
    }
    if (k === undefined) {
      k = { started: now, count: 0, dropped: 0, example: line };
      this.#kinds.set(key, k);
    }
    if (++k.count <= this.#lines) return true;
    if (k.dropped++ === 0) k.example = line;
    this.#armFlush();
    return false;
  }

  /** Reports every drop counted so far (e.g. before exit). */
  flush(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    for (const k of this.#kinds.values()) this.#summarize(k);
    this.#kinds.clear();
  }

  #summarize(k: Kind): void {
    if (k.dropped > 0)
      this.#report(`${k.dropped} more lines like this one were dropped: ${k.example}`);
    k.dropped = 0;
  }

  /** Drops are reported at the latest one window after they happened. */
  #armFlush(): void {
    if (this.#timer !== null) return;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.flush();
    }, this.#windowMs);
    (this.#timer as { unref?: () => void }).unref?.();
  }
}

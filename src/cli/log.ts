/**
 * Logging setup of the CLI: where lines go and how they name their source.
 * Not spec-defined.
 *
 * - Ordinary lines go to stderr as `virtio-ts: <message>`; while a front-end
 *   is connected they name it: `virtio-ts: conn 2: <message>` (the device's
 *   own lines already name the queue and request, e.g. `virtio-blk vq 0 req 17`).
 * - With `--verbose`, the device's trace hook is on and every trace event is
 *   one QEMU trace-event style line on stderr:
 *   `conn 2: virtqueue_pop vq 0 head 17 in_num 2 out_num 1`.
 * - A process serving several exports names the export first:
 *   `virtio-ts: disk1: conn 2: <message>`.
 * - stdout carries only what scripts wait for (`listening on PATH`).
 *
 * @module
 */
import type { Logger } from "../log.ts";
import { LineRateLimiter, type RateLimitOptions } from "./rate-limit.ts";

/** The process's output streams and stop signals, injectable for tests. */
export interface CliIo {
  /** Writes one line to stdout. */
  out(line: string): void;
  /** Writes one line to stderr. */
  err(line: string): void;
  /**
   * Calls `handler` on every SIGINT / SIGTERM until the returned function is
   * called.
   */
  onStopSignal(handler: (signal: NodeJS.Signals) => void): () => void;
}

/** The CLI's logger. */
export class CliLog {
  readonly #io: CliIo;
  readonly #verbose: boolean;
  /** The export's name and a colon, or "" (./commands/vhost-user-blk.ts). */
  readonly #prefix: string;
  /** Connection label prefixed to lines, e.g. `"conn 2"`; undefined while none is connected. */
  connection: string | undefined;

  readonly #limiter: LineRateLimiter;

  constructor(
    io: CliIo,
    verbose: boolean,
    rateLimit?: RateLimitOptions,
    scope?: { prefix: string; limiter: LineRateLimiter },
  ) {
    this.#io = io;
    this.#verbose = verbose;
    this.#prefix = scope?.prefix ?? "";
    this.#limiter =
      scope?.limiter ??
      new LineRateLimiter((summary) => this.#io.err(`virtio-ts: ${summary}`), rateLimit);
  }

  /** A log whose lines name export `id` first (same streams and rate limit; its own connection label). */
  forExport(id: string): CliLog {
    return new CliLog(this.#io, this.#verbose, undefined, {
      prefix: `${id}: `,
      limiter: this.#limiter,
    });
  }

  get verbose(): boolean {
    return this.#verbose;
  }

  /** One ordinary line on stderr (rate-limited per kind: ./rate-limit.ts). */
  line(message: string): void {
    const conn = this.connection === undefined ? "" : `${this.connection}: `;
    const line = `${this.#prefix}${conn}${message}`;
    if (this.#limiter.allow(line)) this.#io.err(`virtio-ts: ${line}`);
  }

  /** Reports the lines the rate limit dropped so far (before exit). */
  flush(): void {
    this.#limiter.flush();
  }

  /** One ordinary line about the whole process or export (never names a connection). */
  process(message: string): void {
    this.#io.err(`virtio-ts: ${this.#prefix}${message}`);
  }

  /** One line on stderr only with `--verbose`. */
  debug(message: string): void {
    if (this.#verbose) this.line(message);
  }

  /** A trace-event line (only with `--verbose`). */
  trace(event: string): void {
    const conn = this.connection === undefined ? "" : `${this.connection}: `;
    this.#io.err(`${this.#prefix}${conn}${event}`);
  }

  /** The library's logger: errors and warnings always, the trace hook only with `--verbose`. */
  logger(): Logger {
    return {
      error: (m) => this.line(m),
      warn: (m) => this.line(m),
      trace: this.#verbose ? (m) => this.trace(m) : undefined,
    };
  }
}

/**
 * Logging of the CLI: levels, where lines go, how they name their source,
 * and their two formats. Not spec-defined (the vhost-user spec's "Backend
 * program conventions" only keep stdin/stdout/stderr usual: stdout carries
 * what scripts wait for, logs go to stderr).
 *
 * - Levels, most severe first: error, warn, info, debug, trace
 *   (`--log-level`, default info; `--verbose` is trace). A line is written
 *   when its level is at or above the chosen one.
 * - Text (`--log-format text`, the default): `virtio-ts: <message>` on
 *   stderr; warnings, errors and debug lines name their level
 *   (`virtio-ts: warning: ...`). While a front-end is connected lines name
 *   it (`virtio-ts: conn 2: ...`; the device's own lines already name the
 *   queue and request, e.g. `virtio-blk vq 0 req 17`); a process serving
 *   several exports names the export first (`virtio-ts: disk1: conn 2: ...`).
 *   Trace lines are QEMU trace-event style without the program name:
 *   `conn 2: virtqueue_pop vq 0 head 17 in_num 2 out_num 1`.
 *   `--log-timestamp` puts an ISO-8601 UTC time first.
 * - JSON (`--log-format json`): one object per line with `time`, `level`,
 *   `msg`, and `export`, `conn`, `queue`, `req` (the {@link LogFields}) when
 *   they apply, for log collectors.
 * - stdout carries only what scripts wait for (`listening on PATH`).
 *
 * @module
 */
import type { LogFields, Logger } from "../log.ts";
import { LineRateLimiter, type RateLimitOptions } from "./rate-limit.ts";

/** The process's output streams and stop signals, injectable for tests. */
export interface CliIo {
  /** Writes one line to stdout. */
  out(line: string): void;
  /** Writes one line to stderr. */
  err(line: string): void;
  /**
   * Calls `handler` on every SIGINT / SIGTERM / SIGHUP until the returned
   * function is called.
   */
  onStopSignal(handler: (signal: NodeJS.Signals) => void): () => void;
  /** The environment ($NOTIFY_SOCKET); none in tests that run in-process. */
  readonly env?: Readonly<Record<string, string | undefined>>;
}

/** Log levels, most severe first. */
export const LOG_LEVELS = ["error", "warn", "info", "debug", "trace"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
/** Line formats. */
export const LOG_FORMATS = ["text", "json"] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/** How lines are filtered and written. */
export interface LogOptions {
  /** Least severe level written (default info). */
  readonly level?: LogLevel;
  /** Text lines start with an ISO-8601 UTC time (JSON lines always carry one). */
  readonly timestamp?: boolean;
  readonly format?: LogFormat;
  readonly rateLimit?: RateLimitOptions;
  /** The clock (tests). */
  readonly now?: () => Date;
}

/** The word text lines carry for a level ("" for info and trace). */
const TEXT_LEVEL: Readonly<Record<LogLevel, string>> = {
  error: "error: ",
  warn: "warning: ",
  info: "",
  debug: "debug: ",
  trace: "",
};

const RESERVED = new Set(["time", "level", "msg", "export", "conn"]);

/** What one line is about, besides its message. */
interface LineSource {
  readonly conn?: number | undefined;
  readonly fields?: LogFields | undefined;
  /** A trace line (text: no program name). */
  readonly trace?: boolean;
  /** The line that ends the process (text: no level word, as every fatal line). */
  readonly fatal?: boolean;
}

/** Shared by a log and the logs of its exports. @internal */
export interface Sink {
  readonly io: CliIo;
  readonly rank: number;
  readonly timestamp: boolean;
  readonly format: LogFormat;
  readonly now: () => Date;
  readonly limiter: LineRateLimiter;
}

/** The CLI's logger. */
export class CliLog {
  readonly #sink: Sink;
  /** The export's id (named in lines when the process serves several). */
  readonly #export: string | undefined;
  /** The connection lines name (`conn N`); undefined while none is connected. */
  connection: number | undefined;

  constructor(io: CliIo, options: LogOptions = {}, scope?: { sink: Sink; export: string }) {
    this.#export = scope?.export;
    if (scope !== undefined) {
      this.#sink = scope.sink;
      return;
    }
    this.#sink = {
      io,
      rank: LOG_LEVELS.indexOf(options.level ?? "info"),
      timestamp: options.timestamp === true,
      format: options.format ?? "text",
      now: options.now ?? (() => new Date()),
      // Reports drops later, once #sink is set.
      limiter: new LineRateLimiter((s) => this.#emit("warn", s, {}), options.rateLimit),
    };
  }

  /** A log whose lines name export `id` first (same streams and rate limit; its own connection). */
  forExport(id: string): CliLog {
    return new CliLog(this.#sink.io, {}, { sink: this.#sink, export: id });
  }

  /** True if lines of `level` are written. */
  enabled(level: LogLevel): boolean {
    return LOG_LEVELS.indexOf(level) <= this.#sink.rank;
  }

  /** True at the trace level (`--verbose`): the device traces every request. */
  get verbose(): boolean {
    return this.enabled("trace");
  }

  /** One line about the current connection, rate-limited per kind (./rate-limit.ts). */
  line(message: string, level: LogLevel = "info", fields?: LogFields): void {
    if (!this.enabled(level)) return;
    const conn = this.connection === undefined ? "" : `conn ${this.connection}: `;
    if (this.#sink.limiter.allow(`${this.#prefix()}${conn}${message}`))
      this.#emit(level, message, { conn: this.connection, fields });
  }

  /** One line about the whole process or export (never names a connection; not rate-limited). */
  process(message: string, level: LogLevel = "info"): void {
    if (this.enabled(level)) this.#emit(level, message, {});
  }

  /** One line at the debug level. */
  debug(message: string): void {
    this.line(message, "debug");
  }

  /** A trace-event line (trace level only). */
  trace(event: string, fields?: LogFields): void {
    if (this.enabled("trace"))
      this.#emit("trace", event, { conn: this.connection, fields, trace: true });
  }

  /** The one line before the process ends with a failure (always written). */
  fatal(message: string): void {
    this.#emit("error", message, { fatal: true });
  }

  /** Reports the lines the rate limit dropped so far (before exit). */
  flush(): void {
    this.#sink.limiter.flush();
  }

  /** The library's logger: errors and warnings, and the trace hook only at the trace level. */
  logger(): Logger {
    return {
      error: (m, f) => this.line(m, "error", f),
      warn: (m, f) => this.line(m, "warn", f),
      trace: this.verbose ? (m, f) => this.trace(m, f) : undefined,
    };
  }

  #prefix(): string {
    return this.#export === undefined ? "" : `${this.#export}: `;
  }

  #emit(level: LogLevel, message: string, src: LineSource): void {
    const sink = this.#sink;
    if (sink.format === "json") {
      sink.io.err(JSON.stringify(this.#record(level, message, src)));
      return;
    }
    const time = sink.timestamp ? `${sink.now().toISOString()} ` : "";
    const conn = src.conn === undefined ? "" : `conn ${src.conn}: `;
    const head =
      src.trace === true ? "" : `virtio-ts: ${src.fatal === true ? "" : TEXT_LEVEL[level]}`;
    sink.io.err(`${time}${head}${this.#prefix()}${conn}${message}`);
  }

  #record(level: LogLevel, message: string, src: LineSource): Record<string, unknown> {
    const record: Record<string, unknown> = {
      time: this.#sink.now().toISOString(),
      level,
      msg: message,
    };
    if (this.#export !== undefined) record["export"] = this.#export;
    if (src.conn !== undefined) record["conn"] = src.conn;
    for (const [k, v] of Object.entries(src.fields ?? {}))
      if (v !== undefined && !RESERVED.has(k)) record[k] = v;
    return record;
  }
}

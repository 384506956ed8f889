/**
 * The project-wide logger interface: every layer that reports (ring users,
 * dataplane workers, devices, transports, the CLI) logs through a
 * {@link Logger}. Not spec-defined. Lines name what they are about in their
 * text (`virtio-blk vq 0 req 17: ...`) and, for collectors, in
 * {@link LogFields}: the queue and the request (its head descriptor index,
 * unique while it is in flight).
 *
 * @module
 */

/** Structured fields of a log line (all optional). */
export interface LogFields {
  /** Virtqueue index. */
  readonly queue?: number;
  /** Request: the head descriptor index of its chain. */
  readonly req?: number;
  /** Anything else worth a field (numbers or short strings). */
  readonly [field: string]: number | string | boolean | undefined;
}

/**
 * Where a component reports. `trace` is optional: when present (verbose),
 * components emit one line per event in QEMU's trace-event style, e.g.
 * `virtqueue_pop vq 0 head 3 in_num 2 out_num 1`; leave it undefined to skip
 * building those lines.
 */
export interface Logger {
  /** Something failed (an I/O error, a broken device). */
  error(message: string, fields?: LogFields): void;
  /** Something odd that was handled (e.g. a fallback). */
  warn(message: string, fields?: LogFields): void;
  /** Verbose trace lines. */
  readonly trace?: ((message: string, fields?: LogFields) => void) | undefined;
}

/** Logs errors and warnings to the console; no trace. */
export const consoleLogger: Logger = {
  error: (m) => console.error(m),
  warn: (m) => console.warn(m),
};

/** Discards everything. */
export const silentLogger: Logger = {
  error: () => {},
  warn: () => {},
};

/** A one-line description of an error for logs (`CODE: message` when it has a string code). */
export function errorText(e: unknown): string {
  if (e instanceof Error) {
    const code = (e as { code?: unknown }).code;
    return typeof code === "string" ? `${code}: ${e.message}` : e.message;
  }
  return String(e);
}

/**
 * The small logger interface of the virtio-blk device, and QEMU-style trace
 * names. Not spec-defined; lines always name the queue and the request
 * (its head descriptor index, unique while it is in flight).
 *
 * @module
 */

/**
 * Where the device reports. `trace` is optional: when present (verbose), the
 * engine emits one line per event in QEMU's trace-event style, e.g.
 * `virtqueue_pop vq 0 head 3 in_num 2 out_num 1` and
 * `virtio_blk_req_complete vq 0 req 3 status 0 len 4097`.
 */
export interface BlkLogger {
  /** Something failed (a backing-store I/O error, a broken device). */
  error(message: string): void;
  /** Something odd the device handled (e.g. a fallback). */
  warn(message: string): void;
  /** Verbose trace lines; leave undefined to skip building them. */
  readonly trace?: ((message: string) => void) | undefined;
}

/** Logs errors and warnings to the console; no trace. */
export const consoleBlkLogger: BlkLogger = {
  error: (m) => console.error(m),
  warn: (m) => console.warn(m),
};

/** Discards everything. */
export const silentBlkLogger: BlkLogger = {
  error: () => {},
  warn: () => {},
};

const TYPE_NAMES: Readonly<Record<number, string>> = {
  0: "IN",
  1: "OUT",
  4: "FLUSH",
  8: "GET_ID",
  10: "GET_LIFETIME",
  11: "DISCARD",
  13: "WRITE_ZEROES",
  14: "SECURE_ERASE",
};

/** The spec name of a request type without its prefix, or the number. */
export function blkTypeName(type: number): string {
  return TYPE_NAMES[type] ?? String(type);
}

/** A one-line description of an error for logs. */
export function errorText(e: unknown): string {
  if (e instanceof Error) {
    const code = (e as { code?: unknown }).code;
    return typeof code === "string" ? `${code}: ${e.message}` : e.message;
  }
  return String(e);
}

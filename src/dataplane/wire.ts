/**
 * Errors as message fields: how an error thrown in a dataplane worker (or in
 * the runtime on the calling thread) reaches the control side with its kind
 * and its stable code intact. Not spec-defined; the codes are the project's
 * (docs/errors.md).
 *
 * @module
 */
import { ErrorCode, VirtioError, type ErrorCodeValue } from "../errors.ts";

/** A structured-cloneable error: a VirtioError's code and details survive the crossing. */
export interface WireError {
  readonly name: string;
  readonly message: string;
  readonly code?: string;
  readonly details?: Readonly<Record<string, number | string | bigint | boolean>>;
}

const CODES = new Set<string>(Object.values(ErrorCode));

/** An error as a message field. */
export function toWireError(e: unknown): WireError {
  if (e instanceof VirtioError)
    return { name: e.name, message: e.message, code: e.code, details: e.details };
  if (e instanceof Error) return { name: e.name, message: e.message };
  return { name: "Error", message: String(e) };
}

/** The error back: a VirtioError with its code, a TypeError / RangeError, or an Error. */
export function fromWireError(w: WireError): Error {
  if (w.code !== undefined && CODES.has(w.code))
    return new VirtioError(w.code as ErrorCodeValue, w.message, w.details ?? {});
  if (w.name === "TypeError") return new TypeError(w.message);
  if (w.name === "RangeError") return new RangeError(w.message);
  return new Error(w.message);
}

/** True if `m` looks like a message with a string `type` (shape check of what crossed a thread). */
export function hasType(m: unknown): m is { type: string } {
  return typeof m === "object" && m !== null && typeof (m as { type?: unknown }).type === "string";
}

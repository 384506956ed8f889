/**
 * What a fuzz target treats as a finding: an exception that is not one of
 * the documented refusals of the code under test, or a broken invariant
 * found by the target itself ({@link FuzzFailure}).
 *
 * @module
 */
import { isVirtioError, type ErrorCodeValue } from "../../src/errors.ts";

/** A broken invariant found by a target (always a finding). */
export class FuzzFailure extends Error {
  override readonly name = "FuzzFailure";
}

/** Throws a {@link FuzzFailure} unless `cond` holds. */
export function expect(cond: boolean, message: string): asserts cond {
  if (!cond) throw new FuzzFailure(message);
}

/**
 * Swallows `e` if it is a VirtioError with one of `codes` (a documented
 * refusal of untrusted input); rethrows anything else, so that the fuzzer
 * reports it.
 */
export function allowOnly(e: unknown, codes: ReadonlySet<ErrorCodeValue>): void {
  if (isVirtioError(e) && codes.has(e.code)) return;
  throw e;
}

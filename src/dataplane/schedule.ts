/**
 * Yielding to the event loop without a timer's minimum delay where the
 * runtime allows it (`setImmediate` on Node: after pending I/O callbacks),
 * else `setTimeout(fn, 0)`. Feature-detected, no import: portable. Not
 * spec-defined.
 *
 * @module
 */

const immediate: ((fn: () => void) => unknown) | undefined =
  typeof globalThis.setImmediate === "function" ? globalThis.setImmediate : undefined;

/** True where {@link nextTask} is cheap (no clamped timer). */
export const CHEAP_YIELD: boolean = immediate !== undefined;

/** Runs `fn` on a later event-loop task. */
export function nextTask(fn: () => void): void {
  if (immediate !== undefined) immediate(fn);
  else setTimeout(fn, 0);
}

/**
 * What the fuzz loop and its watchdog share: a small Int32 state array (run
 * counter, busy flag, current input length, peak RSS) and the bytes of the
 * input being run; and how a finding's input is saved.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { join } from "node:path";

/** Indexes into the shared state. */
export const STATE = { RUN: 0, BUSY: 1, INPUT_LEN: 2, PEAK_RSS_MB: 3 } as const;

/** The buffers behind the shared state and input. */
export interface WatchdogShared {
  readonly state: SharedArrayBuffer;
  readonly input: SharedArrayBuffer;
}

/** Allocates the shared buffers for inputs of at most `maxLen` bytes. */
export function allocateShared(maxLen: number): WatchdogShared {
  return { state: new SharedArrayBuffer(16), input: new SharedArrayBuffer(Math.max(1, maxLen)) };
}

/** Writes a finding's input as `<dir>/<kind>-<sha1>`; returns the path. */
export function saveFinding(
  dir: string,
  kind: string,
  data: Uint8Array,
  write: (path: string, data: Uint8Array) => void,
): string {
  const path = join(dir, `${kind}-${sha1(data)}`);
  write(path, data);
  return path;
}

/** Hex SHA-1 of `data` (corpus and crash file names). */
export function sha1(data: Uint8Array): string {
  return createHash("sha1").update(data).digest("hex");
}

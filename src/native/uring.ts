/**
 * Batched asynchronous file I/O through Linux io_uring (native/uring.cc, raw
 * system calls): positioned readv/writev requests are prepared one by one,
 * handed to the kernel together by one {@link uringSubmit}, and their
 * completions reaped on the same thread when the ring's eventfd is readable
 * (watch it with {@link watch}). Nothing here blocks. A ring belongs to the
 * thread that opened it.
 *
 * @module
 */
import { native, type UringRing } from "./addon.ts";

export type { UringRing } from "./addon.ts";

/**
 * Opens a ring of `entries` submission entries (clamped by the kernel) with
 * a non-blocking eventfd registered for its completions.
 *
 * @throws {NativeError} `ENOSYS` or `EPERM` where the kernel or a seccomp
 *   policy refuses io_uring (then use the thread pool), `ENOMEM`, `EMFILE`.
 */
export function uringOpen(entries: number): UringRing {
  return native.uringOpen(entries);
}

/**
 * Prepares a positioned readv (`write` false) or writev of `buffers` at
 * `position`; the views must stay mapped until the completion is reaped.
 * Returns the request's slot (its completion names it), or -1 when the ring
 * is full.
 */
export function uringPrepare(
  ring: number,
  fd: number,
  buffers: readonly Uint8Array[],
  position: number,
  write: boolean,
): number {
  return native.uringPrepare(ring, fd, buffers, position, write);
}

/** Hands every prepared request to the kernel in one system call; returns how many it took. */
export function uringSubmit(ring: number): number {
  return native.uringSubmit(ring);
}

/**
 * Reaps completions into `out` as (slot, result) pairs — the result is the
 * bytes moved or a negative errno — and returns how many; clears the eventfd
 * first, so later completions make it readable again.
 */
export function uringReap(ring: number, out: Int32Array): number {
  return native.uringReap(ring, out);
}

/** Closes the ring (requests still in flight finish in the kernel; their completions are dropped). */
export function uringClose(ring: number): void {
  native.uringClose(ring);
}

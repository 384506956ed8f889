/**
 * eventfd counters, the vhost-user kick and call notifications (vhost-user
 * spec, "Kick and call file descriptors"; read/write semantics from
 * eventfd(2)): a write adds to a 64-bit counter, a read returns the counter
 * and resets it (or, with {@link EFD_SEMAPHORE}, returns 1 and decrements).
 * The value read means nothing to virtio; only "signalled or not" matters.
 *
 * Every eventfd made here is non-blocking and close-on-exec. Wait for one
 * with {@link watch}.
 *
 * @module
 */
import { native } from "./addon.ts";

/** eventfd(2) flag: each read returns 1 and decrements the counter. */
export const EFD_SEMAPHORE = 1;

/** Largest value an eventfd counter holds (2^64 - 2). */
export const EVENTFD_MAX = 0xffff_ffff_ffff_fffen;

/**
 * Creates an eventfd with counter `initval` (0..2^32-1); `flags` may be
 * {@link EFD_SEMAPHORE}. Always `EFD_NONBLOCK | EFD_CLOEXEC`.
 */
export function eventfd(initval = 0, flags = 0): number {
  return native.eventfd(initval, flags);
}

/** Reads and resets the counter; `null` if it is zero (nothing signalled). */
export const eventfdRead: (fd: number) => bigint | null = (fd) => native.eventfdRead(fd);

/**
 * Adds `value` (default 1; up to {@link EVENTFD_MAX}) to the counter. Returns
 * false if the counter would overflow (EAGAIN), in which case the reader
 * already has a wakeup pending.
 */
export function eventfdWrite(fd: number, value: bigint | number = 1): boolean {
  return native.eventfdWrite(fd, value);
}

/**
 * Waiting for fd readiness on the event loop of the calling thread — e.g. a
 * kick eventfd (vhost-user spec, "Kick and call file descriptors": the
 * back-end polls the kick fd) or the vhost-user socket.
 *
 * A watch lives on the libuv loop of the thread that created it (main thread
 * or worker), so a dataplane worker waits for its own kicks. Polling is
 * level-triggered: the callback fires again on the next loop turn while the fd
 * stays ready, so drain it (e.g. `eventfdRead` until `null`). A loop
 * watches an fd at most once (a second watch throws `"EEXIST"`), and neither
 * this nor a `net.Socket` may watch the same fd in the same thread.
 *
 * Stop the watch before closing its fd. An active watch keeps the loop (and
 * so the process or worker) alive unless unref()'d; a stopped one never does.
 * Watches still open when a worker exits are closed with it.
 *
 * @module
 */
import { native } from "./addon.ts";
import type { NativeError } from "./native-error.ts";

/** Readiness events (libuv's `uv_poll_event`); combine with `|`. */
export const PollEvent = {
  READABLE: 1,
  WRITABLE: 2,
  /** The peer closed its writing side (EPOLLRDHUP). */
  DISCONNECT: 4,
  /** Urgent data (EPOLLPRI). */
  PRIORITIZED: 8,
} as const;

/**
 * Called with the ready events, or with an error (`error.errnoCode`, e.g.
 * `"EBADF"` for a poll error) after which libuv has paused the watch:
 * {@link FdWatch.setEvents} resumes it, {@link FdWatch.stop} releases it.
 * A callback that throws raises an uncaught exception, like a timer's.
 */
export type WatchCallback = (error: NativeError | null, events: number) => void;

/** A running watch returned by {@link watch}. */
export interface FdWatch {
  /** The watched fd. */
  readonly fd: number;
  /** True once {@link FdWatch.stop} was called. */
  readonly stopped: boolean;
  /** Changes the events watched (a non-zero set of {@link PollEvent} bits). */
  setEvents(events: number): void;
  /** Keeps the loop alive while active (the default). */
  ref(): this;
  /** Lets the loop end while this watch is active. */
  unref(): this;
  /** Stops the watch for good; returns false if it was already stopped. */
  stop(): boolean;
}

class Watch implements FdWatch {
  readonly fd: number;
  readonly #id: number;
  #stopped = false;

  constructor(fd: number, id: number) {
    this.fd = fd;
    this.#id = id;
  }

  get stopped(): boolean {
    return this.#stopped;
  }

  setEvents(events: number): void {
    if (this.#stopped) throw new Error(`watch on fd ${this.fd} is stopped`);
    native.watchSetEvents(this.#id, events);
  }

  ref(): this {
    if (!this.#stopped) native.watchRef(this.#id, true);
    return this;
  }

  unref(): this {
    if (!this.#stopped) native.watchRef(this.#id, false);
    return this;
  }

  stop(): boolean {
    if (this.#stopped) return false;
    this.#stopped = true;
    return native.watchStop(this.#id);
  }
}

/**
 * Calls `callback` on this thread's event loop whenever `fd` is ready for any
 * of `events` ({@link PollEvent} bits). Throws `"EEXIST"` if this thread
 * already watches `fd`, `"EPERM"` for fds that cannot be polled (regular files).
 */
export function watch(fd: number, events: number, callback: WatchCallback): FdWatch {
  return new Watch(fd, native.watchStart(fd, events, callback));
}

/** Active watches in this thread (for leak checks). */
export const watchCount: () => number = () => native.watchCount();

/**
 * The transfer loop's asynchronous system calls ({@link VectoredIo}): Node's
 * thread pool (fs.readv/fs.writev), or one io_uring per thread
 * ({@link UringIo}: requests prepared during a ring drain go to the kernel in
 * one io_uring_enter, completions are reaped on this thread when the ring's
 * eventfd is readable). Node-only. VIRTIO 1.2 §5.2.6: the mechanism changes
 * when a request completes, never what it does.
 *
 * Where the kernel or a seccomp policy refuses io_uring, {@link loadUringIo}
 * says so in one line and the thread pool serves instead. A full ring hands
 * the request to the thread pool as well. io_uring completions are not
 * bounded in time here: a request that never completes is reported by the
 * queue engine's watchdog (queue, request, stage) like any stuck request,
 * and shutdown is bounded by its time limit.
 *
 * @module
 */
import { readv as fsReadv, writev as fsWritev } from "node:fs";
import { getSystemErrorName } from "node:util";
import type { Logger } from "../../log.ts";
import type * as NativeModule from "../../native/index.ts";

/** One positioned readv/writev, asynchronously: resolves to the bytes moved, rejects with an errno error. */
export interface VectoredIo {
  readonly name: "threads" | "io_uring";
  run(fd: number, iov: Uint8Array[], position: number, write: boolean): Promise<number>;
}

/** Node's thread pool, through the callback API (about half the CPU of FileHandle.readv/writev). */
export const THREAD_POOL_IO: VectoredIo = {
  name: "threads",
  run: (fd, iov, position, write) =>
    new Promise((resolve, reject) => {
      const done = (err: NodeJS.ErrnoException | null, n: number): void =>
        err ? reject(err) : resolve(n);
      if (write) fsWritev(fd, iov, position, done);
      else fsReadv(fd, iov, position, done);
    }),
};

/** The native calls {@link UringIo} needs (the addon's, or fakes in tests). */
export type UringNative = Pick<
  typeof NativeModule,
  "uringOpen" | "uringPrepare" | "uringSubmit" | "uringReap" | "uringClose"
> & {
  watch(fd: number, events: number, cb: (error: Error | null) => void): RingWatch;
};

/** The watch on a ring's eventfd. */
export interface RingWatch {
  stop(): boolean;
  ref(): unknown;
  unref(): unknown;
}

/** An Error like Node's fs errors, for the negative errno of a completion. */
function errnoError(res: number, write: boolean): NodeJS.ErrnoException {
  const code = getSystemErrorName(res);
  const e: NodeJS.ErrnoException = new Error(`${code}: io_uring ${write ? "writev" : "readv"}`);
  e.code = code;
  e.errno = res;
  e.syscall = write ? "writev" : "readv";
  return e;
}

interface Waiter {
  resolve(n: number): void;
  reject(e: Error): void;
  write: boolean;
}

/** One io_uring on this thread (see the module header). */
export class UringIo implements VectoredIo {
  readonly name = "io_uring";
  readonly #n: UringNative;
  readonly #ring: number;
  readonly #waiters: (Waiter | undefined)[];
  readonly #out: Int32Array;
  /** Keeps the event loop alive only while requests are in flight. */
  readonly #watch: RingWatch;
  /** Prepared slots the kernel has not taken yet, oldest first. */
  readonly #unsubmitted: number[] = [];
  #broken = false;
  #inFlight = 0;
  /** A retry of a partial submission is scheduled. */
  #retrying = false;

  constructor(n: UringNative, entries: number, readable: number) {
    this.#n = n;
    const r = n.uringOpen(entries);
    this.#ring = r.ring;
    this.#waiters = new Array<Waiter | undefined>(r.capacity);
    this.#out = new Int32Array(2 * Math.min(r.capacity, 256));
    try {
      this.#watch = n.watch(r.eventFd, readable, () => this.#reap());
      this.#watch.unref();
    } catch (e) {
      n.uringClose(r.ring);
      throw e;
    }
  }

  /** Requests handed to the ring and not yet completed. */
  get inFlight(): number {
    return this.#inFlight;
  }

  run(fd: number, iov: Uint8Array[], position: number, write: boolean): Promise<number> {
    const slot = this.#broken ? -1 : this.#n.uringPrepare(this.#ring, fd, iov, position, write);
    if (slot < 0) return THREAD_POOL_IO.run(fd, iov, position, write); // full or broken
    if (this.#inFlight++ === 0) this.#watch.ref();
    this.#unsubmitted.push(slot);
    if (this.#unsubmitted.length === 1 && !this.#retrying) {
      // One submission for every request prepared in this synchronous turn
      // (a ring drain): it runs when the drain returns.
      queueMicrotask(() => this.#submit());
    }
    return new Promise((resolve, reject) => {
      this.#waiters[slot] = { resolve, reject, write };
    });
  }

  #submit(): void {
    try {
      // The kernel takes prepared requests in order, from the oldest.
      this.#unsubmitted.splice(0, this.#n.uringSubmit(this.#ring));
    } catch (e) {
      // The kernel took none of them. They fail, and the ring is never
      // entered again (entering it later would run them after their failure
      // was reported); requests already submitted still complete.
      this.#broken = true;
      for (const s of this.#unsubmitted.splice(0)) this.#settle(s, -5 /* EIO */, e as Error);
    }
    // The kernel took fewer than prepared (EAGAIN, EBUSY): retry shortly, so
    // that no prepared request waits for a later one to be submitted.
    if (this.#unsubmitted.length > 0 && !this.#retrying) {
      this.#retrying = true;
      setTimeout(() => {
        this.#retrying = false;
        this.#submit();
      }, 1);
    }
  }

  /** Settles every completion the kernel posted (bounded by the ring's capacity per call). */
  #reap(): void {
    const max = this.#out.length / 2;
    for (let round = 0; round <= this.#waiters.length / max + 1; round++) {
      const n = this.#n.uringReap(this.#ring, this.#out);
      for (let i = 0; i < n; i++) this.#settle(this.#out[2 * i]!, this.#out[2 * i + 1]!);
      if (n < max) return;
    }
  }

  #settle(slot: number, res: number, cause?: Error): void {
    const w = this.#waiters[slot];
    if (w === undefined) return;
    this.#waiters[slot] = undefined;
    if (--this.#inFlight === 0) this.#watch.unref();
    if (res >= 0) w.resolve(res);
    else w.reject(cause ?? errnoError(res, w.write));
  }

  /** Stops watching and closes the ring (requests in flight are dropped). */
  close(): void {
    this.#watch.stop();
    this.#n.uringClose(this.#ring);
  }
}

/** Submission entries of a thread's ring (its completion queue holds twice as many). */
export const URING_ENTRIES = 256;

/** `make()`'s ring, or the thread pool (with one line on `log`) when it throws. */
export function uringOrThreadPool(make: () => VectoredIo, log: Logger): VectoredIo {
  try {
    return make();
  } catch (e) {
    log.warn(`io_uring is not available (${(e as Error).message}); using the thread pool`);
    return THREAD_POOL_IO;
  }
}

let threadUring: Promise<VectoredIo> | undefined;

/**
 * This thread's io_uring, opened on first use; the thread pool (with one
 * line on `log`) where the addon is missing or the kernel refuses io_uring.
 */
export function loadUringIo(log: Logger): Promise<VectoredIo> {
  threadUring ??= import("../../native/index.ts").then(
    (m) =>
      uringOrThreadPool(() => {
        if (!m.nativeAvailable()) throw new Error("the native addon is not built");
        const n: UringNative = { ...m, watch: (fd, ev, cb) => m.watch(fd, ev, cb) };
        return new UringIo(n, URING_ENTRIES, m.PollEvent.READABLE);
      }, log),
    (e: unknown) =>
      uringOrThreadPool(() => {
        throw e;
      }, log),
  );
  return threadUring;
}

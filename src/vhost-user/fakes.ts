/**
 * Test doubles for the host interfaces of ./host.ts: an fd table that proves
 * every fd is closed exactly once, eventfds with counters, memfd-like files
 * mapped as windows, and a socket that records what was sent. Used by the
 * vhost-user tests; public so that daemon and device tests can reuse them
 * (like rust-vmm's `dummy_backend`).
 *
 * @module
 */
import type {
  EventFds,
  Mapping,
  MappedWindow,
  MemoryMapper,
  SocketHandlers,
  VhostUserSocket,
} from "./host.ts";

interface FakeFile {
  readonly label: string;
  /** eventfd counter (kick/call/err fds). */
  counter: number;
  /** Number of signal() calls (call/err fds). */
  signals: number;
  /** Shared memory behind a memfd-like fd. */
  readonly memory: SharedArrayBuffer | undefined;
  watcher: (() => void) | undefined;
}

/**
 * A process-wide fd table. Every misuse (closing or using an fd that is not
 * open) is recorded in {@link FakeFds.misuse}; tests assert it stays empty.
 */
export class FakeFds implements EventFds {
  readonly #files = new Map<number, FakeFile>();
  /** Memory of memfd-like fds, kept after close (fd numbers are never reused). */
  readonly #memories = new Map<number, SharedArrayBuffer>();
  #nextFd = 100;
  /** Human-readable descriptions of every misuse seen. */
  readonly misuse: string[] = [];
  /** Every fd ever closed, in order. */
  readonly closed: number[] = [];
  readonly #keepClosedMemory: boolean;

  /**
   * @param options.keepClosedMemory keep the memory of a closed memfd-like fd
   *   for {@link memoryOf} (default true); false for long runs (fuzzing), where
   *   it would grow without bound.
   */
  constructor(options: { readonly keepClosedMemory?: boolean } = {}) {
    this.#keepClosedMemory = options.keepClosedMemory ?? true;
  }

  /** Opens an eventfd-like fd. */
  eventfd(label = "eventfd"): number {
    return this.#open(label, undefined);
  }

  /**
   * Opens a memfd-like fd: `size` bytes of zero-filled shared memory, or an
   * existing buffer (another fd to the same memory, as after a reconnect).
   */
  memfd(memory: number | SharedArrayBuffer, label = "memfd"): number {
    return this.#open(label, typeof memory === "number" ? new SharedArrayBuffer(memory) : memory);
  }

  /** Opens a plain fd (e.g. a socket end). */
  other(label = "fd"): number {
    return this.#open(label, undefined);
  }

  #open(label: string, memory: SharedArrayBuffer | undefined): number {
    const fd = this.#nextFd++;
    this.#files.set(fd, { label, counter: 0, signals: 0, memory, watcher: undefined });
    if (memory !== undefined) this.#memories.set(fd, memory);
    return fd;
  }

  /** True if `fd` is open. */
  isOpen(fd: number): boolean {
    return this.#files.has(fd);
  }

  /** Every open fd with its label. */
  openFds(): string[] {
    return [...this.#files].map(([fd, f]) => `${fd}:${f.label}`);
  }

  /** The memory behind a memfd-like fd (also usable after close, for checks). */
  memoryOf(fd: number): SharedArrayBuffer | undefined {
    return this.#memories.get(fd);
  }

  /** How many times `fd` was signalled. */
  signalCount(fd: number): number {
    return this.#files.get(fd)?.signals ?? 0;
  }

  /** True if a watch is installed on `fd`. */
  isWatched(fd: number): boolean {
    return this.#files.get(fd)?.watcher !== undefined;
  }

  close(fd: number): void {
    const f = this.#files.get(fd);
    if (f === undefined) {
      this.misuse.push(`close(${fd}): not open`);
      return;
    }
    if (f.watcher !== undefined) this.misuse.push(`close(${fd}) while watched`);
    this.#files.delete(fd);
    if (!this.#keepClosedMemory) this.#memories.delete(fd);
    this.closed.push(fd);
  }

  signal(fd: number): void {
    const f = this.#files.get(fd);
    if (f === undefined) {
      this.misuse.push(`signal(${fd}): not open`);
      return;
    }
    f.signals++;
    f.counter++;
  }

  /**
   * Writes the counter as the other side would (a guest kick). Delivered at
   * once to a watcher, otherwise kept until a watch starts.
   */
  kick(fd: number): void {
    const f = this.#files.get(fd);
    if (f === undefined) throw new Error(`kick(${fd}): not open`);
    f.counter++;
    if (f.watcher !== undefined) this.#fire(f);
  }

  watch(fd: number, onEvent: () => void): () => void {
    const f = this.#files.get(fd);
    if (f === undefined) {
      this.misuse.push(`watch(${fd}): not open`);
      return () => {};
    }
    if (f.watcher !== undefined) this.misuse.push(`watch(${fd}): already watched`);
    f.watcher = onEvent;
    // Like a level-triggered poll: a counter already set fires on the next tick.
    if (f.counter > 0) queueMicrotask(() => this.#fire(f));
    return () => {
      if (f.watcher === onEvent) f.watcher = undefined;
    };
  }

  #fire(f: FakeFile): void {
    if (f.watcher === undefined || f.counter === 0) return;
    f.counter = 0;
    f.watcher();
  }
}

/**
 * Maps memfd-like fds of a {@link FakeFds}. Windows are at most
 * `windowSize` bytes (default 4 GiB), so tests can exercise multi-window
 * regions with small memory.
 */
export class FakeMapper implements MemoryMapper {
  readonly #fds: FakeFds;
  readonly #windowSize: number;
  /** Mappings not yet unmapped. */
  live = 0;
  /** Every map() call: fd, size, offset. */
  readonly calls: { fd: number; size: number; offset: number }[] = [];
  /** When set, the next map() throws this error. */
  failNext: Error | undefined;

  constructor(fds: FakeFds, windowSize = 2 ** 32) {
    this.#fds = fds;
    this.#windowSize = windowSize;
  }

  map(fd: number, size: number, offset: number): Mapping {
    this.calls.push({ fd, size, offset });
    if (this.failNext !== undefined) {
      const e = this.failNext;
      this.failNext = undefined;
      throw e;
    }
    if (!this.#fds.isOpen(fd)) throw new Error(`mmap: fd ${fd} is not open`);
    const mem = this.#fds.memoryOf(fd);
    if (mem === undefined) throw new Error(`mmap: fd ${fd} is not a memfd`);
    if (offset + size > mem.byteLength)
      throw new Error(`mmap: [${offset}, +${size}) beyond the file`);
    const windows: MappedWindow[] = [];
    for (let done = 0; done < size; done += this.#windowSize) {
      const n = Math.min(this.#windowSize, size - done);
      windows.push({ buffer: mem, byteOffset: offset + done, byteLength: n });
    }
    this.live++;
    let mapped = true;
    return {
      windows,
      unmap: () => {
        if (!mapped) return;
        mapped = false;
        this.live--;
      },
    };
  }
}

/** A recorded send. */
export interface SentMessage {
  readonly bytes: Uint8Array;
  readonly fds: readonly number[];
}

/** A socket whose peer is the test. */
export class FakeSocket implements VhostUserSocket {
  readonly sent: SentMessage[] = [];
  #handlers: SocketHandlers | undefined;
  closed = false;

  start(handlers: SocketHandlers): void {
    this.#handlers = handlers;
  }

  send(bytes: Uint8Array, fds: readonly number[] = []): void {
    if (this.closed) throw new Error("send on a closed socket");
    this.sent.push({ bytes: bytes.slice(), fds: [...fds] });
  }

  close(): void {
    this.closed = true;
  }

  /** Delivers one received fragment (the back-end then owns `fds`). */
  deliver(bytes: Uint8Array, fds: number[] = []): void {
    if (this.closed || this.#handlers === undefined)
      throw new Error("socket not started or closed");
    this.#handlers.data(bytes, fds);
  }

  /** The peer hangs up. */
  end(error?: Error): void {
    if (this.closed || this.#handlers === undefined) return;
    this.#handlers.end(error);
  }
}

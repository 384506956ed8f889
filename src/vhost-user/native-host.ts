/**
 * The host interfaces of ./host.ts over the native addon (src/native/):
 * eventfds watched on this thread's loop, shared-memory mapping in windows
 * of at most 4 GiB, and a Unix stream socket with fd passing. Node-only.
 * qemu/qemu docs/interop/vhost-user.rst "Introduction" (fds in ancillary
 * data), "Memory access"; docs/vhost-user.md
 * (mapping) and 6.14 (fd hygiene).
 *
 * @module
 */
import { fstatSync } from "node:fs";
import {
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  MFD_ALLOW_SEALING,
  PollEvent,
  addSeals,
  close,
  ftruncate,
  memfdCreate,
  getSeals,
  eventfdRead,
  eventfdWrite,
  mapRegion,
  mappingFaults,
  recvmsg,
  sendmsg,
  unmapRegion,
  watch,
  type FdWatch,
} from "../native/index.ts";
import type {
  EventFds,
  MapOptions,
  Mapping,
  MemoryMapper,
  SocketHandlers,
  VhostUserSocket,
} from "./host.ts";

/** Eventfds and fd closing on the calling thread's event loop. */
export class NativeEventFds implements EventFds {
  close(fd: number): void {
    try {
      close(fd);
    } catch {
      // Best effort: the fd is gone either way.
    }
  }

  signal(fd: number): void {
    try {
      // false (EAGAIN: counter at its maximum) means a wakeup is pending already.
      eventfdWrite(fd, 1);
    } catch {
      // The front-end closed its end or passed something else: nothing to wake.
    }
  }

  watch(fd: number, onEvent: () => void): () => void {
    let w: FdWatch | undefined;
    w = watch(fd, PollEvent.READABLE, (error) => {
      if (error !== null) {
        // A poll error on an eventfd: stop rather than spin; the ring no longer gets kicks.
        w?.stop();
        return;
      }
      // "The 8-value itself has no meaning and should not be interpreted": read to reset, then act.
      if (eventfdRead(fd) !== null) onEvent();
    });
    return () => {
      w?.stop();
      w = undefined;
    };
  }
}

/**
 * Maps regions of memfd / hugetlbfs / regular files. Touching a page of a
 * shared mapping beyond the end of its file raises SIGBUS, which would let a
 * front-end kill the process, so before mapping:
 *
 * - the file must be a regular file at least `offset + size` bytes long;
 * - it must not be able to shrink afterwards: a memfd sealed with
 *   F_SEAL_SHRINK (QEMU's `memory-backend-memfd` seals by default), unless
 *   the caller accepts unsealed files (`allowUnsealed`, e.g. hugetlbfs or
 *   tmpfs files, which cannot be sealed; docs/threat-model.md). Such a
 *   mapping is guarded against SIGBUS (../native/sigbus.ts): a page past the
 *   end of a shrunk file reads zeros, and {@link Mapping.faults} counts it.
 */
export class NativeMapper implements MemoryMapper {
  readonly #maxWindow: number | undefined;

  /** @param maxWindow window limit in bytes (tests; default 4 GiB). */
  constructor(maxWindow?: number) {
    this.#maxWindow = maxWindow;
  }

  map(fd: number, size: number, offset: number, options: MapOptions = {}): Mapping {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new Error(`fd ${fd} is not a shared-memory file`);
    if (st.size < offset + size)
      throw new Error(`file of ${st.size} bytes is smaller than offset ${offset} + size ${size}`);
    const guard = !cannotShrink(fd);
    if (guard && options.allowUnsealed !== true) {
      throw new Error(
        `fd ${fd} can shrink under the mapping (not a memfd sealed with F_SEAL_SHRINK; ` +
          "QEMU's memory-backend-memfd seals by default; allowing unsealed memory is an operator's choice)",
      );
    }
    const windows = mapRegion(fd, size, offset, {
      guard,
      ...(this.#maxWindow === undefined ? {} : { maxWindow: this.#maxWindow }),
    });
    let mapped = true;
    return {
      windows: windows.map((w) => ({
        buffer: w.buffer,
        byteOffset: w.bufferOffset,
        byteLength: w.size,
      })),
      unmap: () => {
        if (!mapped) return;
        mapped = false;
        unmapRegion(windows);
      },
      ...(guard
        ? { faults: () => (mapped ? windows.reduce((n, w) => n + mappingFaults(w.buffer), 0) : 0) }
        : {}),
    };
  }
}

/**
 * A zeroed memfd of `size` bytes sealed against shrinking, growing and
 * further seals: shared memory a peer can map but not pull away
 * (GET_INFLIGHT_FD's buffer, as libvhost-user makes it).
 */
export function sealedMemfd(name: string, size: number): number {
  const fd = memfdCreate(name, MFD_ALLOW_SEALING);
  try {
    ftruncate(fd, size);
    addSeals(fd, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
    return fd;
  } catch (e) {
    close(fd);
    throw e;
  }
}

/** True if `fd` is a memfd sealed against shrinking. */
function cannotShrink(fd: number): boolean {
  try {
    return (getSeals(fd) & F_SEAL_SHRINK) !== 0;
  } catch {
    return false; // EINVAL: a file that takes no seals (tmpfs, hugetlbfs, a disk file)
  }
}

/** Bytes read per recvmsg: more than any vhost-user message (12 + 4096). */
const RECV_BYTES = 64 * 1024;
/** fds accepted per recvmsg; more is MSG_CTRUNC, which closes the connection. */
const RECV_FDS = 32;
/** recvmsg calls per readiness callback before yielding to the loop. */
const RECV_BATCH = 64;

/**
 * A connected, non-blocking Unix stream socket. Owns `fd` (closes it on
 * {@link close}). Replies that do not fit the socket buffer at once are
 * queued and sent when it drains.
 */
export class NativeSocket implements VhostUserSocket {
  readonly #fd: number;
  #watch: FdWatch | undefined;
  #handlers: SocketHandlers | undefined;
  #pending: Uint8Array[] = [];
  #closed = false;
  #ended = false;

  constructor(fd: number) {
    this.#fd = fd;
  }

  start(handlers: SocketHandlers): void {
    if (this.#handlers !== undefined) throw new Error("socket already started");
    this.#handlers = handlers;
    this.#watch = watch(this.#fd, PollEvent.READABLE, (error, events) =>
      this.#onReady(error, events),
    );
  }

  send(bytes: Uint8Array, fds: readonly number[] = []): void {
    if (this.#closed) throw new Error("send on a closed vhost-user socket");
    if (this.#pending.length > 0) {
      if (fds.length > 0) throw new Error("cannot queue fds behind a partial send");
      this.#pending.push(bytes.slice());
      return;
    }
    const n = sendmsg(this.#fd, bytes, fds) ?? 0;
    if (n < bytes.length) {
      if (n === 0 && fds.length > 0) throw new Error("socket buffer full: cannot send fds");
      this.#pending.push(bytes.slice(n));
      this.#watch?.setEvents(PollEvent.READABLE | PollEvent.WRITABLE);
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#watch?.stop();
    this.#watch = undefined;
    this.#pending = [];
    try {
      close(this.#fd);
    } catch {
      // Already closed.
    }
  }

  #onReady(error: Error | null, events: number): void {
    if (this.#closed) return;
    if (error !== null) return this.#end(error);
    if ((events & PollEvent.WRITABLE) !== 0) this.#flush();
    if ((events & PollEvent.READABLE) !== 0) this.#read();
  }

  #read(): void {
    for (let i = 0; i < RECV_BATCH && !this.#closed; i++) {
      let r;
      try {
        r = recvmsg(this.#fd, RECV_BYTES, RECV_FDS);
      } catch (e) {
        return this.#end(e instanceof Error ? e : new Error(String(e)));
      }
      if (r === null) return;
      if (r.eof) return this.#end(undefined);
      this.#handlers!.data(
        new Uint8Array(r.bytes.buffer, r.bytes.byteOffset, r.bytes.byteLength),
        r.fds,
      );
    }
  }

  #flush(): void {
    try {
      while (this.#pending.length > 0) {
        const head = this.#pending[0]!;
        const n = sendmsg(this.#fd, head) ?? 0;
        if (n < head.length) {
          this.#pending[0] = head.subarray(n);
          return;
        }
        this.#pending.shift();
      }
      this.#watch?.setEvents(PollEvent.READABLE);
    } catch (e) {
      this.#end(e instanceof Error ? e : new Error(String(e)));
    }
  }

  #end(error: Error | undefined): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#watch?.stop();
    this.#watch = undefined;
    this.#handlers?.end(error);
  }
}

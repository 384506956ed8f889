/**
 * What the vhost-user back-end needs from the operating system, as small
 * interfaces: file descriptors, eventfds, shared-memory mapping and the
 * Unix socket. The native addon (src/native/) implements them for real;
 * tests use fakes (./fakes.ts). qemu/qemu docs/interop/vhost-user.rst
 * "Introduction" (fds passed as ancillary data), "eventfd or pipe": "the
 * 8-value itself has no meaning and should not be interpreted".
 *
 * @module
 */

/** Closes file descriptors the back-end owns. */
export interface FdCloser {
  /** Closes `fd`. Must not throw for an fd the back-end received (best effort). */
  close(fd: number): void;
}

/** Eventfd operations on the calling thread's event loop. */
export interface EventFds extends FdCloser {
  /** Signals an eventfd (writes an 8-byte 1): a call or err notification. Never throws. */
  signal(fd: number): void;
  /**
   * Watches `fd` for readability on the calling thread's loop. Each time it
   * becomes readable the counter is read (reset) and `onEvent` runs. A counter
   * already non-zero when watching starts fires at once, so no kick is lost.
   * Returns a function that stops the watch (idempotent).
   */
  watch(fd: number, onEvent: () => void): () => void;
}

/** One window of a mapping: a view of at most 4 GiB of shared memory. */
export interface MappedWindow {
  readonly buffer: ArrayBuffer | SharedArrayBuffer;
  /** Offset of the window's first byte in `buffer`. */
  readonly byteOffset: number;
  /** Length of the window in bytes. */
  readonly byteLength: number;
}

/** A live shared mapping of part of a file. */
export interface Mapping {
  /** Consecutive windows covering the mapped range in order (more than one above 4 GiB). */
  readonly windows: readonly MappedWindow[];
  /** Unmaps every window (idempotent). The buffers must not be touched afterwards. */
  unmap(): void;
  /**
   * Accesses past the end of the file that the mapping absorbed (the file
   * shrank under it: zeros were read, writes dropped). Present only on
   * mappings of files that can shrink; a count above 0 means the front-end
   * pulled the memory away.
   */
  faults?(): number;
}

/** How {@link MemoryMapper.map} may map. */
export interface MapOptions {
  /**
   * Accept a file that can shrink under the mapping (not sealed with
   * F_SEAL_SHRINK; default false: such a file is refused). Accesses past the
   * end of a file that shrank then must not kill the process: the mapping
   * absorbs them and counts them ({@link Mapping.faults}).
   */
  readonly allowUnsealed?: boolean;
}

/** Maps shared memory received as an fd. */
export interface MemoryMapper {
  /**
   * Maps `size` bytes of `fd` starting at file offset `offset`, shared and
   * read/write. The caller still owns `fd` (and may close it right after).
   *
   * @throws {Error} if the mapping fails or the file is refused (the caller
   *   turns it into a protocol error).
   */
  map(fd: number, size: number, offset: number, options?: MapOptions): Mapping;
}

/** Callbacks of a {@link VhostUserSocket}. */
export interface SocketHandlers {
  /** One received fragment; the receiver owns `fds`. */
  data(bytes: Uint8Array, fds: number[]): void;
  /** The peer closed the connection or the socket failed. Called at most once. */
  end(error?: Error): void;
}

/** A connected Unix stream socket that passes fds (SCM_RIGHTS). */
export interface VhostUserSocket {
  /** Starts delivering received data to `handlers`. */
  start(handlers: SocketHandlers): void;
  /**
   * Sends `bytes` with `fds` attached (one `sendmsg`). The fds stay owned by
   * the caller.
   *
   * @throws {Error} if the socket is closed or the send fails.
   */
  send(bytes: Uint8Array, fds?: readonly number[]): void;
  /** Closes the socket (idempotent). No handler runs afterwards. */
  close(): void;
}

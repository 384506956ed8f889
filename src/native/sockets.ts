/**
 * Unix stream sockets with fd passing, for the vhost-user control channel
 * (vhost-user spec, "Communication": a Unix domain socket; file descriptors
 * travel as SCM_RIGHTS ancillary data).
 *
 * Every socket is non-blocking and close-on-exec, and every received fd is
 * close-on-exec. Nothing blocks: "would block" is `null`. Framing is the
 * caller's job. On a stream socket Linux ends a recvmsg() at the end of the
 * sendmsg() chunk that carried fds, but may put earlier fd-less bytes in front
 * of it; a reader that asks for exactly one header's bytes, then exactly the
 * payload's, gets each message's fds with its header (as libvhost-user does).
 *
 * Watch a socket for readiness with {@link watch} (stop the watch before
 * closing the fd).
 *
 * Around the control channel, what a back-end program needs (vhost-user
 * spec, "Backend program conventions"): {@link isListeningSocket} tells an
 * inherited `--fd` that listens from a connected one, and
 * {@link sendUnixDatagram} sends one datagram to a service manager's notify
 * socket (sd_notify(3)); {@link bindUnixDatagram} is the receiving end.
 *
 * @module
 */
import { native, type ReceivedMessage } from "./addon.ts";
import { isNativeError, NativeError } from "./native-error.ts";

export type { ReceivedMessage } from "./addon.ts";

/** Linux accepts at most this many fds in one message (SCM_MAX_FD). */
export const MAX_FDS_PER_MESSAGE = 253;

/** `how` of {@link shutdown}: SHUT_RD, SHUT_WR, SHUT_RDWR. */
const SHUTDOWN_HOW = { read: 0, write: 1, both: 2 } as const;

/**
 * Creates a listening Unix stream socket bound to `path` and returns its fd.
 *
 * If `path` exists, this throws a {@link NativeError} with `errnoCode`
 * `"EADDRINUSE"` whose `details.live` says whether a server answers on it; a
 * file where nothing answers is a stale socket (or no socket at all): the
 * caller decides whether to remove it and retry. A `path` of 108 bytes or more
 * throws `"ENAMETOOLONG"`. The socket file outlives the fd: remove it
 * (`fs.unlinkSync`) after closing the listener.
 *
 * @param backlog - pending connections the kernel queues (1..65535)
 */
export function listenUnix(path: string, backlog = 16): number {
  try {
    return native.listenUnix(path, backlog);
  } catch (e) {
    if (!isNativeError(e, "EADDRINUSE")) throw e;
    const live = unixSocketAnswers(path);
    throw new NativeError(e.syscall, e.errno, {
      path,
      message: live
        ? "address already in use: a server answers on this socket path"
        : "address already in use: the path exists but no server answers (stale socket file?)",
      details: { live },
    });
  }
}

/** True if a server accepts connections on the Unix socket at `path`. */
export function unixSocketAnswers(path: string): boolean {
  let fd: number;
  try {
    fd = native.connectUnix(path);
  } catch (e) {
    // EAGAIN: the listener's backlog is full, so a listener exists.
    return isNativeError(e, "EAGAIN");
  }
  native.close(fd);
  return true;
}

/**
 * Accepts one pending connection on a listening socket: the new fd
 * (non-blocking, close-on-exec), or `null` if none is pending.
 */
export const acceptUnix: (fd: number) => number | null = (fd) => native.acceptUnix(fd);

/**
 * Connects to the Unix socket at `path` and returns the fd (non-blocking,
 * close-on-exec). Throws `"ENOENT"` / `"ECONNREFUSED"` if nobody listens and
 * `"EAGAIN"` if the listener's backlog is full.
 */
export const connectUnix: (path: string) => number = (path) => native.connectUnix(path);

/** A connected pair of Unix stream sockets (non-blocking, close-on-exec). */
export const socketPair: () => [number, number] = () => native.socketPair();

/** Shuts down the reading side, the writing side (the peer sees EOF) or both. */
export function shutdown(fd: number, how: "read" | "write" | "both"): void {
  const value = SHUTDOWN_HOW[how] as number | undefined;
  if (value === undefined) throw new RangeError(`how must be "read", "write" or "both"`);
  native.shutdown(fd, value);
}

/**
 * True if `fd` is a listening socket (SO_ACCEPTCONN), false for any other
 * socket (e.g. one end of a socketpair). Throws `"ENOTSOCK"` for an fd that
 * is no socket and `"EBADF"` for one that is not open.
 */
export const isListeningSocket: (fd: number) => boolean = (fd) => native.isListeningSocket(fd);

/**
 * Sends `bytes` as one datagram to the Unix datagram socket at `address`: a
 * path, or an abstract name written `@name` (the form of $NOTIFY_SOCKET).
 * Throws `"ENOENT"` / `"ECONNREFUSED"` if nobody is bound there and
 * `"EAGAIN"` if the receiver's queue is full; nothing is retried.
 */
export const sendUnixDatagram: (address: string, bytes: Uint8Array) => void = (address, bytes) =>
  native.sendUnixDatagram(address, bytes);

/**
 * A Unix datagram socket bound to `address` (a path, or `@name` for an
 * abstract name); read it with {@link recvmsg}, which returns one datagram
 * per call. A path binding leaves a file to remove after closing.
 */
export const bindUnixDatagram: (address: string) => number = (address) =>
  native.bindUnixDatagram(address);

/** Closes an fd. Stop any {@link watch} on it first. */
export const close: (fd: number) => void = (fd) => native.close(fd);

/**
 * Receives up to `maxBytes` bytes and up to `maxFds` fds from a stream socket.
 *
 * Returns `null` if nothing is available (EAGAIN), `{ bytes: <empty>, fds: [],
 * eof: true }` at end of stream, else the bytes and fds received (fds are
 * close-on-exec and owned by the caller). If more fds arrived than `maxFds`
 * (MSG_CTRUNC), the fds that did arrive are closed and a {@link NativeError}
 * with `errnoCode` `"MSG_CTRUNC"` is thrown; the bytes are consumed, so the
 * stream has lost its framing: close the connection.
 *
 * @param maxBytes - 1..2^24
 * @param maxFds - 0..{@link MAX_FDS_PER_MESSAGE}
 */
export const recvmsg: (fd: number, maxBytes: number, maxFds: number) => ReceivedMessage | null = (
  fd,
  maxBytes,
  maxFds,
) => native.recvmsg(fd, maxBytes, maxFds);

/**
 * Sends `bytes` (at least one) with `fds` attached to the first byte. Returns
 * the number of bytes sent, or `null` if the socket buffer is full (EAGAIN;
 * nothing was sent). After a partial send, send the rest without the fds.
 * The fds stay open on this side. A closed peer throws `"EPIPE"` (no SIGPIPE).
 */
export const sendmsg: (fd: number, bytes: Uint8Array, fds?: readonly number[]) => number | null = (
  fd,
  bytes,
  fds = [],
) => native.sendmsg(fd, bytes, fds);

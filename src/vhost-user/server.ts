/**
 * A vhost-user back-end listening on a Unix socket: one front-end connection
 * at a time (a second one is refused, as qemu-storage-daemon does), a fresh
 * connection state per connection, the device shared across them so that a
 * front-end can reconnect (QEMU `-chardev socket,reconnect=N`).
 * qemu/qemu docs/interop/vhost-user.rst "Introduction" (the back-end may be
 * the server), "Backend program conventions" (`--socket-path` / `--fd`);
 * docs/vhost-user.md. Node-only.
 *
 * @module
 */
import { lstatSync, unlinkSync } from "node:fs";
import {
  PollEvent,
  acceptUnix,
  close,
  isNativeError,
  listenUnix,
  watch,
  type FdWatch,
} from "../native/index.ts";
import type { DataplaneDeviceHandle } from "../dataplane/device-handle.ts";
import type { VhostUserBackend } from "./backend.ts";
import { VhostUserConnection, type CloseInfo } from "./connection.ts";
import { NativeEventFds, NativeSocket, sealedMemfd } from "./native-host.ts";
import { DataplaneRings } from "./rings.ts";

/** Options of {@link VhostUserServer}. */
export interface VhostUserServerOptions {
  /** The device served to every connection (its control side). */
  readonly backend: VhostUserBackend;
  /** The same device's dataplane half, opened in a pool (worker threads or this thread). */
  readonly dataplane: DataplaneDeviceHandle | Promise<DataplaneDeviceHandle>;
  /** Socket path to create and listen on (removed again by {@link VhostUserServer.close}). */
  readonly path?: string;
  /** An already listening socket fd instead of `path` (the `--fd` convention); closed by close(). */
  readonly listenFd?: number;
  /** Remove a socket file at `path` on which no server answers before listening (default true). */
  readonly removeStale?: boolean;
  /**
   * Map guest memory fds that can shrink under the mapping (not a memfd
   * sealed with F_SEAL_SHRINK; default false: refused, see
   * docs/threat-model.md).
   */
  readonly allowUnsealedMemory?: boolean;
  /** Memory slots announced in GET_MAX_MEM_SLOTS. */
  readonly maxMemSlots?: number;
  /** Where log lines go (default: console.warn). */
  readonly log?: (line: string) => void;
  /** Called with each accepted connection, after it started. */
  readonly onConnection?: (conn: VhostUserConnection) => void;
}

/**
 * The server.
 *
 * @example
 * ```ts
 * const server = new VhostUserServer({ path: "/tmp/vu.sock", backend: blk, dataplane: handle });
 * process.on("SIGTERM", () => void server.close());
 * ```
 */
export class VhostUserServer {
  /** The socket path, if the server created it. */
  readonly path: string | undefined;
  readonly #fd: number;
  readonly #options: VhostUserServerOptions;
  readonly #log: (line: string) => void;
  readonly #eventFds = new NativeEventFds();
  #watch: FdWatch | undefined;
  #current: VhostUserConnection | undefined;
  /** A front-end that connected while the previous connection was still releasing its resources. */
  #next: number | undefined;
  #closing: Promise<void> | undefined;

  /**
   * Starts listening at once.
   *
   * @throws {TypeError} unless exactly one of `path` and `listenFd` is given.
   * @throws {NativeError} if the socket cannot be created (e.g. `"EADDRINUSE"`
   *   when a server already answers on `path`).
   */
  constructor(options: VhostUserServerOptions) {
    if ((options.path === undefined) === (options.listenFd === undefined))
      throw new TypeError("give exactly one of path and listenFd");
    this.#options = options;
    this.#log = options.log ?? ((line) => console.warn(line));
    this.path = options.path;
    this.#fd = options.listenFd ?? listen(options.path!, options.removeStale ?? true);
    this.#watch = watch(this.#fd, PollEvent.READABLE, (error) => {
      if (error !== null) this.#log(`vhost-user: accept: ${error.message}`);
      else this.#accept();
    });
  }

  /** The connection being served, if any. */
  get connection(): VhostUserConnection | undefined {
    return this.#current;
  }

  /**
   * Stops listening (and removes the socket file), then closes the current
   * connection: its rings stop after their in-flight requests complete.
   * Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#watch?.stop();
    this.#watch = undefined;
    close(this.#fd);
    if (this.path !== undefined) unlinkQuietly(this.path);
    if (this.#next !== undefined) close(this.#next);
    this.#next = undefined;
    await this.#current?.close();
  }

  #accept(): void {
    for (;;) {
      let fd: number | null;
      try {
        fd = acceptUnix(this.#fd);
      } catch (e) {
        this.#log(`vhost-user: accept: ${e instanceof Error ? e.message : String(e)}`);
        return;
      }
      if (fd === null) return;
      const current = this.#current;
      if (current === undefined && this.#closing === undefined) {
        this.#serve(fd);
      } else if (
        current?.closing === true &&
        this.#next === undefined &&
        this.#closing === undefined
      ) {
        // The previous front-end hung up and its rings are still draining: serve this one right after.
        this.#next = fd;
        void current.closed.then(() => this.#serveNext(fd));
      } else {
        this.#log("vhost-user: refusing a second front-end connection (one at a time)");
        close(fd);
      }
    }
  }

  #serveNext(fd: number): void {
    if (this.#next !== fd) return; // the server closed meanwhile (and closed the fd)
    this.#next = undefined;
    this.#serve(fd);
  }

  #serve(fd: number): void {
    const o = this.#options;
    const conn = new VhostUserConnection(new NativeSocket(fd), {
      backend: o.backend,
      dataplane: new DataplaneRings(o.dataplane, {
        allowUnsealedMemory: o.allowUnsealedMemory === true,
      }),
      fds: this.#eventFds,
      log: this.#log,
      // GET_INFLIGHT_FD's buffer: INFLIGHT_SHMFD is offered.
      allocateShared: (size) => sealedMemfd("vhost-user-inflight", size),
      ...(o.maxMemSlots === undefined ? {} : { maxMemSlots: o.maxMemSlots }),
    });
    this.#current = conn;
    void conn.closed.then((info: CloseInfo) => {
      if (this.#current === conn) this.#current = undefined;
      if (info.error === undefined) this.#log("vhost-user: front-end disconnected");
    });
    conn.start();
    o.onConnection?.(conn);
  }
}

/** listenUnix, first removing a stale socket file (a socket nobody answers on) when asked. */
function listen(path: string, removeStale: boolean): number {
  try {
    return listenUnix(path);
  } catch (e) {
    if (!removeStale || !isNativeError(e, "EADDRINUSE") || e.details.live !== false) throw e;
    // Never remove anything but a socket (a regular file at the path is the user's).
    if (!lstatSync(path).isSocket()) throw e;
    unlinkSync(path);
    return listenUnix(path);
  }
}

function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // Already gone.
  }
}

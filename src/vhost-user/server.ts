/**
 * A vhost-user back-end listening on a Unix socket: one front-end connection
 * at a time (a second one is refused, as qemu-storage-daemon does), a fresh
 * connection state per connection, the device shared across them so that a
 * front-end can reconnect (QEMU `-chardev socket,reconnect=N`). Or, given an
 * already connected socket (one end of a socketpair, as crosvm and libvirt
 * pass `--fd`), it serves exactly that connection and is done when it ends.
 * qemu/qemu docs/interop/vhost-user.rst "Introduction" (the back-end may be
 * the server), "Backend program conventions" (`--socket-path` / `--fd`);
 * docs/vhost-user.md. Node-only.
 *
 * A failing accept never loops: a shortage (EMFILE, ENFILE, ENOBUFS, ENOMEM)
 * pauses accepting with a growing delay, one line per pause; any other error
 * (e.g. EINVAL: the fd does not listen) ends the server with one line and
 * {@link VhostUserServer.done} resolves with it.
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
  /**
   * An already connected socket fd instead of `path` (`--fd` given one end
   * of a socketpair): served as the one connection; closed when it ends.
   */
  readonly connectedFd?: number;
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
  /**
   * Where log lines go (default: console.warn). The server's own lines say
   * how severe they are; the connection's lines (protocol errors) do not.
   */
  readonly log?: (line: string, level?: "info" | "warn" | "error") => void;
  /** First and longest pause of accepting after a shortage of fds or memory, ms (default 100, 5000). */
  readonly acceptBackoffMs?: readonly [first: number, max: number];
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
  /** The listening fd, or -1 when serving one connected fd. */
  readonly #fd: number;
  /**
   * Resolves once the server serves no more: after close(), when the one
   * connection of `connectedFd` ended (undefined), or when accepting failed
   * for good (the error, already logged in one line).
   */
  readonly done: Promise<Error | undefined>;
  #finish!: (error: Error | undefined) => void;
  #backoffMs = 0;
  #retry: ReturnType<typeof setTimeout> | undefined;
  readonly #options: VhostUserServerOptions;
  readonly #log: (line: string, level?: "info" | "warn" | "error") => void;
  readonly #eventFds = new NativeEventFds();
  #watch: FdWatch | undefined;
  #current: VhostUserConnection | undefined;
  /** A front-end that connected while the previous connection was still releasing its resources. */
  #next: number | undefined;
  #closing: Promise<void> | undefined;

  /**
   * Starts listening at once.
   *
   * @throws {TypeError} unless exactly one of `path`, `listenFd` and `connectedFd` is given.
   * @throws {NativeError} if the socket cannot be created (e.g. `"EADDRINUSE"`
   *   when a server already answers on `path`).
   */
  constructor(options: VhostUserServerOptions) {
    const given = [options.path, options.listenFd, options.connectedFd];
    if (given.filter((v) => v !== undefined).length !== 1)
      throw new TypeError("give exactly one of path, listenFd and connectedFd");
    this.#options = options;
    this.#log = options.log ?? ((line) => console.warn(line));
    this.path = options.path;
    this.done = new Promise((resolve) => (this.#finish = resolve));
    if (options.connectedFd !== undefined) {
      this.#fd = -1;
      this.#serve(options.connectedFd);
      void this.#current!.closed.then(() => this.#finish(undefined));
      return;
    }
    this.#fd = options.listenFd ?? listen(options.path!, options.removeStale ?? true);
    this.#watchListener();
  }

  #watchListener(): void {
    this.#watch = watch(this.#fd, PollEvent.READABLE, (error) => {
      if (error !== null) this.#acceptFailed(error);
      else this.#accept();
    });
  }

  /** False when the server serves one connected fd instead of listening. */
  get listening(): boolean {
    return this.#fd >= 0;
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
    clearTimeout(this.#retry);
    if (this.#fd >= 0) close(this.#fd);
    if (this.path !== undefined) unlinkQuietly(this.path);
    if (this.#next !== undefined) close(this.#next);
    this.#next = undefined;
    await this.#current?.close();
    this.#finish(undefined);
  }

  /** A shortage pauses accepting (growing delay); anything else stops it for good. */
  #acceptFailed(e: unknown): void {
    this.#watch?.stop();
    this.#watch = undefined;
    if (this.#closing !== undefined) return;
    const [first, max] = this.#options.acceptBackoffMs ?? [100, 5000];
    const why = e instanceof Error ? e.message : String(e);
    if (isNativeError(e) && ACCEPT_SHORTAGE.has(e.errnoCode ?? "")) {
      this.#backoffMs = Math.min(max, this.#backoffMs === 0 ? first : this.#backoffMs * 2);
      this.#log(`vhost-user: accept: ${why}; retrying in ${this.#backoffMs} ms`, "warn");
      this.#retry = setTimeout(() => {
        if (this.#closing === undefined) this.#watchListener();
      }, this.#backoffMs);
      return;
    }
    const error = new Error(`accept failed, no longer listening: ${why}`, { cause: e });
    this.#log(`vhost-user: ${error.message}`, "error");
    this.#finish(error);
  }

  #accept(): void {
    for (;;) {
      let fd: number | null;
      try {
        fd = acceptUnix(this.#fd);
      } catch (e) {
        this.#acceptFailed(e);
        return;
      }
      if (fd === null) return;
      this.#backoffMs = 0;
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
        this.#log("vhost-user: refusing a second front-end connection (one at a time)", "warn");
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
      if (info.error === undefined) this.#log("vhost-user: front-end disconnected", "info");
    });
    conn.start();
    o.onConnection?.(conn);
  }
}

/** accept() errors that say "not now" (out of fds or memory) rather than "never". */
const ACCEPT_SHORTAGE: ReadonlySet<string> = new Set(["EMFILE", "ENFILE", "ENOBUFS", "ENOMEM"]);

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

/**
 * One vhost-user connection: socket → framing → handlers, strictly in order,
 * replies back. qemu/qemu docs/interop/vhost-user.rst "Communication",
 * "REPLY_ACK"; docs/conformance.md "vhost-user frontend violations →
 * that connection closes".
 *
 * - Messages are handled one at a time, in arrival order; a handler may wait
 *   (GET_VRING_BASE waits for in-flight requests) without blocking the
 *   thread, and later messages queue behind it.
 * - REPLY_ACK: once negotiated, a request with NEED_REPLY that has no reply
 *   of its own gets a u64 status (0 success, 1 failure); one that has a reply
 *   gets only that reply. Replies carry flags exactly 0x5.
 * - A protocol violation gets a failure status if the front-end asked for
 *   one, one log line, and the connection closes: every ring stops (in-flight
 *   requests complete first), every mapping is unmapped and every fd
 *   released. The daemon goes on accepting connections.
 *
 * @module
 */
import { ErrorCode, VirtioError, isVirtioError } from "../errors.ts";
import {
  VHOST_USER_REPLY_MASK,
  VHOST_USER_VERSION,
  VHOST_USER_VERSION_MASK,
  vhostUserRequestName,
} from "../spec/vhost-user.ts";
import type { VhostUserBackend } from "./backend.ts";
import { encodeReply, encodeU64 } from "./codec.ts";
import type { VringDataplane } from "./dataplane.ts";
import { MessageReader, needsReply, type VhostUserMessage } from "./framing.ts";
import { VHOST_USER_HANDLERS, REPLY_ACK_FAILED, type HandlerResult } from "./handlers.ts";
import type { EventFds, VhostUserSocket } from "./host.ts";
import { VHOST_USER_REQUEST_RULES } from "./request-rules.ts";
import { VhostUserSession } from "./session.ts";

/** Default GET_MAX_MEM_SLOTS answer (what qemu-storage-daemon 7.2 announces). */
export const DEFAULT_MAX_MEM_SLOTS = 32;

/**
 * Messages received but not handled yet, at most. They queue only while a
 * handler waits (GET_VRING_BASE for in-flight requests); a front-end that
 * keeps sending meanwhile without waiting for replies is not QEMU or
 * libblkio, and would otherwise make the back-end buffer without bound.
 */
export const MAX_QUEUED_MESSAGES = 1024;

/** Options of {@link VhostUserConnection}. */
export interface VhostUserConnectionOptions {
  /** The device. */
  readonly backend: VhostUserBackend;
  /** Where the rings run (./rings.ts over the device's dataplane half). */
  readonly dataplane: VringDataplane;
  /** Closes received fds and signals error eventfds. */
  readonly fds: Pick<EventFds, "close" | "signal">;
  /** Memory slots announced in GET_MAX_MEM_SLOTS (default {@link DEFAULT_MAX_MEM_SLOTS}). */
  readonly maxMemSlots?: number;
  /**
   * Creates a zeroed, sealed shared-memory fd of a size (GET_INFLIGHT_FD);
   * absent: inflight I/O tracking is not offered.
   */
  readonly allocateShared?: (size: number) => number;
  /** Where log lines go (default: console.warn). */
  readonly log?: (line: string) => void;
}

/** Why a connection ended. */
export interface CloseInfo {
  /** The violation or failure that closed it; undefined for a clean end of file. */
  readonly error: VirtioError | undefined;
}

/**
 * Serves one front-end connection.
 *
 * @example
 * ```ts
 * const conn = new VhostUserConnection(socket, {
 *   backend: blk,
 *   dataplane: new DataplaneRings(handle),
 *   fds: eventFds,
 * });
 * conn.start();
 * const { error } = await conn.closed;
 * ```
 */
export class VhostUserConnection {
  readonly #socket: VhostUserSocket;
  readonly #reader: MessageReader;
  readonly #session: VhostUserSession;
  readonly #log: (line: string) => void;
  readonly #name: string;
  #chain: Promise<void> = Promise.resolve();
  #closing = false;
  /** Messages received and not yet handled. */
  #queued = 0;
  #error: VirtioError | undefined;
  #resolveClosed!: (info: CloseInfo) => void;
  /** Resolves once the connection is closed and everything it held is released. */
  readonly closed: Promise<CloseInfo>;

  constructor(socket: VhostUserSocket, options: VhostUserConnectionOptions) {
    this.#socket = socket;
    this.#log = options.log ?? ((line) => console.warn(line));
    this.#name = options.backend.name;
    this.#reader = new MessageReader((fd) => options.fds.close(fd));
    this.#session = new VhostUserSession({
      backend: options.backend,
      dataplane: options.dataplane,
      fds: options.fds,
      maxMemSlots: options.maxMemSlots ?? DEFAULT_MAX_MEM_SLOTS,
      log: this.#log,
      schedule: (task) => this.#enqueue(task),
      ...(options.allocateShared === undefined ? {} : { allocateShared: options.allocateShared }),
    });
    this.closed = new Promise((resolve) => (this.#resolveClosed = resolve));
  }

  /** True once the connection is closing (the peer hung up, a violation, or close()). */
  get closing(): boolean {
    return this.#closing;
  }

  /** The connection's state (read-only use: tests, stats). */
  get session(): VhostUserSession {
    return this.#session;
  }

  /** Resolves once every message received so far has been handled. */
  async whenIdle(): Promise<void> {
    for (let c = this.#chain; ; c = this.#chain) {
      await c;
      if (c === this.#chain) return;
    }
  }

  /** Starts reading from the socket. */
  start(): void {
    this.#socket.start({
      data: (bytes, fds) => this.#onData(bytes, fds),
      end: (error) => this.#onEnd(error),
    });
  }

  /**
   * Closes the connection: stops reading, lets the message being handled
   * finish, stops every ring (in-flight requests complete), unmaps memory and
   * releases every fd. Idempotent.
   */
  close(error?: VirtioError): Promise<CloseInfo> {
    if (this.#closing) return this.closed;
    this.#closing = true;
    this.#error = error;
    this.#socket.close();
    this.#reader.dispose();
    this.#enqueue(() => this.#teardown());
    return this.closed;
  }

  #onData(bytes: Uint8Array, fds: number[]): void {
    if (this.#closing) {
      fds.forEach((fd) => this.#session.closeFd(fd));
      return;
    }
    let messages: VhostUserMessage[];
    try {
      messages = this.#reader.push(bytes, fds);
    } catch (e) {
      this.#nackMalformed(e);
      this.#fail(e);
      return;
    }
    this.#queued += messages.length;
    for (const m of messages) {
      this.#enqueue(() => {
        this.#queued--;
        return this.#dispatch(m);
      });
    }
    if (this.#queued > MAX_QUEUED_MESSAGES) {
      this.#fail(
        new VirtioError(
          ErrorCode.VHOST_USER_PROTOCOL,
          `more than ${MAX_QUEUED_MESSAGES} messages queued behind a pending one`,
          { queued: this.#queued },
        ),
      );
    }
  }

  #onEnd(error: Error | undefined): void {
    if (error !== undefined && !this.#closing)
      this.#log(`vhost-user: ${this.#name}: socket error: ${error.message}`);
    void this.close();
  }

  #enqueue(task: () => Promise<void>): void {
    this.#chain = this.#chain.then(task).catch((e: unknown) => this.#fail(e));
  }

  async #dispatch(msg: VhostUserMessage): Promise<void> {
    try {
      if (this.#closing) return;
      const rule = VHOST_USER_REQUEST_RULES.get(msg.request)!;
      const handler = VHOST_USER_HANDLERS.get(msg.request)!;
      let result;
      try {
        result = await handler(this.#session, msg);
      } catch (e) {
        if (!rule.reply) this.#ack(msg, REPLY_ACK_FAILED);
        throw e;
      }
      if (rule.reply) {
        this.#sendReply(msg, result);
      } else {
        this.#ack(msg, typeof result === "number" ? result : 0);
      }
    } finally {
      for (const fd of msg.fds.splice(0)) this.#session.closeFd(fd);
    }
  }

  /**
   * A malformed message whose header was sane (version 1, not a reply, a
   * request without a reply body) gets the failure status it asked for.
   */
  #nackMalformed(e: unknown): void {
    if (!isVirtioError(e)) return;
    const { request, flags } = e.details;
    if (typeof request !== "number" || typeof flags !== "number") return;
    const rule = VHOST_USER_REQUEST_RULES.get(request);
    const sane = (flags & (VHOST_USER_VERSION_MASK | VHOST_USER_REPLY_MASK)) === VHOST_USER_VERSION;
    if (rule !== undefined && !rule.reply && sane)
      this.#ack({ request, flags, payload: new Uint8Array(0), fds: [] }, REPLY_ACK_FAILED);
  }

  /** The REPLY_ACK status, if negotiated and asked for. */
  #ack(msg: VhostUserMessage, status: number): void {
    if (needsReply(msg) && this.#session.replyAck)
      this.#send(encodeReply(msg.request, encodeU64(BigInt(status))));
  }

  /** A reply body, with the fds a handler attached (closed here once sent). */
  #sendReply(msg: VhostUserMessage, result: HandlerResult): void {
    if (result instanceof Uint8Array) return this.#send(encodeReply(msg.request, result));
    if (typeof result !== "object")
      throw new Error(`${vhostUserRequestName(msg.request)} handler returned no reply body`);
    try {
      this.#send(encodeReply(msg.request, result.payload), result.fds);
    } finally {
      for (const fd of result.fds) this.#session.closeFd(fd);
    }
  }

  #send(bytes: Uint8Array, fds: readonly number[] = []): void {
    if (this.#closing) return;
    try {
      this.#socket.send(bytes, fds);
    } catch (e) {
      this.#fail(new VirtioError(ErrorCode.VHOST_USER_DISCONNECTED, `send failed: ${String(e)}`));
    }
  }

  #fail(e: unknown): void {
    if (this.#closing) return;
    const err = isVirtioError(e)
      ? e
      : new VirtioError(
          ErrorCode.VHOST_USER_BACKEND,
          `internal error: ${e instanceof Error ? e.message : String(e)}`,
        );
    this.#log(`vhost-user: ${this.#name}: closing connection: ${err.code}: ${err.message}`);
    void this.close(err);
  }

  async #teardown(): Promise<void> {
    try {
      await this.#session.dispose();
    } catch (e) {
      this.#log(
        `vhost-user: ${this.#name}: teardown: ${e instanceof Error ? e.message : String(e)}`,
      );
    }
    this.#resolveClosed({ error: this.#error });
  }
}

/**
 * One NBD connection in the transmission phase: many requests in flight,
 * replies matched by cookie. NetworkBlockDevice/nbd doc/proto.md
 * "Transmission", proto.md "Request message", proto.md "Terminating the
 * transmission phase".
 *
 * - Each request gets a cookie distinct from every other in flight ("Clients
 *   SHOULD use a cookie that is distinct from all other currently pending
 *   transactions"); replies may come in any order.
 * - WRITE payload views are written to the socket as they are (no copy); a
 *   request settles only when its reply arrived and the socket is done with
 *   its payload, or when the connection is destroyed (queued writes are
 *   dropped). READ data is copied into the request's views as it arrives and
 *   never after the request settled.
 * - A malformed reply (./replies.ts), a request older than the request
 *   timeout, or the socket failing destroys the connection: every request
 *   in flight rejects with that error and `onClose` reports it.
 * - NBD_ESHUTDOWN from the server fails that request, and the connection
 *   takes no new ones and sends NBD_CMD_DISC once the last reply is in ("If
 *   the client receives an NBD_ESHUTDOWN error it MUST initiate a soft
 *   disconnect").
 *
 * @module
 */
import type { Socket } from "node:net";
import { ErrorCode, VirtioError, isVirtioError } from "../errors.ts";
import { errorText, type Logger } from "../log.ts";
import * as nbd from "../spec/nbd.ts";
import { encodeRequest } from "./codec.ts";
import type { NbdExportInfo } from "./handshake.ts";
import { NbdReplyParser, type NbdServerError } from "./replies.ts";

/** Data of a request: what a WRITE sends, where a READ's data goes. */
export interface NbdRequestData {
  readonly write?: readonly Uint8Array[];
  readonly read?: readonly Uint8Array[];
}

/** Options of {@link NbdConnection}. */
export interface NbdConnectionOptions {
  /** Names the connection in log lines and errors, e.g. `nbd /run/nbd.sock conn 0`. */
  readonly name: string;
  /** A request with no reply after this long destroys the connection. */
  readonly requestTimeoutMs: number;
  readonly logger: Logger;
  /** Called once when the connection is gone (error undefined: closed on purpose or softly). */
  readonly onClose?: (error: VirtioError | undefined) => void;
}

interface Pending {
  readonly type: number;
  readonly offset: number;
  readonly length: number;
  readonly read: readonly Uint8Array[] | undefined;
  readonly start: number;
  readonly resolve: () => void;
  readonly reject: (e: Error) => void;
  written: boolean;
  /** undefined: no reply yet; null: success. */
  reply: NbdServerError | null | undefined;
}

/** Copies `bytes` into the views of `iov` starting at byte `at` of their concatenation. */
function scatter(iov: readonly Uint8Array[], at: number, bytes: Uint8Array | number): void {
  let skip = at;
  let done = 0;
  const total = typeof bytes === "number" ? bytes : bytes.length;
  for (const v of iov) {
    if (done === total) return;
    if (skip >= v.length) {
      skip -= v.length;
      continue;
    }
    const n = Math.min(v.length - skip, total - done);
    if (typeof bytes === "number") v.fill(0, skip, skip + n);
    else v.set(bytes.subarray(done, done + n), skip);
    done += n;
    skip = 0;
  }
}

const U16 = 0xffff;
const U32 = 0xffff_ffff;

/** Why a request cannot be sent as given (the caller's mistake), or undefined. */
function checkRequest(
  type: number,
  flags: number,
  offset: number,
  length: number,
  data: NbdRequestData,
): string | undefined {
  const ok = (n: number, max: number): boolean => Number.isSafeInteger(n) && n >= 0 && n <= max;
  if (!ok(type, U16) || !ok(flags, U16) || !ok(offset, Number.MAX_SAFE_INTEGER) || !ok(length, U32))
    return `bad request fields (type ${type}, flags ${flags}, offset ${offset}, length ${length})`;
  const total = (iov: readonly Uint8Array[]): number => iov.reduce((n, v) => n + v.length, 0);
  // The payload length must match the header exactly, or the stream loses its framing.
  if (type === nbd.NBD_CMD_WRITE && total(data.write ?? []) !== length)
    return `NBD_CMD_WRITE of ${length} bytes with ${total(data.write ?? [])} bytes of data`;
  if (type !== nbd.NBD_CMD_WRITE && data.write)
    return "data to write on a command other than NBD_CMD_WRITE";
  if (type === nbd.NBD_CMD_READ && total(data.read ?? []) !== length)
    return `NBD_CMD_READ of ${length} bytes into ${total(data.read ?? [])} bytes of buffers`;
  return undefined;
}

/**
 * A connection that finished its handshake.
 *
 * @example
 * ```ts
 * const conn = new NbdConnection(socket, info, leftover, { name, requestTimeoutMs: 30_000, logger });
 * await conn.request(NBD_CMD_READ, 0, 0, 4096, { read: [buf] });
 * ```
 */
export class NbdConnection {
  readonly info: NbdExportInfo;
  readonly name: string;
  readonly #socket: Socket;
  readonly #opts: NbdConnectionOptions;
  readonly #parser: NbdReplyParser;
  readonly #pending = new Map<number, Pending>();
  readonly #timer: NodeJS.Timeout;
  #nextCookie = 1;
  #closed = false;
  #draining = false;

  constructor(
    socket: Socket,
    info: NbdExportInfo,
    leftover: Uint8Array,
    opts: NbdConnectionOptions,
  ) {
    this.#socket = socket;
    this.info = info;
    this.name = opts.name;
    this.#opts = opts;
    this.#parser = new NbdReplyParser(
      {
        lookup: (c) => this.#pending.get(c),
        // Only into a request still in flight: once settled, its views are the caller's again.
        data: (c, at, b) => scatter(this.#pending.get(c)?.read ?? [], at, b),
        zero: (c, at, n) => scatter(this.#pending.get(c)?.read ?? [], at, n),
        done: (c, e) => this.#replied(c, e),
      },
      { structured: info.structuredReplies },
    );
    socket.on("data", this.#onData);
    socket.on("error", (e) => this.destroy(this.#lost(e.message)));
    socket.on("close", () => this.destroy(this.#lost("the server closed the connection")));
    const tick = Math.max(10, Math.min(1000, opts.requestTimeoutMs / 4));
    this.#timer = setInterval(() => this.#checkTimeout(), tick).unref();
    if (leftover.length > 0) this.#onData(Buffer.from(leftover));
  }

  /** Requests in flight. */
  get inFlight(): number {
    return this.#pending.size;
  }

  /** True while new requests are taken. */
  get usable(): boolean {
    return !this.#closed && !this.#draining;
  }

  /**
   * Sends one request; resolves when the server answered it successfully.
   *
   * @throws {VirtioError} `NBD_REQUEST` (the server's error value in `details.error`),
   *   `NBD_PROTOCOL`, `NBD_TIMEOUT` or `NBD_DISCONNECTED`.
   */
  request(
    type: number,
    flags: number,
    offset: number,
    length: number,
    data: NbdRequestData = {},
  ): Promise<void> {
    if (!this.usable)
      return Promise.reject(
        new VirtioError(ErrorCode.NBD_DISCONNECTED, `${this.name}: connection is closing`),
      );
    const misuse = checkRequest(type, flags, offset, length, data);
    if (misuse) return Promise.reject(new RangeError(`${this.name}: ${misuse}`));
    const cookie = this.#nextCookie++;
    return new Promise<void>((resolve, reject) => {
      const p: Pending = {
        type,
        offset,
        length,
        read: data.read,
        start: Date.now(),
        resolve,
        reject,
        written: true,
        reply: undefined,
      };
      this.#pending.set(cookie, p);
      this.#opts.logger.trace?.(
        `nbd_request ${this.name} cookie ${cookie} ${nbd.nbdCommandName(type)} offset ${offset} length ${length}`,
      );
      this.#send(cookie, p, flags, data.write);
    });
  }

  #send(cookie: number, p: Pending, flags: number, write: readonly Uint8Array[] | undefined): void {
    const header = encodeRequest({
      flags,
      type: p.type,
      cookie,
      offset: p.offset,
      length: p.length,
    });
    if (!write || write.length === 0) {
      this.#socket.write(header);
      return;
    }
    p.written = false;
    this.#socket.cork();
    this.#socket.write(header);
    write.forEach((v, i) => {
      if (i < write.length - 1) this.#socket.write(v);
      else this.#socket.write(v, () => this.#writtenOut(cookie, p));
    });
    this.#socket.uncork();
  }

  #writtenOut(cookie: number, p: Pending): void {
    p.written = true;
    if (p.reply !== undefined && this.#pending.get(cookie) === p) this.#settle(cookie, p);
  }

  #replied(cookie: number, error: NbdServerError | undefined): void {
    const p = this.#pending.get(cookie);
    if (!p) return; // the connection was destroyed while this delivery was being parsed
    p.reply = error ?? null;
    if (error?.error === nbd.NBD_ESHUTDOWN) this.#draining = true;
    if (p.written) this.#settle(cookie, p);
  }

  #settle(cookie: number, p: Pending): void {
    this.#pending.delete(cookie);
    const e = p.reply;
    if (!e) p.resolve();
    else {
      const what = `${this.name} cookie ${cookie} ${nbd.nbdCommandName(p.type)} [${p.offset}, +${p.length})`;
      const text = e.message ? `: ${e.message}` : "";
      const raw = e.raw !== e.error ? ` (value ${e.raw})` : "";
      p.reject(
        new VirtioError(
          ErrorCode.NBD_REQUEST,
          `${what} failed with ${nbd.nbdErrorName(e.error)}${raw}${text}`,
          { error: e.error, cookie },
        ),
      );
    }
    if (this.#draining && this.#pending.size === 0) this.#softDisconnect();
  }

  readonly #onData = (b: Buffer): void => {
    if (this.#closed) return;
    try {
      this.#parser.feed(b);
    } catch (e) {
      const err = isVirtioError(e) ? e : new VirtioError(ErrorCode.NBD_PROTOCOL, String(e));
      this.destroy(new VirtioError(err.code, `${this.name}: ${err.message}`, err.details));
    }
  };

  #checkTimeout(): void {
    const oldest = this.#pending.values().next().value;
    if (!oldest || Date.now() - oldest.start <= this.#opts.requestTimeoutMs) return;
    const what = `${nbd.nbdCommandName(oldest.type)} [${oldest.offset}, +${oldest.length})`;
    this.destroy(
      new VirtioError(
        ErrorCode.NBD_TIMEOUT,
        `${this.name}: ${what} got no reply within ${this.#opts.requestTimeoutMs} ms`,
      ),
    );
  }

  #lost(why: string): VirtioError {
    return new VirtioError(ErrorCode.NBD_DISCONNECTED, `${this.name}: ${why}`);
  }

  #softDisconnect(): void {
    // proto.md "Request types": for NBD_CMD_DISC "The values of the length and offset fields ... MUST be zero".
    this.#socket.end(
      encodeRequest({ flags: 0, type: nbd.NBD_CMD_DISC, cookie: 0, offset: 0, length: 0 }),
    );
    this.destroy(undefined, false);
    // A server that never closes its end does not keep the socket forever.
    setTimeout(() => this.#socket.destroy(), 2000).unref();
  }

  /** Soft disconnect: waits (bounded) for requests in flight, sends NBD_CMD_DISC, closes. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#draining = true;
    const until = Date.now() + this.#opts.requestTimeoutMs;
    while (this.#pending.size > 0 && !this.#closed && Date.now() < until)
      await new Promise((r) => setTimeout(r, 5));
    if (!this.#closed) this.#softDisconnect();
  }

  /**
   * Closes at once: requests in flight reject with `error` (or `NBD_DISCONNECTED`).
   * `hard` false keeps a socket that is ending (after NBD_CMD_DISC) open until the server closes it.
   */
  destroy(error: VirtioError | undefined, hard = true): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    if (hard) this.#socket.destroy();
    if (error) this.#opts.logger.error(errorText(error));
    const failure = error ?? this.#lost("connection closed");
    for (const p of this.#pending.values()) p.reject(failure);
    this.#pending.clear();
    this.#opts.onClose?.(error);
  }
}

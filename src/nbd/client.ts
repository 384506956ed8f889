/**
 * An NBD client for one export: N connections, requests spread over them,
 * reconnect with backoff. NetworkBlockDevice/nbd doc/proto.md "Transmission
 * flags" (NBD_FLAG_CAN_MULTI_CONN), proto.md "Ordering of messages and
 * writes", proto.md "Terminating the transmission phase".
 *
 * - Several connections only when the server sets NBD_FLAG_CAN_MULTI_CONN
 *   ("In the absence of this flag, clients SHOULD NOT multiplex their
 *   commands over more than one connection"); a request goes to the usable
 *   connection with the fewest requests in flight. A FLUSH covers the writes
 *   already answered on every connection (the flag's guarantee), which is all
 *   a virtio-blk FLUSH asks.
 * - When a connection goes away its requests fail (./connection.ts) and it is
 *   reopened after 100 ms, doubling up to a cap, until it succeeds or the
 *   client is closed. The export must come back with the same size. The
 *   backoff timer alone does not keep the process alive.
 * - A request that finds no usable connection waits for one, at most the
 *   request timeout, then fails with `NBD_DISCONNECTED`.
 *
 * @module
 */
import { ErrorCode, VirtioError, isVirtioError } from "../errors.ts";
import { errorText, silentLogger, type Logger } from "../log.ts";
import { NBD_FLAG_CAN_MULTI_CONN } from "../spec/nbd.ts";
import { NbdConnection, type NbdRequestData } from "./connection.ts";
import { nbdHandshake, type NbdExportInfo } from "./handshake.ts";
import { openSocket, SocketReader, targetText } from "./socket.ts";
import { parseNbdUri, type NbdTarget } from "./uri.ts";

/** Options of {@link NbdClient.connect}. */
export interface NbdClientOptions {
  /** Connections wanted (default 1; more only with NBD_FLAG_CAN_MULTI_CONN; at most 16). */
  readonly connections?: number;
  /** Bound on connecting plus the handshake (default 10 s). */
  readonly connectTimeoutMs?: number;
  /** Bound on one request (default 30 s); a late reply destroys its connection. */
  readonly requestTimeoutMs?: number;
  /** First reconnect delay (default 100 ms), doubled per failure up to `reconnectMaxDelayMs` (default 5 s). */
  readonly reconnectDelayMs?: number;
  readonly reconnectMaxDelayMs?: number;
  /** Ask for structured replies (default true). */
  readonly structuredReplies?: boolean;
  readonly logger?: Logger;
}

/** Most connections one client opens. */
export const MAX_NBD_CONNECTIONS = 16;

interface Resolved {
  readonly connectTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly reconnectDelayMs: number;
  readonly reconnectMaxDelayMs: number;
  readonly structuredReplies: boolean;
  readonly logger: Logger;
}

/** One connection attempt: socket, handshake, transmission phase. */
async function connectOnce(
  target: NbdTarget,
  o: Resolved,
  name: string,
  onClose: (e: VirtioError | undefined) => void,
): Promise<NbdConnection> {
  const started = Date.now();
  const socket = await openSocket(target, o.connectTimeoutMs);
  socket.on("error", () => {}); // errors are reported through the reader or the connection
  const left = Math.max(1, o.connectTimeoutMs - (Date.now() - started));
  const reader = new SocketReader(socket, left, `NBD handshake with ${targetText(target)}`);
  let info: NbdExportInfo;
  try {
    info = await nbdHandshake(reader, target.exportName, {
      structuredReplies: o.structuredReplies,
    });
  } catch (e) {
    reader.detach();
    if (isVirtioError(e, ErrorCode.NBD_REFUSED)) {
      // Refused after NBD_OPT_ABORT: let that reach the server, then close.
      socket.end();
      setTimeout(() => socket.destroy(), 1000).unref();
    } else socket.destroy();
    throw e;
  }
  const leftover = reader.detach();
  return new NbdConnection(socket, info, leftover, {
    name,
    requestTimeoutMs: o.requestTimeoutMs,
    logger: o.logger,
    onClose,
  });
}

/** Connects once, reads what the export offers, and disconnects softly. */
export async function probeNbdExport(
  target: NbdTarget | string,
  options: NbdClientOptions = {},
): Promise<NbdExportInfo> {
  const client = await NbdClient.connect(target, { ...options, connections: 1 });
  const info = client.info;
  await client.close();
  return info;
}

/**
 * A connected NBD export.
 *
 * @example
 * ```ts
 * const client = await NbdClient.connect("nbd+unix:///disk?socket=/run/nbd.sock");
 * await client.request(NBD_CMD_READ, 0, 0, 4096, { read: [new Uint8Array(4096)] });
 * await client.close();
 * ```
 */
export class NbdClient {
  readonly target: NbdTarget;
  /** What the first connection's handshake agreed on. */
  readonly info: NbdExportInfo;
  readonly #o: Resolved;
  readonly #slots: (NbdConnection | undefined)[];
  readonly #timers = new Set<NodeJS.Timeout>();
  #waiters: (() => void)[] = [];
  #closed = false;

  private constructor(target: NbdTarget, info: NbdExportInfo, o: Resolved, count: number) {
    this.target = target;
    this.info = info;
    this.#o = o;
    this.#slots = new Array<NbdConnection | undefined>(count).fill(undefined);
  }

  /**
   * Connects (all connections before it resolves).
   *
   * @throws {VirtioError} `NBD_URI`, `NBD_DISCONNECTED` (cannot connect), `NBD_TIMEOUT`,
   *   `NBD_HANDSHAKE`, `NBD_REFUSED` or `NBD_EXPORT`.
   */
  static async connect(
    target: NbdTarget | string,
    options: NbdClientOptions = {},
  ): Promise<NbdClient> {
    const t = typeof target === "string" ? parseNbdUri(target) : target;
    const o: Resolved = {
      connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
      requestTimeoutMs: options.requestTimeoutMs ?? 30_000,
      reconnectDelayMs: options.reconnectDelayMs ?? 100,
      reconnectMaxDelayMs: options.reconnectMaxDelayMs ?? 5000,
      structuredReplies: options.structuredReplies ?? true,
      logger: options.logger ?? silentLogger,
    };
    const wanted = options.connections ?? 1;
    if (!Number.isInteger(wanted) || wanted < 1 || wanted > MAX_NBD_CONNECTIONS)
      throw new RangeError(
        `connections must be an integer in 1..${MAX_NBD_CONNECTIONS}, got ${wanted}`,
      );
    let onFirstClose: (e: VirtioError | undefined) => void = () => {};
    const first = await connectOnce(t, o, `nbd ${targetText(t)} conn 0`, (e) => onFirstClose(e));
    if (!first.usable)
      throw new VirtioError(
        ErrorCode.NBD_DISCONNECTED,
        `nbd ${targetText(t)} conn 0: closed right after the handshake`,
      );
    const multi = (first.info.flags & NBD_FLAG_CAN_MULTI_CONN) !== 0;
    if (wanted > 1 && !multi)
      o.logger.warn(
        `nbd ${targetText(t)}: the server does not set NBD_FLAG_CAN_MULTI_CONN; using 1 connection, not ${wanted}`,
      );
    const client = new NbdClient(t, first.info, o, multi ? wanted : 1);
    onFirstClose = (e) => client.#lost(0, first, e);
    client.#adopt(0, first);
    try {
      await Promise.all(
        client.#slots.map((_, i) => (i === 0 ? Promise.resolve() : client.#open(i))),
      );
    } catch (e) {
      await client.close();
      throw e;
    }
    return client;
  }

  /** Connections this client keeps (1, or more with NBD_FLAG_CAN_MULTI_CONN). */
  get connections(): number {
    return this.#slots.length;
  }

  /** Connections up right now. */
  get connected(): number {
    return this.#slots.filter((c) => c?.usable).length;
  }

  #name(i: number): string {
    return `nbd ${targetText(this.target)} conn ${i}`;
  }

  async #open(i: number): Promise<void> {
    let conn: NbdConnection | undefined = undefined;
    conn = await connectOnce(this.target, this.#o, this.#name(i), (e) => this.#lost(i, conn, e));
    const want = this.info;
    if (conn.info.size !== want.size) {
      conn.destroy(undefined);
      throw new VirtioError(
        ErrorCode.NBD_EXPORT,
        `${this.#name(i)}: the export is now ${conn.info.size} bytes, was ${want.size}`,
      );
    }
    if (!conn.usable)
      throw new VirtioError(
        ErrorCode.NBD_DISCONNECTED,
        `${this.#name(i)}: closed right after the handshake`,
      );
    this.#adopt(i, conn);
  }

  #adopt(i: number, conn: NbdConnection): void {
    if (this.#closed) {
      void conn.close();
      return;
    }
    this.#slots[i] = conn;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  #lost(i: number, conn: NbdConnection | undefined, e: VirtioError | undefined): void {
    if (this.#closed || conn === undefined || this.#slots[i] !== conn) return;
    this.#slots[i] = undefined;
    this.#o.logger.warn(`${this.#name(i)}: lost (${e ? errorText(e) : "closed"}); reconnecting`);
    this.#schedule(i, this.#o.reconnectDelayMs);
  }

  #schedule(i: number, delay: number): void {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      if (this.#closed) return;
      this.#open(i).then(
        () => this.#o.logger.warn(`${this.#name(i)}: reconnected`),
        (e: unknown) => {
          this.#o.logger.warn(
            `${this.#name(i)}: reconnect failed (${errorText(e)}); next try in ${Math.min(delay * 2, this.#o.reconnectMaxDelayMs)} ms`,
          );
          this.#schedule(i, Math.min(delay * 2, this.#o.reconnectMaxDelayMs));
        },
      );
    }, delay);
    // Reconnecting alone does not keep a process alive (a request waiting for it does).
    timer.unref();
    this.#timers.add(timer);
  }

  #pick(): NbdConnection | undefined {
    let best: NbdConnection | undefined;
    for (const c of this.#slots) if (c?.usable && (!best || c.inFlight < best.inFlight)) best = c;
    return best;
  }

  /** Waits until some connection is usable (bounded by the request timeout). */
  #waitForConnection(): Promise<NbdConnection> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== wake);
        reject(
          new VirtioError(
            ErrorCode.NBD_DISCONNECTED,
            `nbd ${targetText(this.target)}: no connection to the server within ${this.#o.requestTimeoutMs} ms`,
          ),
        );
      }, this.#o.requestTimeoutMs);
      const wake = (): void => {
        clearTimeout(timer);
        const c = this.#pick();
        if (c) resolve(c);
        else
          reject(
            new VirtioError(
              ErrorCode.NBD_DISCONNECTED,
              `nbd ${targetText(this.target)}: client closed`,
            ),
          );
      };
      this.#waiters.push(wake);
    });
  }

  /**
   * One NBD request on some connection (see NbdConnection.request). The
   * caller respects the export's size constraints and flags.
   */
  async request(
    type: number,
    flags: number,
    offset: number,
    length: number,
    data?: NbdRequestData,
  ): Promise<void> {
    if (this.#closed)
      throw new VirtioError(
        ErrorCode.NBD_DISCONNECTED,
        `nbd ${targetText(this.target)}: client closed`,
      );
    const conn = this.#pick() ?? (await this.#waitForConnection());
    return conn.request(type, flags, offset, length, data);
  }

  /** Stops reconnecting and disconnects every connection softly. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    for (const w of this.#waiters) w();
    this.#waiters = [];
    await Promise.all(this.#slots.map((c) => (c ? c.close() : Promise.resolve())));
    this.#slots.fill(undefined);
  }
}

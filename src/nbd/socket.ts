/**
 * Sockets to an NBD server (TCP or Unix, Node's `net`) and the bounded
 * reader the handshake runs on. NetworkBlockDevice/nbd doc/uri.md "NBD URI
 * scheme" (where to connect); proto.md "Handshake" (what is read first).
 *
 * Every wait is bounded: connecting and the whole handshake share one
 * deadline; when it passes the socket is destroyed and the read rejects
 * with `NBD_TIMEOUT`. A socket that ends or fails rejects with
 * `NBD_DISCONNECTED`.
 *
 * @module
 */
import { createConnection, type Socket } from "node:net";
import { ErrorCode, VirtioError } from "../errors.ts";
import { ByteQueue } from "./codec.ts";
import type { HandshakeIo } from "./handshake.ts";
import type { NbdTarget } from "./uri.ts";

/** A target for log lines: `HOST:PORT` or the socket path. */
export function targetText(t: NbdTarget): string {
  return t.transport === "unix" ? t.path : `${t.host}:${t.port}`;
}

/** Connects to `target`; rejects with `NBD_DISCONNECTED` (refused, unreachable) or `NBD_TIMEOUT`. */
export function openSocket(target: NbdTarget, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket =
      target.transport === "unix"
        ? createConnection({ path: target.path })
        : createConnection({ host: target.host, port: target.port, noDelay: true });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(
        new VirtioError(
          ErrorCode.NBD_TIMEOUT,
          `NBD connect to ${targetText(target)} timed out after ${timeoutMs} ms`,
        ),
      );
    }, timeoutMs);
    socket.once("error", (e) => {
      clearTimeout(timer);
      socket.destroy();
      reject(
        new VirtioError(
          ErrorCode.NBD_DISCONNECTED,
          `NBD connect to ${targetText(target)}: ${e.message}`,
        ),
      );
    });
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.removeAllListeners("error");
      resolve(socket);
    });
  });
}

/**
 * Reads exact byte counts from a socket until {@link SocketReader.detach};
 * one read at a time.
 */
export class SocketReader implements HandshakeIo {
  readonly #socket: Socket;
  readonly #queue = new ByteQueue();
  readonly #timer: NodeJS.Timeout;
  #want: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  #ended: VirtioError | undefined;

  /** @param deadlineMs the bound on everything read through this reader. */
  constructor(socket: Socket, deadlineMs: number, what: string) {
    this.#socket = socket;
    socket.on("data", this.#onData);
    socket.on("end", this.#onEnd);
    socket.on("close", this.#onEnd);
    socket.on("error", this.#onError);
    this.#timer = setTimeout(() => {
      this.#end(new VirtioError(ErrorCode.NBD_TIMEOUT, `${what} timed out after ${deadlineMs} ms`));
      socket.destroy();
    }, deadlineMs);
  }

  read(n: number): Promise<Buffer> {
    if (this.#queue.length >= n) return Promise.resolve(this.#queue.take(n));
    if (this.#ended) return Promise.reject(this.#ended);
    return new Promise((resolve, reject) => {
      this.#want = { n, resolve, reject };
    });
  }

  write(bytes: Uint8Array): void {
    if (!this.#ended) this.#socket.write(bytes);
  }

  /** Stops reading; returns bytes received beyond the last read. */
  detach(): Buffer {
    clearTimeout(this.#timer);
    this.#socket.off("data", this.#onData);
    this.#socket.off("end", this.#onEnd);
    this.#socket.off("close", this.#onEnd);
    this.#socket.off("error", this.#onError);
    return this.#queue.drain();
  }

  readonly #onData = (b: Buffer): void => {
    this.#queue.push(b);
    const w = this.#want;
    if (w && this.#queue.length >= w.n) {
      this.#want = undefined;
      w.resolve(this.#queue.take(w.n));
    }
  };

  readonly #onEnd = (): void => {
    this.#end(
      new VirtioError(
        ErrorCode.NBD_DISCONNECTED,
        "NBD server closed the connection during the handshake",
      ),
    );
  };

  readonly #onError = (e: Error): void => {
    this.#end(
      new VirtioError(
        ErrorCode.NBD_DISCONNECTED,
        `NBD connection failed during the handshake: ${e.message}`,
      ),
    );
  };

  #end(e: VirtioError): void {
    this.#ended ??= e;
    clearTimeout(this.#timer);
    const w = this.#want;
    this.#want = undefined;
    w?.reject(this.#ended);
  }
}

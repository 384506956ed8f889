/**
 * A scriptable NBD server for tests (Node `net`, Unix socket): a correct
 * fixed newstyle handshake and an in-memory export by default, with hooks to
 * misbehave at any step. NetworkBlockDevice/nbd doc/proto.md "Fixed newstyle
 * negotiation", proto.md "Transmission". Not part of the package.
 *
 * @module
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isVirtioError, type ErrorCodeValue } from "../errors.ts";
import type { Logger } from "../log.ts";
import * as nbd from "../spec/nbd.ts";
import type { NbdClientOptions } from "./client.ts";
import { ByteQueue, readU64 } from "./codec.ts";
import {
  dataChunk,
  greeting,
  infoBlockSize,
  infoExport,
  optionReply,
  simpleReply,
} from "./test-support.ts";

/** A request as the fake server received it. */
export interface FakeRequest {
  readonly flags: number;
  readonly type: number;
  readonly cookie: number;
  readonly offset: number;
  readonly length: number;
  readonly payload: Buffer | undefined;
}

/** One accepted connection. */
export interface FakeConn {
  readonly socket: Socket;
  readonly index: number;
  structured: boolean;
  send(bytes: Uint8Array): void;
}

/** How the server behaves (everything optional: a correct 1 MiB export). */
export interface FakeBehaviour {
  /** Replaces the whole handshake (raw bytes in, raw bytes out); return true to enter transmission. */
  readonly handshake?: (conn: FakeConn, queue: ByteQueue) => boolean | "wait";
  readonly size?: number;
  readonly flags?: number;
  readonly structured?: boolean;
  readonly goUnsupported?: boolean;
  readonly blockSize?: readonly [number, number, number];
  /** Answers a request; default: serve the in-memory export correctly. */
  readonly onRequest?: (req: FakeRequest, conn: FakeConn, server: FakeNbdServer) => void;
}

export const DEFAULT_FLAGS =
  nbd.NBD_FLAG_HAS_FLAGS |
  nbd.NBD_FLAG_SEND_FLUSH |
  nbd.NBD_FLAG_SEND_FUA |
  nbd.NBD_FLAG_SEND_TRIM |
  nbd.NBD_FLAG_SEND_WRITE_ZEROES;

export class FakeNbdServer {
  readonly path: string;
  readonly disk: Uint8Array;
  readonly options: number[] = [];
  readonly requests: FakeRequest[] = [];
  readonly sockets = new Set<Socket>();
  connections = 0;
  behaviour: FakeBehaviour;
  readonly #dir: string;
  readonly #server: Server;
  readonly #flagsRead = new WeakSet<FakeConn>();

  private constructor(b: FakeBehaviour) {
    this.behaviour = b;
    this.#dir = mkdtempSync(join(tmpdir(), "nbd-fake-"));
    this.path = join(this.#dir, "nbd.sock");
    this.disk = new Uint8Array(b.size ?? 1 << 20);
    this.#server = createServer((s) => this.#accept(s));
  }

  static async start(b: FakeBehaviour = {}): Promise<FakeNbdServer> {
    const s = new FakeNbdServer(b);
    await new Promise<void>((r) => s.#server.listen(s.path, r));
    return s;
  }

  get uri(): string {
    return `nbd+unix:///disk?socket=${this.path}`;
  }

  /** Drops every connection (the server keeps listening). */
  dropAll(): void {
    for (const s of this.sockets) s.destroy();
  }

  async stop(): Promise<void> {
    this.dropAll();
    await new Promise<void>((r) => this.#server.close(() => r()));
    rmSync(this.#dir, { recursive: true, force: true });
  }

  #accept(socket: Socket): void {
    this.sockets.add(socket);
    socket.on("close", () => this.sockets.delete(socket));
    socket.on("error", () => {});
    const conn: FakeConn = {
      socket,
      index: this.connections++,
      structured: false,
      send: (b) => void (socket.destroyed || socket.write(b)),
    };
    const queue = new ByteQueue();
    let phase: "handshake" | "transmission" = "handshake";
    const custom = this.behaviour.handshake;
    if (!custom) conn.send(greeting());
    else if (custom(conn, queue) === true) phase = "transmission";
    socket.on("data", (d) => {
      queue.push(d);
      if (phase === "handshake") {
        const r = custom ? custom(conn, queue) : this.#handshake(conn, queue);
        if (r !== true) return;
        phase = "transmission";
      }
      this.#transmission(conn, queue);
    });
  }

  /** The correct handshake; true once transmission starts. */
  #handshake(conn: FakeConn, q: ByteQueue): boolean {
    if (!this.#flagsRead.has(conn)) {
      if (q.length < 4) return false;
      q.take(4); // client flags
      this.#flagsRead.add(conn);
    }
    while (q.length >= 16) {
      const h = q.peek(16);
      const len = h.readUInt32BE(12);
      if (q.length < 16 + len) return false;
      q.take(16);
      const data = q.take(len);
      const opt = h.readUInt32BE(8);
      this.options.push(opt);
      if (this.#option(conn, opt, data)) return true;
    }
    return false;
  }

  #option(conn: FakeConn, opt: number, data: Buffer): boolean {
    const b = this.behaviour;
    if (opt === nbd.NBD_OPT_STRUCTURED_REPLY) {
      conn.structured = b.structured !== false;
      conn.send(optionReply(opt, conn.structured ? nbd.NBD_REP_ACK : nbd.NBD_REP_ERR_UNSUP));
    } else if (opt === nbd.NBD_OPT_GO && b.goUnsupported) {
      conn.send(optionReply(opt, nbd.NBD_REP_ERR_UNSUP));
    } else if (opt === nbd.NBD_OPT_GO) {
      conn.send(
        optionReply(opt, nbd.NBD_REP_INFO, infoExport(this.disk.length, b.flags ?? DEFAULT_FLAGS)),
      );
      if (b.blockSize) conn.send(optionReply(opt, nbd.NBD_REP_INFO, infoBlockSize(...b.blockSize)));
      conn.send(optionReply(opt, nbd.NBD_REP_ACK));
      return true;
    } else if (opt === nbd.NBD_OPT_EXPORT_NAME) {
      const r = Buffer.alloc(10);
      r.writeBigUInt64BE(BigInt(this.disk.length));
      r.writeUInt16BE(b.flags ?? DEFAULT_FLAGS, 8);
      conn.send(r);
      return true;
    } else if (opt === nbd.NBD_OPT_ABORT) {
      conn.send(optionReply(opt, nbd.NBD_REP_ACK));
      conn.socket.end();
    } else conn.send(optionReply(opt, nbd.NBD_REP_ERR_UNSUP, data.subarray(0, 0)));
    return false;
  }

  #transmission(conn: FakeConn, q: ByteQueue): void {
    while (q.length >= 28) {
      const h = q.peek(28);
      const type = h.readUInt16BE(6);
      const length = h.readUInt32BE(24);
      const withPayload = type === nbd.NBD_CMD_WRITE;
      if (withPayload && q.length < 28 + length) return;
      q.take(28);
      const req: FakeRequest = {
        flags: h.readUInt16BE(4),
        type,
        cookie: readU64(h, 8),
        offset: readU64(h, 16),
        length,
        payload: withPayload ? q.take(length) : undefined,
      };
      this.requests.push(req);
      if (type === nbd.NBD_CMD_DISC) {
        conn.socket.end();
        return;
      }
      (this.behaviour.onRequest ?? serveCorrectly)(req, conn, this);
    }
  }
}

/** The default: a correct answer from the in-memory export. */
export function serveCorrectly(req: FakeRequest, conn: FakeConn, server: FakeNbdServer): void {
  const d = server.disk;
  if (req.offset + req.length > d.length) {
    conn.send(simpleReply(req.cookie, nbd.NBD_EINVAL));
    return;
  }
  if (req.type === nbd.NBD_CMD_READ) {
    const data = d.subarray(req.offset, req.offset + req.length);
    conn.send(
      conn.structured
        ? dataChunk(req.cookie, req.offset, data, true)
        : simpleReply(req.cookie, 0, data),
    );
    return;
  }
  if (req.type === nbd.NBD_CMD_WRITE) d.set(req.payload!, req.offset);
  if (req.type === nbd.NBD_CMD_TRIM || req.type === nbd.NBD_CMD_WRITE_ZEROES)
    d.fill(0, req.offset, req.offset + req.length);
  conn.send(simpleReply(req.cookie));
}

/** Client options for tests: short bounds, fast reconnects. */
export const FAST: NbdClientOptions = {
  connectTimeoutMs: 2000,
  requestTimeoutMs: 1500,
  reconnectDelayMs: 20,
  reconnectMaxDelayMs: 100,
};

/** A logger keeping its lines. */
export function recorder(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return { lines, error: (m) => lines.push(m), warn: (m) => lines.push(m) };
}

/** Asserts `p` rejects with a VirtioError of `code` (and a message matching `match`). */
export async function rejectsWith(
  p: Promise<unknown>,
  code: ErrorCodeValue,
  match?: RegExp,
): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isVirtioError(e, code), `expected ${code}, got ${String(e)}`);
    if (match) assert.match(e.message, match);
    return true;
  });
}

/** A handshake script: the greeting, then `replies(option)` for each option ("enter": transmission). */
export function scripted(
  replies: (opt: number, conn: FakeConn) => Buffer[] | "enter",
): FakeBehaviour {
  const greeted = new WeakSet<FakeConn>();
  const flagsRead = new WeakSet<FakeConn>();
  return {
    handshake: (conn: FakeConn, q: ByteQueue) => {
      if (!greeted.has(conn)) {
        greeted.add(conn);
        conn.send(greeting());
      }
      if (!flagsRead.has(conn) && q.length >= 4) {
        q.take(4);
        flagsRead.add(conn);
      }
      while (q.length >= 16 && q.length >= 16 + q.peek(16).readUInt32BE(12)) {
        const h = q.take(16);
        q.take(h.readUInt32BE(12));
        const r = replies(h.readUInt32BE(8), conn);
        if (r === "enter") return true;
        for (const b of r) conn.send(b);
      }
      return false;
    },
  };
}

// The NBD client against a fake server that misbehaves on purpose: every bad
// handshake and every bad reply gives its documented error, never a crash or
// a hang; a broken connection is replaced and later requests succeed.
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { ErrorCode, isVirtioError, type ErrorCodeValue } from "../errors.ts";
import type { Logger } from "../log.ts";
import * as nbd from "../spec/nbd.ts";
import { ByteQueue } from "./codec.ts";
import { NbdClient, probeNbdExport, type NbdClientOptions } from "./client.ts";
import {
  DEFAULT_FLAGS,
  FakeNbdServer,
  serveCorrectly,
  type FakeBehaviour,
  type FakeConn,
} from "./fake-server-test-support.ts";
import {
  dataChunk,
  errorChunk,
  greeting,
  infoBlockSize,
  infoExport,
  optionReply,
  simpleReply,
} from "./test-support.ts";

const servers: FakeNbdServer[] = [];
after(async () => {
  for (const s of servers) await s.stop();
});

async function server(b: FakeBehaviour = {}): Promise<FakeNbdServer> {
  const s = await FakeNbdServer.start(b);
  servers.push(s);
  return s;
}

function recorder(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return { lines, error: (m) => lines.push(m), warn: (m) => lines.push(m) };
}

const FAST: NbdClientOptions = {
  connectTimeoutMs: 2000,
  requestTimeoutMs: 1500,
  reconnectDelayMs: 20,
  reconnectMaxDelayMs: 100,
};

async function rejectsWith(
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

const read = (c: NbdClient, offset: number, buf: Uint8Array) =>
  c.request(nbd.NBD_CMD_READ, 0, offset, buf.length, { read: [buf] });

/** A handshake script: greeting, then one canned reply per option. */
function scripted(replies: (opt: number, conn: FakeConn) => Buffer[] | "enter"): FakeBehaviour {
  return {
    handshake: (conn: FakeConn, q: ByteQueue) => {
      if (!(conn as { greeted?: true }).greeted) {
        (conn as { greeted?: true }).greeted = true;
        conn.send(greeting());
      }
      if (!(conn as { flags?: true }).flags && q.length >= 4) {
        q.take(4);
        (conn as { flags?: true }).flags = true;
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

describe("handshake", () => {
  test("GO with NBD_INFO_EXPORT and NBD_INFO_BLOCK_SIZE, structured replies", async () => {
    const s = await server({ blockSize: [512, 4096, 1 << 20], size: 1 << 21 });
    const info = await probeNbdExport(s.uri, FAST);
    assert.equal(info.size, 1 << 21);
    assert.equal(info.flags, DEFAULT_FLAGS);
    assert.deepEqual(
      [info.minBlockSize, info.preferredBlockSize, info.maxPayload],
      [512, 4096, 1 << 20],
    );
    assert.ok(info.structuredReplies && info.usedGo && info.blockSizeAdvertised);
    assert.deepEqual(s.options, [nbd.NBD_OPT_STRUCTURED_REPLY, nbd.NBD_OPT_GO]);
    for (let i = 0; i < 100 && s.requests.length === 0; i++)
      await new Promise((r) => setTimeout(r, 10));
    assert.equal(s.requests.at(-1)?.type, nbd.NBD_CMD_DISC, "probe disconnects softly");
  });

  test("NBD_OPT_GO unsupported: falls back to NBD_OPT_EXPORT_NAME; no structured replies", async () => {
    const s = await server({ goUnsupported: true, structured: false });
    const c = await NbdClient.connect(s.uri, FAST);
    assert.ok(!c.info.usedGo && !c.info.structuredReplies && !c.info.blockSizeAdvertised);
    assert.deepEqual(s.options, [
      nbd.NBD_OPT_STRUCTURED_REPLY,
      nbd.NBD_OPT_GO,
      nbd.NBD_OPT_EXPORT_NAME,
    ]);
    s.disk.set([1, 2, 3], 100);
    const buf = new Uint8Array(512);
    await read(c, 0, buf);
    assert.deepEqual([...buf.subarray(100, 103)], [1, 2, 3]);
    await c.close();
  });

  const O = nbd.NBD_OPT_GO;
  const bad: [string, FakeBehaviour, ErrorCodeValue, RegExp][] = [
    [
      "not an NBD server",
      { handshake: (c) => (c.send(Buffer.from("SSH-2.0-OpenSSH_9.2\r\n\0\0\0")), false) },
      ErrorCode.NBD_HANDSHAKE,
      /no NBDMAGIC/,
    ],
    [
      "oldstyle server",
      {
        handshake: (c) => {
          const b = greeting();
          b.writeBigUInt64BE(nbd.NBD_CLISERV_MAGIC, 8);
          c.send(b);
          return false;
        },
      },
      ErrorCode.NBD_HANDSHAKE,
      /oldstyle/,
    ],
    [
      "reply for another option",
      scripted((o) => [optionReply(o + 1, nbd.NBD_REP_ACK)]),
      ErrorCode.NBD_HANDSHAKE,
      /reply for option/,
    ],
    [
      "bad option reply magic",
      scripted((o) => [optionReply(o, nbd.NBD_REP_ACK).fill(0, 0, 8)]),
      ErrorCode.NBD_HANDSHAKE,
      /bad option reply magic/,
    ],
    [
      "huge option reply",
      scripted((o) => {
        const b = optionReply(o, nbd.NBD_REP_INFO);
        b.writeUInt32BE(1 << 30, 16);
        return [b];
      }),
      ErrorCode.NBD_HANDSHAKE,
      /cap 65536/,
    ],
    [
      "NBD_INFO_EXPORT of the wrong length",
      scripted((o) =>
        o === O
          ? [
              optionReply(
                o,
                nbd.NBD_REP_INFO,
                Buffer.concat([infoExport(4096, 1), Buffer.alloc(1)]),
              ),
            ]
          : [optionReply(o, nbd.NBD_REP_ACK)],
      ),
      ErrorCode.NBD_HANDSHAKE,
      /NBD_INFO_EXPORT of 13 bytes/,
    ],
    [
      "ACK without NBD_INFO_EXPORT",
      scripted((o) => [optionReply(o, nbd.NBD_REP_ACK)]),
      ErrorCode.NBD_HANDSHAKE,
      /without NBD_INFO_EXPORT/,
    ],
    [
      "minimum block size not a power of 2",
      scripted((o) =>
        o === O
          ? [optionReply(o, nbd.NBD_REP_INFO, infoBlockSize(3, 4096, 65536))]
          : [optionReply(o, nbd.NBD_REP_ACK)],
      ),
      ErrorCode.NBD_HANDSHAKE,
      /minimum block size 3/,
    ],
    [
      "maximum payload below preferred",
      scripted((o) =>
        o === O
          ? [optionReply(o, nbd.NBD_REP_INFO, infoBlockSize(512, 4096, 1024))]
          : [optionReply(o, nbd.NBD_REP_ACK)],
      ),
      ErrorCode.NBD_HANDSHAKE,
      /maximum payload 1024/,
    ],
    [
      "NBD_FLAG_HAS_FLAGS clear",
      scripted((o) =>
        o === O
          ? [optionReply(o, nbd.NBD_REP_INFO, infoExport(4096, 0)), optionReply(o, nbd.NBD_REP_ACK)]
          : [optionReply(o, nbd.NBD_REP_ACK)],
      ),
      ErrorCode.NBD_HANDSHAKE,
      /NBD_FLAG_HAS_FLAGS/,
    ],
    [
      "export larger than 2^53",
      scripted((o) =>
        o === O
          ? [
              optionReply(
                o,
                nbd.NBD_REP_INFO,
                (() => {
                  const b = infoExport(0, 1);
                  b.writeBigUInt64BE(2n ** 60n, 2);
                  return b;
                })(),
              ),
              optionReply(o, nbd.NBD_REP_ACK),
            ]
          : [optionReply(o, nbd.NBD_REP_ACK)],
      ),
      ErrorCode.NBD_EXPORT,
      /larger than 2\^53/,
    ],
    [
      "unknown export",
      scripted((o) => [
        optionReply(
          o,
          o === O ? nbd.NBD_REP_ERR_UNKNOWN : nbd.NBD_REP_ACK,
          Buffer.from(o === O ? "no such\texport" : ""),
        ),
      ]),
      ErrorCode.NBD_REFUSED,
      /NBD_REP_ERR_UNKNOWN: no such\?export/,
    ],
    [
      "TLS required",
      scripted((o) => [optionReply(o, nbd.NBD_REP_ERR_TLS_REQD)]),
      ErrorCode.NBD_REFUSED,
      /requires TLS/,
    ],
    ["silence", { handshake: () => false }, ErrorCode.NBD_TIMEOUT, /timed out after/],
    [
      "close during the handshake",
      { handshake: (c) => (c.socket.destroy(), false) },
      ErrorCode.NBD_DISCONNECTED,
      /closed the connection during the handshake/,
    ],
  ];
  for (const [name, behaviour, code, match] of bad) {
    test(name, async () => {
      const s = await server(behaviour);
      const t0 = Date.now();
      await rejectsWith(NbdClient.connect(s.uri, { ...FAST, connectTimeoutMs: 500 }), code, match);
      assert.ok(Date.now() - t0 < 2000);
    });
  }

  test("a refusal is followed by NBD_OPT_ABORT (soft disconnect)", async () => {
    const seen: number[] = [];
    const s = await server(
      scripted(
        (o) => (
          seen.push(o),
          o === nbd.NBD_OPT_ABORT ? [] : [optionReply(o, nbd.NBD_REP_ERR_POLICY)]
        ),
      ),
    );
    await rejectsWith(NbdClient.connect(s.uri, FAST), ErrorCode.NBD_REFUSED, /NBD_REP_ERR_POLICY/);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(seen.at(-1), nbd.NBD_OPT_ABORT);
  });

  test("nothing listening: NBD_DISCONNECTED", async () => {
    await rejectsWith(
      NbdClient.connect("nbd+unix:///x?socket=/nonexistent/nbd.sock", FAST),
      ErrorCode.NBD_DISCONNECTED,
      /ENOENT/,
    );
  });
});

/** A server whose first `bad` requests get `answer` instead of a correct reply. */
async function misbehaving(
  answer: (req: { cookie: number; offset: number; length: number }, conn: FakeConn) => void,
  bad = 1,
) {
  let left = bad;
  const s = await server({
    onRequest: (req, conn, srv) => {
      if (req.type === nbd.NBD_CMD_READ && left > 0) {
        left--;
        answer(req, conn);
      } else serveCorrectly(req, conn, srv);
    },
  });
  const log = recorder();
  const c = await NbdClient.connect(s.uri, { ...FAST, logger: log });
  return { s, c, log };
}

describe("transmission: bad replies close that connection only", () => {
  const cases: [string, Parameters<typeof misbehaving>[0], ErrorCodeValue, RegExp][] = [
    [
      "bad magic",
      (_r, c) => c.send(Buffer.alloc(32, 0x41)),
      ErrorCode.NBD_PROTOCOL,
      /bad reply magic 0x41414141/,
    ],
    [
      "unknown cookie",
      (r, c) => c.send(dataChunk(r.cookie + 1000, r.offset, Buffer.alloc(r.length), true)),
      ErrorCode.NBD_PROTOCOL,
      /not in flight/,
    ],
    [
      "oversize length",
      (r, c) => c.send(dataChunk(r.cookie, r.offset, Buffer.alloc(r.length + 512), true)),
      ErrorCode.NBD_PROTOCOL,
      /OFFSET_DATA length/,
    ],
    [
      "chunk outside the request",
      (r, c) => c.send(dataChunk(r.cookie, r.offset + 512, Buffer.alloc(r.length), true)),
      ErrorCode.NBD_PROTOCOL,
      /outside the request/,
    ],
    [
      "simple reply to a structured read",
      (r, c) => c.send(simpleReply(r.cookie, 0, Buffer.alloc(r.length))),
      ErrorCode.NBD_PROTOCOL,
      /simple reply to NBD_CMD_READ/,
    ],
    [
      "truncated reply, then the server hangs up",
      (r, c) => {
        c.send(dataChunk(r.cookie, r.offset, Buffer.alloc(r.length), true).subarray(0, 30));
        setTimeout(() => c.socket.destroy(), 20);
      },
      ErrorCode.NBD_DISCONNECTED,
      /closed the connection/,
    ],
    ["silence", () => {}, ErrorCode.NBD_TIMEOUT, /got no reply within 1500 ms/],
  ];
  for (const [name, answer, code, match] of cases) {
    test(name, async () => {
      const { s, c, log } = await misbehaving(answer);
      const t0 = Date.now();
      await rejectsWith(read(c, 0, new Uint8Array(4096)), code, match);
      assert.ok(Date.now() - t0 < 3000, "fails within the bounds");
      assert.ok(
        log.lines.some((l) => l.includes("conn 0") && l.includes(code)),
        log.lines.join("\n"),
      );
      // The client reconnects and the next request succeeds.
      s.disk.set([7, 7, 7], 0);
      const buf = new Uint8Array(512);
      await read(c, 0, buf);
      assert.deepEqual([...buf.subarray(0, 4)], [7, 7, 7, 0]);
      assert.equal(s.connections, 2);
      await c.close();
    });
  }

  test("all requests in flight on a broken connection fail; none hangs", async () => {
    const { c } = await misbehaving(
      (_r, conn) => setTimeout(() => conn.send(Buffer.alloc(20, 0xff)), 30),
      1,
    );
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, (_, i) => read(c, i * 512, new Uint8Array(512))),
    );
    assert.ok(results.some((r) => r.status === "rejected"));
    for (const r of results)
      if (r.status === "rejected")
        assert.ok(
          isVirtioError(r.reason) &&
            [ErrorCode.NBD_PROTOCOL].includes(r.reason.code as "VIRTIO_ERR_NBD_PROTOCOL"),
        );
    await c.close();
  });
});

describe("transmission: answers", () => {
  test("many requests in flight, answered in reverse order, land in the right buffers", async () => {
    const held: (() => void)[] = [];
    const s = await server({
      onRequest: (req, conn, srv) => {
        held.push(() => serveCorrectly(req, conn, srv));
        if (held.length === 16) held.reverse().forEach((f) => f());
      },
    });
    for (let i = 0; i < s.disk.length; i++) s.disk[i] = (i >> 9) & 0xff;
    const c = await NbdClient.connect(s.uri, FAST);
    const bufs = Array.from({ length: 16 }, () => new Uint8Array(512));
    await Promise.all(bufs.map((b, i) => read(c, i * 512, b)));
    bufs.forEach((b, i) =>
      assert.ok(
        b.every((x) => x === i),
        `buffer ${i}`,
      ),
    );
    await c.close();
  });

  test("a server error value fails that request only; the connection stays", async () => {
    const { s, c } = await misbehaving((r, conn) =>
      conn.send(errorChunk(r.cookie, nbd.NBD_EIO, "medium error")),
    );
    await rejectsWith(
      read(c, 512, new Uint8Array(512)),
      ErrorCode.NBD_REQUEST,
      /conn 0 cookie \d+ NBD_CMD_READ \[512, \+512\) failed with NBD_EIO: medium error/,
    );
    await read(c, 0, new Uint8Array(512));
    assert.equal(s.connections, 1);
    await c.close();
  });

  test("NBD_ESHUTDOWN: the request fails, the client disconnects softly and reconnects", async () => {
    const { s, c } = await misbehaving((r, conn) =>
      conn.send(errorChunk(r.cookie, nbd.NBD_ESHUTDOWN)),
    );
    await rejectsWith(read(c, 0, new Uint8Array(512)), ErrorCode.NBD_REQUEST, /NBD_ESHUTDOWN/);
    await read(c, 0, new Uint8Array(512));
    assert.ok(s.requests.some((r) => r.type === nbd.NBD_CMD_DISC));
    assert.equal(s.connections, 2);
    await c.close();
  });

  test("several connections only with NBD_FLAG_CAN_MULTI_CONN", async () => {
    const multi = await server({ flags: DEFAULT_FLAGS | nbd.NBD_FLAG_CAN_MULTI_CONN });
    const c4 = await NbdClient.connect(multi.uri, { ...FAST, connections: 4 });
    assert.equal(c4.connections, 4);
    assert.equal(multi.connections, 4);
    await Promise.all(Array.from({ length: 32 }, (_, i) => read(c4, i * 512, new Uint8Array(512))));
    await c4.close();
    const single = await server();
    const log = recorder();
    const c1 = await NbdClient.connect(single.uri, { ...FAST, connections: 4, logger: log });
    assert.equal(c1.connections, 1);
    assert.equal(single.connections, 1);
    assert.ok(log.lines.some((l) => /does not set NBD_FLAG_CAN_MULTI_CONN/.test(l)));
    await c1.close();
  });

  test("server gone: requests wait (bounded) for the reconnect, then fail or succeed", async () => {
    const s = await server();
    const c = await NbdClient.connect(s.uri, { ...FAST, requestTimeoutMs: 300 });
    s.behaviour = { handshake: () => false }; // new connections hang in the handshake
    s.dropAll();
    while (c.connected > 0) await new Promise((r) => setTimeout(r, 5));
    await rejectsWith(
      read(c, 0, new Uint8Array(512)),
      ErrorCode.NBD_DISCONNECTED,
      /no connection to the server within 300 ms/,
    );
    s.behaviour = {};
    s.dropAll();
    const t0 = Date.now();
    while (c.connected === 0 && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 20));
    await read(c, 0, new Uint8Array(512));
    await c.close();
  });
});

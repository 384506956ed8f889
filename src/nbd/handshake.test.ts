// The NBD handshake against a fake server: the good paths (NBD_OPT_GO,
// the NBD_OPT_EXPORT_NAME fallback) and every bad handshake, each with its
// documented error within the bound (docs/conformance.md "NBD server replies").
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { ErrorCode, type ErrorCodeValue } from "../errors.ts";
import * as nbd from "../spec/nbd.ts";
import { NbdClient, probeNbdExport } from "./client.ts";
import {
  DEFAULT_FLAGS,
  FAST,
  FakeNbdServer,
  rejectsWith,
  scripted,
  type FakeBehaviour,
} from "./fake-server-test-support.ts";
import { greeting, infoBlockSize, infoExport, optionReply } from "./test-support.ts";

const servers: FakeNbdServer[] = [];
after(async () => {
  for (const s of servers) await s.stop();
});

async function server(b: FakeBehaviour = {}): Promise<FakeNbdServer> {
  const s = await FakeNbdServer.start(b);
  servers.push(s);
  return s;
}

const read = (c: NbdClient, offset: number, buf: Uint8Array) =>
  c.request(nbd.NBD_CMD_READ, 0, offset, buf.length, { read: [buf] });

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

test("a server without fixed newstyle: NBD_OPT_EXPORT_NAME at once, 124 zero bytes after the flags", async () => {
  const seen: number[] = [];
  const s = await server({
    handshake: (conn, q) => {
      if (q.length === 0 && seen.length === 0) conn.send(greeting(0));
      if (q.length < 4 + 16) return false;
      const h = q.peek(20);
      if (q.length < 20 + h.readUInt32BE(16)) return false;
      assert.equal(h.readUInt32BE(0), 0, "no client flags for a server that set none");
      q.take(20 + h.readUInt32BE(16));
      seen.push(h.readUInt32BE(12));
      const r = Buffer.alloc(10 + 124);
      r.writeBigUInt64BE(1n << 20n);
      r.writeUInt16BE(DEFAULT_FLAGS, 8);
      conn.send(r);
      return true;
    },
  });
  const c = await NbdClient.connect(s.uri, FAST);
  assert.deepEqual(seen, [nbd.NBD_OPT_EXPORT_NAME]);
  assert.equal(c.info.size, 1 << 20);
  assert.ok(!c.info.usedGo && !c.info.structuredReplies);
  s.disk.set([5, 6], 512);
  const buf = new Uint8Array(1024);
  await read(c, 0, buf);
  assert.deepEqual([...buf.subarray(512, 514)], [5, 6]);
  await c.close();
});

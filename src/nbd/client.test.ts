// The NBD client against a fake server that misbehaves on purpose: every bad
// handshake and every bad reply gives its documented error, never a crash or
// a hang; a broken connection is replaced and later requests succeed.
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import fc from "fast-check";
import { ErrorCode, isVirtioError, type ErrorCodeValue } from "../errors.ts";
import * as nbd from "../spec/nbd.ts";
import { NbdClient } from "./client.ts";
import {
  DEFAULT_FLAGS,
  FAST,
  FakeNbdServer,
  recorder,
  rejectsWith,
  scripted,
  serveCorrectly,
  type FakeBehaviour,
  type FakeConn,
} from "./fake-server-test-support.ts";
import { dataChunk, errorChunk, infoExport, optionReply, simpleReply } from "./test-support.ts";

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

test("requests the caller got wrong are refused before anything is sent", async () => {
  const s = await server();
  const c = await NbdClient.connect(s.uri, FAST);
  const W = nbd.NBD_CMD_WRITE;
  await assert.rejects(
    c.request(W, 0, 0, 512, { write: [new Uint8Array(500)] }),
    /NBD_CMD_WRITE of 512 bytes with 500/,
  );
  await assert.rejects(
    c.request(nbd.NBD_CMD_READ, 0, 0, 512, { read: [new Uint8Array(8)] }),
    /into 8 bytes/,
  );
  await assert.rejects(c.request(W, 0, 0, 2 ** 32, { write: [] }), RangeError);
  await assert.rejects(c.request(nbd.NBD_CMD_FLUSH, 0, -1, 0), /bad request fields/);
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(s.requests.length, 0);
  await read(c, 0, new Uint8Array(512)); // the connection is still in step
  await c.close();
});

test("property: any bytes as a reply close at most that connection; the others keep serving", async () => {
  const garbage = { bytes: Buffer.alloc(0) };
  const marker = 8192;
  const s = await server({
    flags: DEFAULT_FLAGS | nbd.NBD_FLAG_CAN_MULTI_CONN,
    onRequest: (req, conn, srv) => {
      if (req.type === nbd.NBD_CMD_READ && req.offset === marker) conn.send(garbage.bytes);
      else serveCorrectly(req, conn, srv);
    },
  });
  const c = await NbdClient.connect(s.uri, { ...FAST, connections: 2, requestTimeoutMs: 100 });
  const allowed = new Set<string>([
    ErrorCode.NBD_PROTOCOL,
    ErrorCode.NBD_TIMEOUT,
    ErrorCode.NBD_REQUEST,
  ]);
  await fc.assert(
    fc.asyncProperty(
      fc.uint8Array({ maxLength: 64 }),
      fc.boolean(),
      async (bytes, asReplyHeader) => {
        while (c.connected < 2) await new Promise((r) => setTimeout(r, 5));
        // Half the runs start with a well-formed header for some cookie, then arbitrary bytes.
        garbage.bytes = asReplyHeader
          ? Buffer.concat([dataChunk(1, marker, Buffer.alloc(0)).subarray(0, 8), bytes])
          : Buffer.from(bytes);
        const r = await read(c, marker, new Uint8Array(512)).then(
          () => "ok",
          (e: unknown) => (isVirtioError(e) ? e.code : String(e)),
        );
        assert.ok(r === "ok" || allowed.has(r), r);
        assert.ok(c.connected >= 1, "the other connection stayed up");
        await read(c, 0, new Uint8Array(512));
      },
    ),
    { numRuns: 30 },
  );
  await c.close();
});

test("an export that comes back with another size is refused; the client keeps trying", async () => {
  const s = await server({ size: 1 << 20 });
  const log = recorder();
  const c = await NbdClient.connect(s.uri, { ...FAST, requestTimeoutMs: 300, logger: log });
  const G = nbd.NBD_OPT_GO;
  s.behaviour = scripted((o) =>
    o === G
      ? [
          optionReply(G, nbd.NBD_REP_INFO, infoExport(2 << 20, DEFAULT_FLAGS)),
          optionReply(G, nbd.NBD_REP_ACK),
        ]
      : [optionReply(o, nbd.NBD_REP_ACK)],
  );
  s.dropAll();
  while (c.connected > 0) await new Promise((r) => setTimeout(r, 5));
  await rejectsWith(read(c, 0, new Uint8Array(512)), ErrorCode.NBD_DISCONNECTED, /no connection/);
  await c.close();
  assert.ok(
    log.lines.some((l) =>
      /reconnect failed .*the export is now 2097152 bytes, was 1048576/.test(l),
    ),
    log.lines.join("\n"),
  );
});

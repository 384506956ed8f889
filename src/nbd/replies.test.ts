import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { ErrorCode, isVirtioError } from "../errors.ts";
import * as nbd from "../spec/nbd.ts";
import { ByteQueue, encodeRequest, readU64 } from "./codec.ts";
import { NbdReplyParser, type NbdPendingRequest, type NbdServerError } from "./replies.ts";
import { chunk, dataChunk, errorChunk, holeChunk, noneChunk, simpleReply } from "./test-support.ts";

/** A sink recording what the parser delivered, with the given requests in flight. */
function harness(pending: Record<number, NbdPendingRequest>, structured = true) {
  const inFlight = new Map(Object.entries(pending).map(([k, v]) => [Number(k), v]));
  const bufs = new Map([...inFlight].map(([k, v]) => [k, new Uint8Array(v.length).fill(0xee)]));
  const done = new Map<number, NbdServerError | undefined>();
  const parser = new NbdReplyParser(
    {
      lookup: (c) => inFlight.get(c),
      data: (c, at, b) => bufs.get(c)!.set(b, at),
      zero: (c, at, n) => {
        const b = bufs.get(c)!;
        if (at < 0 || at + n > b.length) throw new RangeError(`zero [${at}, +${n}) outside`);
        b.fill(0, at, at + n);
      },
      done: (c, e) => {
        inFlight.delete(c);
        done.set(c, e);
      },
    },
    { structured },
  );
  return { parser, bufs, done };
}

const read = (offset: number, length: number): NbdPendingRequest => ({
  type: nbd.NBD_CMD_READ,
  offset,
  length,
});
const write = (offset: number, length: number): NbdPendingRequest => ({
  type: nbd.NBD_CMD_WRITE,
  offset,
  length,
});

function assertProtocol(fn: () => void, match: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(isVirtioError(e, ErrorCode.NBD_PROTOCOL), String(e));
    assert.match(e.message, match);
    return true;
  });
}

describe("codec", () => {
  test("request header layout (proto.md Request message)", () => {
    const b = encodeRequest({
      flags: 1,
      type: 1,
      cookie: 2 ** 40 + 7,
      offset: 2 ** 33,
      length: 4096,
    });
    assert.equal(b.length, 28);
    assert.equal(b.readUInt32BE(0), 0x25609513);
    assert.equal(b.readUInt16BE(4), 1);
    assert.equal(b.readUInt16BE(6), 1);
    assert.equal(b.readBigUInt64BE(8), 2n ** 40n + 7n);
    assert.equal(b.readBigUInt64BE(16), 2n ** 33n);
    assert.equal(b.readUInt32BE(24), 4096);
  });

  test("readU64 maps values above 2^53 to Infinity", () => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(2n ** 53n);
    assert.equal(readU64(b, 0), Infinity);
    b.writeBigUInt64BE(2n ** 53n - 1n);
    assert.equal(readU64(b, 0), 2 ** 53 - 1);
  });

  test("ByteQueue takes across deliveries", () => {
    const q = new ByteQueue();
    q.push(Buffer.from([1, 2]));
    q.push(Buffer.from([3, 4, 5]));
    assert.deepEqual([...q.peek(3)], [1, 2, 3]);
    assert.deepEqual([...q.take(3)], [1, 2, 3]);
    assert.deepEqual([...q.takeUpTo(10)], [4, 5]);
    assert.equal(q.length, 0);
  });
});

describe("reply parser: good replies", () => {
  test("simple replies, out of order, read data split across deliveries", () => {
    const h = harness({ 1: read(0, 8), 2: write(0, 512) }, false);
    const bytes = Buffer.concat([simpleReply(2), simpleReply(1, 0, Buffer.from("abcdefgh"))]);
    for (const b of bytes) h.parser.feed(Buffer.from([b]));
    assert.deepEqual([...h.done.keys()], [2, 1]);
    assert.equal(Buffer.from(h.bufs.get(1)!).toString(), "abcdefgh");
  });

  test("simple error reply carries the error, a read gets no payload", () => {
    const h = harness({ 1: read(0, 8), 3: read(0, 4) }, false);
    h.parser.feed(
      Buffer.concat([simpleReply(1, nbd.NBD_EIO), simpleReply(3, 0, Buffer.from("wxyz"))]),
    );
    assert.equal(h.done.get(1)?.error, nbd.NBD_EIO);
    assert.equal(h.done.get(3), undefined);
    assert.ok(h.done.has(3));
  });

  test("unknown error values count as NBD_EINVAL", () => {
    const h = harness({ 1: write(0, 8) }, false);
    h.parser.feed(simpleReply(1, 9999));
    assert.deepEqual(h.done.get(1), { error: nbd.NBD_EINVAL, raw: 9999, message: "" });
  });

  test("structured read: data and hole chunks in any order, then NONE", () => {
    const h = harness({ 5: read(1000, 12) });
    h.parser.feed(dataChunk(5, 1008, Buffer.from("WXYZ")));
    h.parser.feed(holeChunk(5, 1004, 4));
    h.parser.feed(dataChunk(5, 1000, Buffer.from("abcd")));
    assert.equal(h.done.size, 0);
    h.parser.feed(noneChunk(5));
    assert.ok(h.done.has(5) && h.done.get(5) === undefined);
    assert.deepEqual(
      [...h.bufs.get(5)!],
      [...Buffer.from("abcd"), 0, 0, 0, 0, ...Buffer.from("WXYZ")],
    );
  });

  test("structured error chunk fails the request with its message", () => {
    const h = harness({ 5: read(0, 512), 6: write(0, 512) });
    h.parser.feed(errorChunk(5, nbd.NBD_EIO, "disk\nbroken"));
    h.parser.feed(simpleReply(6));
    assert.deepEqual(h.done.get(5), {
      error: nbd.NBD_EIO,
      raw: nbd.NBD_EIO,
      message: "disk?broken",
    });
    assert.equal(h.done.get(6), undefined);
  });

  test("an unknown error chunk type errors the reply and the stream goes on", () => {
    const h = harness({ 5: write(0, 512), 6: write(0, 512) });
    const p = Buffer.alloc(10);
    p.writeUInt32BE(nbd.NBD_ENOSPC, 0);
    h.parser.feed(chunk(5, 0x8000 + 77, nbd.NBD_REPLY_FLAG_DONE, p));
    h.parser.feed(simpleReply(6));
    assert.equal(h.done.get(5)?.error, nbd.NBD_ENOSPC);
    assert.ok(h.done.has(6));
  });
});

describe("reply parser: every malformed reply is NBD_PROTOCOL", () => {
  const cases: [string, Record<number, NbdPendingRequest>, boolean, Buffer, RegExp][] = [
    ["bad magic", { 1: read(0, 8) }, true, Buffer.from("HTTP/1.1 400 Bad"), /bad reply magic/],
    [
      "unknown cookie",
      { 1: write(0, 8) },
      false,
      simpleReply(2),
      /cookie 2, which is not in flight/,
    ],
    [
      "cookie above 2^53",
      { 1: write(0, 8) },
      false,
      (() => {
        const b = simpleReply(1);
        b.writeUInt32BE(0xffffffff, 8);
        return b;
      })(),
      /not in flight/,
    ],
    [
      "structured chunk without negotiation",
      { 1: write(0, 8) },
      false,
      noneChunk(1),
      /without NBD_OPT_STRUCTURED_REPLY/,
    ],
    [
      "simple reply to a read with structured replies",
      { 1: read(0, 8) },
      true,
      simpleReply(1),
      /simple reply to NBD_CMD_READ/,
    ],
    [
      "data chunk longer than the read",
      { 1: read(0, 8) },
      true,
      dataChunk(1, 0, Buffer.alloc(9)),
      /OFFSET_DATA length 17/,
    ],
    [
      "data chunk before the request",
      { 1: read(4096, 8) },
      true,
      dataChunk(1, 4095, Buffer.alloc(1)),
      /outside the request/,
    ],
    [
      "data chunk past the request",
      { 1: read(4096, 8) },
      true,
      dataChunk(1, 4100, Buffer.alloc(8)),
      /outside the request/,
    ],
    [
      "overlapping chunks",
      { 1: read(0, 8) },
      true,
      Buffer.concat([dataChunk(1, 0, Buffer.alloc(4)), holeChunk(1, 3, 2)]),
      /overlaps/,
    ],
    ["hole of size 0", { 1: read(0, 8) }, true, holeChunk(1, 0, 0), /size 0/],
    [
      "hole chunk of the wrong length",
      { 1: read(0, 8) },
      true,
      chunk(1, nbd.NBD_REPLY_TYPE_OFFSET_HOLE, 0, Buffer.alloc(16)),
      /length 16/,
    ],
    [
      "NONE with a payload",
      { 1: write(0, 8) },
      true,
      chunk(1, 0, 1, Buffer.alloc(4)),
      /NONE with length 4/,
    ],
    [
      "NONE without DONE",
      { 1: write(0, 8) },
      true,
      chunk(1, 0, 0, Buffer.alloc(0)),
      /without NBD_REPLY_FLAG_DONE/,
    ],
    [
      "read done before all data",
      { 1: read(0, 8) },
      true,
      Buffer.concat([dataChunk(1, 0, Buffer.alloc(4)), noneChunk(1)]),
      /after 4 of 8 bytes/,
    ],
    [
      "content chunk for a write",
      { 1: write(0, 8) },
      true,
      dataChunk(1, 0, Buffer.alloc(4), true),
      /chunk type 1 for NBD_CMD_WRITE/,
    ],
    [
      "unknown non-error chunk type",
      { 1: read(0, 8) },
      true,
      chunk(1, 42, 1, Buffer.alloc(0)),
      /unknown chunk type 42/,
    ],
    [
      "block status never asked for",
      { 1: read(0, 8) },
      true,
      chunk(1, nbd.NBD_REPLY_TYPE_BLOCK_STATUS, 1, Buffer.alloc(12)),
      /unknown chunk type 5/,
    ],
    ["error chunk with error 0", { 1: write(0, 8) }, true, errorChunk(1, 0), /error value 0/],
    [
      "error message longer than the chunk",
      { 1: write(0, 8) },
      true,
      (() => {
        const b = errorChunk(1, 5, "ab");
        b.writeUInt16BE(50, 24);
        return b;
      })(),
      /message of 50 bytes/,
    ],
    [
      "error chunk too short",
      { 1: write(0, 8) },
      true,
      chunk(1, nbd.NBD_REPLY_TYPE_ERROR, 1, Buffer.alloc(3)),
      /length 3/,
    ],
    [
      "error chunk too long",
      { 1: write(0, 8) },
      true,
      chunk(1, nbd.NBD_REPLY_TYPE_ERROR, 1, Buffer.alloc(5000)),
      /length 5000/,
    ],
    [
      "error offset outside the request",
      { 1: read(512, 512) },
      true,
      (() => {
        const p = Buffer.alloc(14);
        p.writeUInt32BE(5, 0);
        p.writeBigUInt64BE(0n, 6);
        return chunk(1, nbd.NBD_REPLY_TYPE_ERROR_OFFSET, 1, p);
      })(),
      /ERROR_OFFSET at 0, outside/,
    ],
  ];
  for (const [name, pending, structured, bytes, match] of cases) {
    test(name, () => {
      const h = harness(pending, structured);
      assertProtocol(() => h.parser.feed(bytes), match);
      // A failed parser stays failed: the connection is closed, nothing more is parsed.
      assertProtocol(() => h.parser.feed(simpleReply(1)), match);
    });
  }

  test("too many chunks for one reply", () => {
    const h = harness({ 1: read(0, 1 << 20) });
    const hole = (i: number) => holeChunk(1, i, 1);
    assertProtocol(() => {
      for (let i = 0; i <= 1 << 16; i++) h.parser.feed(hole(i * 2));
    }, /more than 65536 chunks/);
  });
});

describe("reply parser: properties", () => {
  test("arbitrary bytes: only NBD_PROTOCOL is thrown, parsing always terminates", () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 96 }), { maxLength: 8 }),
        fc.boolean(),
        (parts, structured) => {
          const h = harness({ 1: read(0, 16), 2: write(0, 16), 3: read(512, 4) }, structured);
          try {
            for (const p of parts) h.parser.feed(p);
          } catch (e) {
            assert.ok(isVirtioError(e, ErrorCode.NBD_PROTOCOL), String(e));
          }
        },
      ),
      { numRuns: 2000 },
    );
  });

  test("valid replies with mutated bytes: only NBD_PROTOCOL, never data outside a request buffer", () => {
    const valid = Buffer.concat([
      dataChunk(1, 0, Buffer.alloc(8, 1)),
      holeChunk(1, 8, 8),
      noneChunk(1),
      simpleReply(2),
      errorChunk(3, nbd.NBD_EIO, "x"),
    ]);
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(valid.length - 1), fc.integer({ min: 0, max: 255 })), {
          maxLength: 4,
        }),
        fc.nat(valid.length),
        (flips, cut) => {
          const bytes = Buffer.from(valid);
          for (const [at, v] of flips) bytes[at] = v;
          const h = harness({ 1: read(0, 16), 2: write(0, 16), 3: read(512, 4) });
          try {
            h.parser.feed(bytes.subarray(0, cut));
            h.parser.feed(bytes.subarray(cut));
          } catch (e) {
            assert.ok(isVirtioError(e, ErrorCode.NBD_PROTOCOL), String(e));
          }
          // The harness buffers are typed arrays of the request's length: a write outside
          // them would have thrown a RangeError above, which the assertion rejects.
        },
      ),
      { numRuns: 2000 },
    );
  });
});

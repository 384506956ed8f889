import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { ErrorCode, isVirtioError } from "../errors.ts";
import { VhostUserRequest as R } from "../spec/vhost-user.ts";
import {
  encodeConfig,
  encodeHeader,
  encodeMemoryTable,
  encodeMessage,
  encodeSingleMemRegion,
  encodeU64,
  encodeVringAddr,
  encodeVringFile,
  encodeVringState,
} from "./codec.ts";
import { FakeFds } from "./fakes.ts";
import { MessageReader, VHOST_USER_MAX_PAYLOAD, type VhostUserMessage } from "./framing.ts";

interface WireMessage {
  readonly request: number;
  readonly flags: number;
  readonly payload: Uint8Array;
  readonly fdCount: number;
}

const region = (i: number) => ({
  guestPhysAddr: BigInt(i) << 32n,
  memorySize: 0x1000n,
  userspaceAddr: 0x7f00_0000_0000n + (BigInt(i) << 32n),
  mmapOffset: 0n,
});

/** Valid messages of every payload and fd shape. */
const validMessage: fc.Arbitrary<WireMessage> = fc
  .tuple(
    fc.constantFrom(0x1, 0x9),
    fc.oneof(
      fc.constant({ request: R.GET_FEATURES, payload: new Uint8Array(0), fdCount: 0 }),
      fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }).map((v) => ({
        request: R.SET_FEATURES,
        payload: encodeU64(v),
        fdCount: 0,
      })),
      fc
        .tuple(
          fc.constantFrom(R.SET_VRING_KICK, R.SET_VRING_CALL, R.SET_VRING_ERR),
          fc.nat(255),
          fc.boolean(),
        )
        .map(([request, index, noFd]) => ({
          request,
          payload: encodeVringFile({ index, noFd }),
          fdCount: noFd ? 0 : 1,
        })),
      fc.integer({ min: 1, max: 8 }).map((n) => ({
        request: R.SET_MEM_TABLE,
        payload: encodeMemoryTable(Array.from({ length: n }, (_, i) => region(i))),
        fdCount: n,
      })),
      fc.uint8Array({ maxLength: 256 }).map((data) => ({
        request: R.GET_CONFIG,
        payload: encodeConfig({ offset: 0, flags: 0, data }),
        fdCount: 0,
      })),
      fc.constant({
        request: R.ADD_MEM_REG,
        payload: encodeSingleMemRegion(region(1)),
        fdCount: 1,
      }),
      fc.constant({
        request: R.REM_MEM_REG,
        payload: encodeSingleMemRegion(region(1)),
        fdCount: 0,
      }),
      fc.constant({
        request: R.SET_VRING_ADDR,
        payload: encodeVringAddr({ index: 0, flags: 0, desc: 1n, used: 2n, avail: 3n, log: 4n }),
        fdCount: 0,
      }),
      fc.constant({
        request: R.GET_VRING_BASE,
        payload: encodeVringState({ index: 1, num: 0 }),
        fdCount: 0,
      }),
    ),
  )
  .map(([flags, m]) => ({ ...m, flags }));

interface Stream {
  readonly bytes: Uint8Array;
  /** Start and end offset of each message. */
  readonly spans: readonly [number, number][];
}

function buildStream(msgs: readonly WireMessage[]): Stream {
  const parts = msgs.map((m) => encodeMessage(m.request, m.flags, m.payload));
  const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  const spans: [number, number][] = [];
  let off = 0;
  for (const p of parts) {
    bytes.set(p, off);
    spans.push([off, off + p.length]);
    off += p.length;
  }
  return { bytes, spans };
}

/**
 * Delivers `msgs` cut at `cuts`, plus a cut at the end of every fd-carrying
 * message (the kernel never joins data after an SCM_RIGHTS write into one
 * read). Each message's fds ride on the fragment holding its first byte.
 */
function deliver(
  reader: MessageReader,
  msgs: readonly WireMessage[],
  fdsOf: readonly number[][],
  cuts: Iterable<number>,
): VhostUserMessage[] {
  const { bytes, spans } = buildStream(msgs);
  const points = new Set<number>([...cuts].filter((c) => c > 0 && c < bytes.length));
  spans.forEach(([, end], i) => {
    if (fdsOf[i]!.length > 0 && end < bytes.length) points.add(end);
  });
  const sorted = [0, ...[...points].sort((a, b) => a - b), bytes.length];
  const out: VhostUserMessage[] = [];
  for (let k = 0; k + 1 < sorted.length; k++) {
    const [from, to] = [sorted[k]!, sorted[k + 1]!];
    const fds = spans.flatMap(([s], i) => (s >= from && s < to ? fdsOf[i]! : []));
    out.push(...reader.push(bytes.subarray(from, to), fds));
  }
  return out;
}

function checkDelivery(msgs: readonly WireMessage[], cuts: Iterable<number>): void {
  const fds = new FakeFds();
  const fdsOf = msgs.map((m) => Array.from({ length: m.fdCount }, () => fds.other()));
  const reader = new MessageReader((fd) => fds.close(fd));
  const got = deliver(reader, msgs, fdsOf, cuts);
  assert.equal(got.length, msgs.length);
  got.forEach((g, i) => {
    const m = msgs[i]!;
    assert.equal(g.request, m.request);
    assert.equal(g.flags, m.flags);
    assert.deepEqual([...g.payload], [...m.payload]);
    assert.deepEqual(g.fds, fdsOf[i]);
  });
  assert.equal(reader.hasPartialMessage, false);
  assert.deepEqual(fds.closed, [], "the reader closes nothing it hands out");
}

describe("framing: arbitrary fragmentation", () => {
  test("random splits and coalescing yield the same messages and fds", () => {
    fc.assert(
      fc.property(
        fc.array(validMessage, { minLength: 1, maxLength: 12 }),
        fc.array(fc.nat(4000), { maxLength: 40 }),
        (msgs, cuts) => checkDelivery(msgs, cuts),
      ),
      { numRuns: 300 },
    );
  });

  test("one byte at a time", () => {
    fc.assert(
      fc.property(fc.array(validMessage, { minLength: 1, maxLength: 6 }), (msgs) => {
        const n = buildStream(msgs).bytes.length;
        checkDelivery(
          msgs,
          Array.from({ length: n }, (_, i) => i),
        );
      }),
      { numRuns: 50 },
    );
  });

  test("a single cut at every position of a mixed stream", () => {
    const msgs: WireMessage[] = [
      { request: R.GET_FEATURES, flags: 1, payload: new Uint8Array(0), fdCount: 0 },
      {
        request: R.SET_MEM_TABLE,
        flags: 9,
        payload: encodeMemoryTable([region(0), region(1)]),
        fdCount: 2,
      },
      {
        request: R.SET_VRING_CALL,
        flags: 1,
        payload: encodeVringFile({ index: 1, noFd: false }),
        fdCount: 1,
      },
      { request: R.SET_FEATURES, flags: 1, payload: encodeU64(5n), fdCount: 0 },
    ];
    const n = buildStream(msgs).bytes.length;
    for (let c = 0; c <= n; c++) checkDelivery(msgs, [c]);
  });

  test("fds received in the middle of a message belong to it", () => {
    const fds = new FakeFds();
    const reader = new MessageReader((fd) => fds.close(fd));
    const bytes = encodeMessage(R.ADD_MEM_REG, 1, encodeSingleMemRegion(region(0)));
    const fd = fds.memfd(16);
    assert.deepEqual(reader.push(bytes.subarray(0, 20)), []);
    const [m] = reader.push(bytes.subarray(20), [fd]);
    assert.deepEqual(m!.fds, [fd]);
  });

  test("dispose closes the fds of a partial message", () => {
    const fds = new FakeFds();
    const reader = new MessageReader((fd) => fds.close(fd));
    const bytes = encodeMessage(R.SET_VRING_KICK, 1, encodeVringFile({ index: 0, noFd: false }));
    const fd = fds.eventfd();
    reader.push(bytes.subarray(0, 5), [fd]);
    reader.dispose();
    assert.equal(fds.isOpen(fd), false);
    assert.equal(reader.dead, true);
    assert.deepEqual(fds.misuse, []);
  });
});

/** A malformed case: bytes plus how many fds ride on them. */
interface BadCase {
  readonly name: string;
  readonly bytes: Uint8Array;
  readonly fds: number;
  readonly match: RegExp;
}

const hdr = (request: number, flags: number, size: number) =>
  encodeHeader({ request, flags, size });
const cat = (...parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
};
const kick = (index: number, noFd = false) => encodeVringFile({ index, noFd });
const memTable2 = encodeMemoryTable([region(0), region(1)]);
const memTableLying = memTable2.slice();
new DataView(memTableLying.buffer).setUint32(0, 1, true);
const configLying = encodeConfig({ offset: 0, flags: 0, data: new Uint8Array(8) });
new DataView(configLying.buffer).setUint32(4, 4, true);

const badCases: BadCase[] = [
  { name: "unknown request id", bytes: hdr(99, 1, 0), fds: 0, match: /request 99: unknown/ },
  { name: "request id 0", bytes: hdr(0, 1, 0), fds: 0, match: /unknown/ },
  {
    name: "known but unsupported request (SET_LOG_BASE)",
    bytes: cat(hdr(R.SET_LOG_BASE, 1, 16), new Uint8Array(16)),
    fds: 1,
    match: /VHOST_USER_SET_LOG_BASE: unknown or unsupported/,
  },
  { name: "version bits 0", bytes: hdr(R.GET_FEATURES, 0, 0), fds: 0, match: /version bits 0/ },
  { name: "version bits 2", bytes: hdr(R.GET_FEATURES, 2, 0), fds: 0, match: /version bits 2/ },
  { name: "version bits 3", bytes: hdr(R.GET_FEATURES, 3, 0), fds: 0, match: /version bits 3/ },
  { name: "REPLY set on a request", bytes: hdr(R.GET_FEATURES, 5, 0), fds: 0, match: /REPLY flag/ },
  {
    name: "undefined flag bit",
    bytes: hdr(R.GET_FEATURES, 0x11, 0),
    fds: 0,
    match: /undefined flag/,
  },
  {
    name: "payload above the cap (refused from the header alone)",
    bytes: hdr(R.SET_FEATURES, 1, VHOST_USER_MAX_PAYLOAD + 1),
    fds: 0,
    match: /exceeds 4096/,
  },
  {
    name: "GET_FEATURES with a payload",
    bytes: cat(hdr(R.GET_FEATURES, 1, 8), new Uint8Array(8)),
    fds: 0,
    match: /GET_FEATURES: payload of 8 bytes, expected 0/,
  },
  {
    name: "SET_FEATURES with 4 bytes",
    bytes: cat(hdr(R.SET_FEATURES, 1, 4), new Uint8Array(4)),
    fds: 0,
    match: /expected 8/,
  },
  {
    name: "SET_VRING_ADDR with 32 bytes",
    bytes: cat(hdr(R.SET_VRING_ADDR, 1, 32), new Uint8Array(32)),
    fds: 0,
    match: /expected 40/,
  },
  {
    name: "SET_MEM_TABLE with 0 regions",
    bytes: cat(hdr(R.SET_MEM_TABLE, 1, 8), new Uint8Array(8)),
    fds: 0,
    match: /SET_MEM_TABLE: payload of 8 bytes/,
  },
  {
    name: "SET_MEM_TABLE with 9 regions",
    bytes: cat(hdr(R.SET_MEM_TABLE, 1, 8 + 9 * 32), new Uint8Array(8 + 9 * 32)),
    fds: 0,
    match: /payload of 296 bytes/,
  },
  {
    name: "SET_MEM_TABLE whose num regions disagrees with its size",
    bytes: encodeMessage(R.SET_MEM_TABLE, 1, memTableLying),
    fds: 1,
    match: /num regions 1 does not match/,
  },
  {
    name: "GET_CONFIG above 256 bytes",
    bytes: cat(hdr(R.GET_CONFIG, 1, 12 + 257), new Uint8Array(12 + 257)),
    fds: 0,
    match: /GET_CONFIG: payload of 269 bytes/,
  },
  {
    name: "GET_CONFIG whose size disagrees with the payload",
    bytes: encodeMessage(R.GET_CONFIG, 1, configLying),
    fds: 0,
    match: /config size 4 does not match/,
  },
  {
    name: "SET_VRING_KICK without fd",
    bytes: encodeMessage(R.SET_VRING_KICK, 1, kick(0)),
    fds: 0,
    match: /0 fds, expected 1/,
  },
  {
    name: "SET_VRING_CALL with 2 fds",
    bytes: encodeMessage(R.SET_VRING_CALL, 1, kick(0)),
    fds: 2,
    match: /2 fds, expected 1/,
  },
  {
    name: "SET_VRING_ERR with the NOFD bit and an fd",
    bytes: encodeMessage(R.SET_VRING_ERR, 1, kick(0, true)),
    fds: 1,
    match: /1 fds, expected 0/,
  },
  {
    name: "SET_FEATURES with an fd",
    bytes: encodeMessage(R.SET_FEATURES, 1, encodeU64(0n)),
    fds: 1,
    match: /1 fds, expected 0/,
  },
  {
    name: "ADD_MEM_REG without fd",
    bytes: encodeMessage(R.ADD_MEM_REG, 1, encodeSingleMemRegion(region(0))),
    fds: 0,
    match: /0 fds, expected 1/,
  },
  {
    name: "REM_MEM_REG with 2 fds",
    bytes: encodeMessage(R.REM_MEM_REG, 1, encodeSingleMemRegion(region(0))),
    fds: 2,
    match: /2 fds, expected 0 or 1/,
  },
  {
    name: "SET_MEM_TABLE with 2 regions and 1 fd",
    bytes: encodeMessage(R.SET_MEM_TABLE, 1, memTable2),
    fds: 1,
    match: /1 fds, expected 2/,
  },
  {
    name: "more than 8 fds",
    bytes: encodeMessage(R.SET_MEM_TABLE, 1, memTable2),
    fds: 9,
    match: /9 fds for one message/,
  },
];

describe("framing: malformed input is a protocol error that releases every fd", () => {
  for (const c of badCases) {
    test(c.name, () => {
      const fds = new FakeFds();
      const reader = new MessageReader((fd) => fds.close(fd));
      // A valid fd-carrying message completes in the same fragment first: its fds must be released too.
      const good = encodeMessage(R.SET_VRING_CALL, 1, kick(1));
      const goodFd = fds.eventfd("good");
      const first = reader.push(good.subarray(0, 4), [goodFd]);
      assert.deepEqual(first, []);
      const badFds = Array.from({ length: c.fds }, () => fds.other("bad"));
      assert.throws(
        () => reader.push(cat(good.subarray(4), c.bytes), badFds),
        (e: unknown) => isVirtioError(e, ErrorCode.VHOST_USER_PROTOCOL) && c.match.test(e.message),
      );
      assert.deepEqual(fds.openFds(), [], "every fd was closed");
      assert.deepEqual(fds.misuse, []);
      assert.equal(reader.dead, true);
      const late = fds.eventfd("late");
      assert.throws(() => reader.push(new Uint8Array(1), [late]));
      assert.equal(fds.isOpen(late), false, "a dead reader closes fds pushed to it");
    });
  }

  test("fds without data", () => {
    const fds = new FakeFds();
    const reader = new MessageReader((fd) => fds.close(fd));
    const fd = fds.eventfd();
    assert.throws(() => reader.push(new Uint8Array(0), [fd]), /without data/);
    assert.equal(fds.isOpen(fd), false);
  });

  test("an oversized header is refused before its payload arrives", () => {
    const fds = new FakeFds();
    const reader = new MessageReader((fd) => fds.close(fd));
    assert.throws(() => reader.push(hdr(R.GET_CONFIG, 1, 0xffff_ffff)), /exceeds/);
  });
});

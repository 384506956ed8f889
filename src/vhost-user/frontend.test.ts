/**
 * The front-end against a scripted back-end over a real socketpair: the
 * negotiation order, what each request looks like on the wire (parsed by the
 * back-end's own strict reader), rings and eventfds, and strict reply
 * validation — every malformed reply closes the connection with
 * VIRTIO_ERR_VHOST_USER_PROTOCOL, rejects what was pending and leaks no fd.
 */
import assert from "node:assert/strict";
import { describe, test, type TestContext } from "node:test";
import { setImmediate as tick } from "node:timers/promises";
import { ErrorCode, VirtioError, isVirtioError } from "../errors.ts";
import { close, eventfd, ftruncate, memfdCreate, socketPair, watchCount } from "../native/index.ts";
import { fdSnapshot, fdsOpenedSince, within } from "../native/test-support.ts";
import { VhostUserRequest as R } from "../spec/vhost-user.ts";
import {
  decodeConfig,
  decodeInflight,
  decodeMemoryTable,
  decodeSingleMemRegion,
  decodeU64,
  decodeVringAddr,
  decodeVringFile,
  decodeVringState,
  encodeConfig,
  encodeInflight,
  encodeMessage,
  encodeReply,
  encodeU64,
  encodeVringState,
  type InflightDescription,
} from "./codec.ts";
import { VhostUserFrontend, type VhostUserFrontendOptions } from "./frontend.ts";
import { SharedGuestMemory } from "./frontend-memory.ts";
import { FakeBackend, type FakeBackendOptions } from "./frontend-test-support.ts";
import { NativeSocket } from "./native-host.ts";

const VERSION_1 = 1n << 32n;
const PROTOCOL_FEATURES = 1n << 30n;
const FLUSH = 1n << 9n;
const RING_PACKED = 1n << 34n;
const MQ = 1n;
const REPLY_ACK = 1n << 3n;
const CONFIG = 1n << 9n;
const CONFIGURE_MEM_SLOTS = 1n << 15n;
const NEED_REPLY = 0x8;
const EMPTY = new Uint8Array(0);

const WAIT_MS = 10_000;

/** Waits (bounded) until `cond` holds. */
async function until(what: string, cond: () => boolean): Promise<void> {
  for (let i = 0; i < 20_000; i++) {
    if (cond()) return;
    await tick();
  }
  assert.fail(`timed out waiting: ${what}`);
}

interface Pair {
  backend: FakeBackend;
  /** Runs `fn` at the end of the test, before the leak check. */
  defer(fn: () => void): void;
  connect(options?: Partial<VhostUserFrontendOptions>): Promise<VhostUserFrontend>;
}

/**
 * A socketpair with the fake on one end; the front-end opens the other.
 * Checks at the end of the test that no fd or watch is left behind.
 */
function pair(t: TestContext, options: FakeBackendOptions = {}): Pair {
  const fdsBefore = fdSnapshot();
  const watchesBefore = watchCount();
  const [feFd, beFd] = socketPair();
  const backend = new FakeBackend(beFd, options);
  let fe: VhostUserFrontend | undefined;
  let opened = false;
  const deferred: (() => void)[] = [];
  t.after(async () => {
    if (fe !== undefined) await within(fe.close(), WAIT_MS, "front-end close");
    else if (!opened) new NativeSocket(feFd).close();
    backend.close();
    deferred.forEach((fn) => fn());
    assert.deepEqual(fdsOpenedSince(fdsBefore), [], "fds leaked");
    assert.equal(watchCount(), watchesBefore, "watches leaked");
  });
  return {
    backend,
    defer: (fn) => deferred.push(fn),
    async connect(o = {}) {
      opened = true;
      fe = await VhostUserFrontend.open(new NativeSocket(feFd), {
        features: VERSION_1 | FLUSH,
        replyTimeoutMs: WAIT_MS,
        ...o,
      });
      return fe;
    },
  };
}

/** Connects and expects a rejection with `code`; returns the error. */
async function connectFails(p: Pair, code: string, o: Partial<VhostUserFrontendOptions> = {}) {
  const err = await within(
    p.connect(o).then(
      () => assert.fail("connect should have failed"),
      (e: unknown) => e,
    ),
    WAIT_MS,
    "connect",
  );
  assert.ok(err instanceof VirtioError, `expected a VirtioError, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  // The connection is closed: the fake sees end of file.
  await until("the back-end to see EOF", () => p.backend.ended);
  return err;
}

describe("VhostUserFrontend negotiation", { timeout: 30_000 }, () => {
  test("libblkio's order; NEED_REPLY on every request without a reply body after SET_PROTOCOL_FEATURES", async (t) => {
    const config = Uint8Array.from({ length: 60 }, (_, i) => 255 - i);
    const p = pair(t, {
      features: VERSION_1 | PROTOCOL_FEATURES | FLUSH | (1n << 13n) | (1n << 2n),
      protocolFeatures: 0x8f2bn,
      queueNum: 4n,
      maxMemSlots: 509n,
      config,
    });
    const fe = await p.connect({ configSize: 57 });
    assert.deepEqual(p.backend.requests, [
      R.SET_OWNER,
      R.GET_FEATURES,
      R.SET_FEATURES,
      R.GET_PROTOCOL_FEATURES,
      R.SET_PROTOCOL_FEATURES,
      R.GET_QUEUE_NUM,
      R.GET_MAX_MEM_SLOTS,
      R.GET_CONFIG,
    ]);
    assert.deepEqual(
      p.backend.received.map((m) => m.flags),
      [0x1, 0x1, 0x1, 0x1, 0x1, 0x1, 0x1, 0x1],
    );
    // Offered ∩ wanted, plus bit 30.
    assert.equal(decodeU64(p.backend.received[2]!.payload), VERSION_1 | PROTOCOL_FEATURES | FLUSH);
    assert.equal(fe.features, VERSION_1 | PROTOCOL_FEATURES | FLUSH);
    // 0x8f2b ∩ {MQ, REPLY_ACK, CONFIG, CONFIGURE_MEM_SLOTS} = 0x8209.
    assert.equal(decodeU64(p.backend.received[4]!.payload), 0x8209n);
    assert.equal(fe.protocolFeatures, 0x8209n);
    assert.equal(fe.maxQueues, 4);
    assert.equal(fe.maxMemSlots, 509);
    assert.deepEqual(fe.config, config.subarray(0, 57));

    // After the handshake requests without a reply body carry NEED_REPLY.
    const mem = SharedGuestMemory.create({ size: 64 * 1024 });
    p.defer(() => mem.close());
    await fe.addMemory(mem);
    const add = p.backend.received.at(-1)!;
    assert.equal(add.request, R.ADD_MEM_REG);
    assert.equal(add.flags, 0x1 | NEED_REPLY);
    assert.equal(add.fdCount, 1);
    assert.deepEqual(decodeSingleMemRegion(add.payload), mem.region);
    assert.equal(p.backend.memFds.length, 1);
    // A request with a reply body is sent without NEED_REPLY (it gets "only that reply").
    assert.deepEqual(await fe.getConfig(4, 8), config.subarray(4, 12));
    assert.equal(p.backend.received.at(-1)!.flags, 0x1);
  });

  test("without MQ and CONFIGURE_MEM_SLOTS: one queue, 8 slots, SET_MEM_TABLE with every region", async (t) => {
    const p = pair(t, { protocolFeatures: REPLY_ACK | CONFIG });
    const fe = await p.connect();
    // SET_PROTOCOL_FEATURES has no reply: connect() resolves once it is sent.
    await until("SET_PROTOCOL_FEATURES received", () => p.backend.received.length === 5);
    assert.deepEqual(p.backend.requests, [
      R.SET_OWNER,
      R.GET_FEATURES,
      R.SET_FEATURES,
      R.GET_PROTOCOL_FEATURES,
      R.SET_PROTOCOL_FEATURES,
    ]);
    assert.equal(fe.maxQueues, 1);
    assert.equal(fe.maxMemSlots, 8);
    assert.equal(fe.config.byteLength, 0);
    const a = SharedGuestMemory.create({ size: 8192, guestPhysAddr: 0x10_0000 });
    const b = SharedGuestMemory.create({ size: 8192, guestPhysAddr: 0x20_0000 });
    p.defer(() => {
      a.close();
      b.close();
    });
    await fe.addMemory(a);
    await fe.addMemory(b);
    const [first, second] = p.backend.received.slice(-2);
    assert.equal(first!.request, R.SET_MEM_TABLE);
    assert.equal(first!.fdCount, 1);
    assert.deepEqual(decodeMemoryTable(first!.payload), [a.region]);
    assert.equal(second!.fdCount, 2);
    assert.deepEqual(decodeMemoryTable(second!.payload), [a.region, b.region]);
    await fe.removeMemory(a);
    assert.deepEqual(decodeMemoryTable(p.backend.received.at(-1)!.payload), [b.region]);
    await assert.rejects(fe.removeMemory(b), RangeError);
    await assert.rejects(
      fe.startRing(1, { size: 8, descAddr: 0, availAddr: 0, usedAddr: 0, onCall() {} }),
      RangeError,
    );
  });

  test("REM_MEM_REG with CONFIGURE_MEM_SLOTS; at most maxMemSlots regions", async (t) => {
    const p = pair(t, { maxMemSlots: 1n });
    const fe = await p.connect();
    const a = SharedGuestMemory.create({ size: 4096 });
    const b = SharedGuestMemory.create({ size: 4096, guestPhysAddr: 0x8000_0000 });
    p.defer(() => {
      a.close();
      b.close();
    });
    await fe.addMemory(a);
    await assert.rejects(fe.addMemory(b), RangeError);
    await fe.removeMemory(a);
    const rem = p.backend.received.at(-1)!;
    assert.equal(rem.request, R.REM_MEM_REG);
    assert.equal(rem.fdCount, 0);
    assert.deepEqual(decodeSingleMemRegion(rem.payload), a.region);
    await fe.addMemory(b);
  });

  test("a feature selector sees the offered bits", async (t) => {
    const offered = VERSION_1 | PROTOCOL_FEATURES | FLUSH | (1n << 28n);
    const p = pair(t, { features: offered });
    let seen = 0n;
    const fe = await p.connect({
      features: (o) => {
        seen = o;
        return (1n << 28n) | (1n << 40n);
      },
    });
    assert.equal(seen, offered);
    assert.equal(fe.features, (1n << 28n) | PROTOCOL_FEATURES);
  });

  test("a feature selector that throws refuses the device: the connection closes", async (t) => {
    const q = pair(t);
    const refusal = new VirtioError(ErrorCode.FEATURES_REFUSED, "no thanks");
    const err = await q
      .connect({
        features: () => {
          throw refusal;
        },
      })
      .catch((e: unknown) => e);
    assert.equal(err, refusal);
    await until("EOF", () => q.backend.ended);
    assert.deepEqual(q.backend.requests, [R.SET_OWNER, R.GET_FEATURES]);
  });

  test("a back-end without VHOST_USER_F_PROTOCOL_FEATURES is incompatible", async (t) => {
    const p = pair(t, { features: VERSION_1 | FLUSH });
    const err = await connectFails(p, ErrorCode.VHOST_USER_INCOMPATIBLE);
    assert.match(err.message, /bit 30/);
    assert.deepEqual(p.backend.requests, [R.SET_OWNER, R.GET_FEATURES]);
  });

  for (const [name, proto] of [
    ["REPLY_ACK", MQ | CONFIG | CONFIGURE_MEM_SLOTS],
    ["CONFIG", MQ | REPLY_ACK | CONFIGURE_MEM_SLOTS],
  ] as const) {
    test(`a back-end without ${name} is incompatible`, async (t) => {
      const p = pair(t, { protocolFeatures: proto });
      await connectFails(p, ErrorCode.VHOST_USER_INCOMPATIBLE);
      assert.equal(p.backend.requests.at(-1), R.GET_PROTOCOL_FEATURES);
    });
  }

  test("GET_QUEUE_NUM 0 is incompatible", async (t) => {
    await connectFails(pair(t, { queueNum: 0n }), ErrorCode.VHOST_USER_INCOMPATIBLE);
  });

  test("GET_MAX_MEM_SLOTS 0 is incompatible", async (t) => {
    await connectFails(pair(t, { maxMemSlots: 0n }), ErrorCode.VHOST_USER_INCOMPATIBLE);
  });

  test("API misuse throws at once", async (t) => {
    await assert.rejects(
      VhostUserFrontend.connect("/nonexistent", { features: 1 as unknown as bigint }),
      TypeError,
    );
    await assert.rejects(
      VhostUserFrontend.connect("/nonexistent", { features: 0n, configSize: 257 }),
      RangeError,
    );
    const p = pair(t);
    const fe = await p.connect();
    assert.throws(() => fe.getConfig(0, 0), RangeError);
    await assert.rejects(
      fe.startRing(0, { size: 3, descAddr: 0, availAddr: 0, usedAddr: 0, onCall() {} }),
      RangeError,
    );
    await assert.rejects(fe.stopRing(0), RangeError);
  });
});

describe("VhostUserFrontend rings", { timeout: 30_000 }, () => {
  test("start: NUM, BASE, ADDR (desc, used, avail), KICK, CALL, ENABLE; kicks and calls travel; stop: GET_VRING_BASE", async (t) => {
    const p = pair(t);
    const fe = await p.connect();
    const before = p.backend.received.length;
    let calls = 0;
    const ring = await fe.startRing(1, {
      size: 64,
      descAddr: 0x4000_1000,
      availAddr: 0x4000_1400,
      usedAddr: 0x4000_2000,
      base: 5,
      onCall: () => calls++,
    });
    const sent = p.backend.received.slice(before);
    assert.deepEqual(
      sent.map((m) => m.request),
      [
        R.SET_VRING_NUM,
        R.SET_VRING_BASE,
        R.SET_VRING_ADDR,
        R.SET_VRING_KICK,
        R.SET_VRING_CALL,
        R.SET_VRING_ENABLE,
      ],
    );
    assert.ok(sent.every((m) => m.flags === (0x1 | NEED_REPLY)));
    assert.deepEqual(decodeVringState(sent[0]!.payload), { index: 1, num: 64 });
    assert.deepEqual(decodeVringState(sent[1]!.payload), { index: 1, num: 5 });
    assert.deepEqual(decodeVringAddr(sent[2]!.payload), {
      index: 1,
      flags: 0,
      desc: 0x4000_1000n,
      used: 0x4000_2000n,
      avail: 0x4000_1400n,
      log: 0n,
    });
    assert.deepEqual(decodeVringFile(sent[3]!.payload), { index: 1, noFd: false });
    assert.equal(sent[3]!.fdCount, 1);
    assert.equal(sent[4]!.fdCount, 1);
    assert.deepEqual(decodeVringState(sent[5]!.payload), { index: 1, num: 1 });

    assert.equal(p.backend.takeKick(1), false);
    ring.kick();
    assert.equal(p.backend.takeKick(1), true);
    p.backend.call(1);
    p.backend.call(1);
    await until("onCall", () => calls > 0);
    await tick();
    assert.equal(calls, 1, "two signals before the read are one call");

    await assert.rejects(
      fe.startRing(1, { size: 64, descAddr: 0, availAddr: 0, usedAddr: 0, onCall() {} }),
      RangeError,
    );
    assert.deepEqual(await fe.stopRing(1), { layout: "split", num: 7, nextAvail: 7 });
    assert.deepEqual(decodeVringState(p.backend.received.at(-1)!.payload), { index: 1, num: 0 });
    assert.equal(p.backend.received.at(-1)!.flags, 0x1);
    assert.equal(ring.stopped, true);
    ring.kick(); // a no-op now
    assert.equal(p.backend.takeKick(1), false);
  });

  test("packed rings (VIRTIO_F_RING_PACKED negotiated): any size, a fresh base 0x80008000, the Driver and Device Areas, GET_VRING_BASE decoded", async (t) => {
    const p = pair(t, { features: VERSION_1 | PROTOCOL_FEATURES | RING_PACKED });
    const fe = await p.connect({ features: VERSION_1 | RING_PACKED });
    assert.equal(fe.features & RING_PACKED, RING_PACKED);
    const before = p.backend.received.length;
    // Descriptor Ring 12 × 16 bytes, then the Driver Area and the Device Area (placeRing("packed", 12, ...)).
    await fe.startRing(0, {
      size: 12,
      descAddr: 0x4000_1000,
      availAddr: 0x4000_10c0,
      usedAddr: 0x4000_10c4,
      onCall() {},
    });
    const sent = p.backend.received.slice(before);
    assert.deepEqual(decodeVringState(sent[0]!.payload), { index: 0, num: 12 });
    assert.deepEqual(decodeVringState(sent[1]!.payload), { index: 0, num: 0x8000_8000 });
    const addr = decodeVringAddr(sent[2]!.payload);
    assert.equal(addr.avail, 0x4000_10c0n, "available = the Driver Area");
    assert.equal(addr.used, 0x4000_10c4n, "used = the Device Area");
    // Where the back-end stopped: avail slot 5 (wrap 0), used slot 3 (wrap 1).
    p.backend.responders.set(R.GET_VRING_BASE, (m, be) => {
      const { index } = decodeVringState(m.payload);
      be.sendRaw(encodeReply(m.request, encodeVringState({ index, num: 0x8003_0005 })));
      return true;
    });
    assert.deepEqual(await fe.stopRing(0), {
      layout: "packed",
      num: 0x8003_0005,
      state: { availPos: 5, availWrap: 0, usedPos: 3, usedWrap: 1 },
    });
    // An explicit base is sent as given.
    await fe.startRing(1, {
      size: 12,
      descAddr: 0x4000_2000,
      availAddr: 0x4000_20c0,
      usedAddr: 0x4000_20c4,
      base: 0x0001_8001,
      onCall() {},
    });
    const base = p.backend.received.filter((m) => m.request === R.SET_VRING_BASE).at(-1)!;
    assert.deepEqual(decodeVringState(base.payload), { index: 1, num: 0x0001_8001 });
    await assert.rejects(
      fe.startRing(0, { size: 0, descAddr: 0, availAddr: 0, usedAddr: 0, onCall() {} }),
      RangeError,
    );
  });

  test("close() stops every started ring with GET_VRING_BASE, then hangs up", async (t) => {
    const p = pair(t);
    const fe = await p.connect();
    const r0 = await fe.startRing(0, {
      size: 8,
      descAddr: 0,
      availAddr: 0,
      usedAddr: 0,
      onCall() {},
    });
    const r1 = await fe.startRing(1, {
      size: 8,
      descAddr: 0,
      availAddr: 0,
      usedAddr: 0,
      onCall() {},
    });
    await fe.close();
    const stops = p.backend.received.filter((m) => m.request === R.GET_VRING_BASE);
    assert.deepEqual(
      stops.map((m) => decodeVringState(m.payload).index),
      [0, 1],
    );
    assert.ok(r0.stopped && r1.stopped);
    const why = await fe.closed;
    assert.equal(why.code, ErrorCode.VHOST_USER_DISCONNECTED);
    await until("EOF", () => p.backend.ended);
    await assert.rejects(fe.getConfig(0, 4), (e) =>
      isVirtioError(e, ErrorCode.VHOST_USER_DISCONNECTED),
    );
  });

  test("destroy() hangs up at once: no GET_VRING_BASE, pending requests reject, rings released", async (t) => {
    const p = pair(t);
    const fe = await p.connect();
    const ring = await fe.startRing(0, {
      size: 8,
      descAddr: 0,
      availAddr: 0,
      usedAddr: 0,
      onCall() {},
    });
    p.backend.responders.set(R.GET_CONFIG, () => true); // never answered
    const pending = fe.getConfig(0, 4);
    await until("GET_CONFIG sent", () => p.backend.requests.at(-1) === R.GET_CONFIG);
    fe.destroy();
    await assert.rejects(pending, (e) => isVirtioError(e, ErrorCode.VHOST_USER_DISCONNECTED));
    assert.equal(ring.stopped, true);
    assert.equal((await fe.closed).code, ErrorCode.VHOST_USER_DISCONNECTED);
    await until("EOF", () => p.backend.ended);
    assert.ok(!p.backend.requests.includes(R.GET_VRING_BASE));
    await fe.close(); // still fine
  });

  test("a failure status (REPLY_ACK != 0) rejects that request only; the connection stays open", async (t) => {
    const p = pair(t);
    const fe = await p.connect();
    p.backend.responders.set(R.SET_VRING_ADDR, (m, be) => {
      be.reply(m.request, encodeU64(1n));
      return true;
    });
    await assert.rejects(
      fe.startRing(0, { size: 8, descAddr: 0, availAddr: 0, usedAddr: 0, onCall() {} }),
      (e) => isVirtioError(e, ErrorCode.VHOST_USER_REFUSED) && /SET_VRING_ADDR/.test(e.message),
    );
    assert.equal(fe.error, undefined);
    p.backend.responders.clear();
    const ring = await fe.startRing(0, {
      size: 8,
      descAddr: 0,
      availAddr: 0,
      usedAddr: 0,
      onCall() {},
    });
    assert.equal(ring.stopped, false);
  });

  test("an empty GET_CONFIG reply is a refusal (libvhost-user's error answer)", async (t) => {
    const p = pair(t);
    const fe = await p.connect();
    p.backend.responders.set(R.GET_CONFIG, (m, be) => {
      be.reply(m.request, EMPTY);
      return true;
    });
    await assert.rejects(fe.getConfig(0, 64), (e) =>
      isVirtioError(e, ErrorCode.VHOST_USER_REFUSED),
    );
    assert.equal(fe.error, undefined);
  });

  test("requests go out one at a time: the next only after the previous reply", async (t) => {
    const p = pair(t);
    const fe = await p.connect();
    let held: (() => void) | undefined;
    p.backend.responders.set(R.GET_CONFIG, (m, be) => {
      held = () =>
        be.sendRaw(
          encodeReply(m.request, encodeConfig({ offset: 0, flags: 0, data: new Uint8Array(4) })),
        );
      return true;
    });
    const first = fe.getConfig(0, 4);
    const second = fe.stopRing(0).catch((e: unknown) => e); // RangeError: not started
    await until("GET_CONFIG held", () => held !== undefined);
    const n = p.backend.received.length;
    const queued = fe.getConfig(0, 4);
    for (let i = 0; i < 20; i++) await tick();
    assert.equal(p.backend.received.length, n, "nothing is sent while a reply is awaited");
    p.backend.responders.clear();
    held!();
    await first;
    await queued;
    assert.ok((await second) instanceof RangeError);
  });
});

/** A malformed answer and the request it answers. */
interface BadReply {
  readonly name: string;
  readonly request: number;
  readonly answer: (m: { request: number; payload: Uint8Array }, be: FakeBackend) => void;
  readonly match?: RegExp;
}

const BAD_REPLIES: readonly BadReply[] = [
  {
    name: "flags without REPLY (0x1)",
    request: R.GET_FEATURES,
    answer: (m, be) => be.reply(m.request, encodeU64(VERSION_1 | PROTOCOL_FEATURES), 0x1),
    match: /flags 0x1/,
  },
  {
    name: "flags with NEED_REPLY echoed (0xd)",
    request: R.GET_FEATURES,
    answer: (m, be) => be.reply(m.request, encodeU64(VERSION_1 | PROTOCOL_FEATURES), 0xd),
  },
  {
    name: "version 2 (0x6)",
    request: R.GET_PROTOCOL_FEATURES,
    answer: (m, be) => be.reply(m.request, encodeU64(0x8209n), 0x6),
  },
  {
    name: "an undefined flag bit (0x25)",
    request: R.GET_PROTOCOL_FEATURES,
    answer: (m, be) => be.reply(m.request, encodeU64(0x8209n), 0x25),
  },
  {
    name: "another request id",
    request: R.GET_FEATURES,
    answer: (_m, be) => be.reply(R.GET_PROTOCOL_FEATURES, encodeU64(0x8209n)),
    match: /carries request VHOST_USER_GET_PROTOCOL_FEATURES/,
  },
  {
    name: "a payload too short",
    request: R.GET_FEATURES,
    answer: (m, be) => be.reply(m.request, new Uint8Array(4)),
    match: /4 payload bytes, expected 8/,
  },
  {
    name: "a payload too long",
    request: R.GET_QUEUE_NUM,
    answer: (m, be) => be.reply(m.request, new Uint8Array(16)),
  },
  {
    name: "a size of 0xffffffff (refused from the header alone)",
    request: R.GET_MAX_MEM_SLOTS,
    answer: (m, be) =>
      be.sendRaw(Uint8Array.from([m.request, 0, 0, 0, 5, 0, 0, 0, 0xff, 0xff, 0xff, 0xff])),
  },
  {
    name: "an ack to a request with a reply body",
    request: R.GET_CONFIG,
    answer: (m, be) => be.reply(m.request, encodeU64(0n)),
  },
  {
    name: "a config reply with another offset",
    request: R.GET_CONFIG,
    answer: (m, be) =>
      be.reply(m.request, encodeConfig({ offset: 4, flags: 0, data: new Uint8Array(60) })),
    match: /offset 4/,
  },
  {
    name: "a config reply whose inner size disagrees",
    request: R.GET_CONFIG,
    answer: (m, be) => {
      const payload = encodeConfig({ offset: 0, flags: 0, data: new Uint8Array(60) });
      payload[4] = 59;
      be.reply(m.request, payload);
    },
  },
  {
    name: "a config reply with other flags",
    request: R.GET_CONFIG,
    answer: (m, be) =>
      be.reply(m.request, encodeConfig({ offset: 0, flags: 1, data: new Uint8Array(60) })),
  },
  {
    name: "an ack of the wrong size",
    request: R.SET_VRING_NUM,
    answer: (m, be) => be.reply(m.request, new Uint8Array(4)),
  },
  {
    name: "a GET_VRING_BASE reply for another ring",
    request: R.GET_VRING_BASE,
    answer: (m, be) => be.reply(m.request, encodeVringState({ index: 1, num: 0 })),
    match: /for ring 1, asked for 0/,
  },
  {
    name: "a reply with an fd attached",
    request: R.GET_FEATURES,
    answer: (m, be) => {
      const fd = eventfd();
      be.sendRaw(encodeReply(m.request, encodeU64(VERSION_1 | PROTOCOL_FEATURES)), [fd]);
      be.memFds.push(fd); // the fake closes its own copy
    },
    match: /1 fds/,
  },
  {
    name: "trailing bytes after the reply",
    request: R.GET_FEATURES,
    answer: (m, be) => {
      const reply = encodeReply(m.request, encodeU64(VERSION_1 | PROTOCOL_FEATURES));
      const twice = new Uint8Array(reply.byteLength * 2);
      twice.set(reply);
      twice.set(reply, reply.byteLength);
      be.sendRaw(twice);
    },
    match: /unsolicited/,
  },
  {
    name: "an extra reply to a request that expects none",
    request: R.SET_OWNER,
    answer: (m, be) => be.reply(m.request, encodeU64(0n)),
    match: /unsolicited|carries request/,
  },
];

/** Runs the handshake, a ring start and a stop so that every request kind is asked. */
async function fullSequence(p: Pair): Promise<VhostUserFrontend> {
  const fe = await p.connect({ configSize: 60 });
  await fe.startRing(0, {
    size: 8,
    descAddr: 0x1000,
    availAddr: 0x1080,
    usedAddr: 0x1100,
    onCall() {},
  });
  await fe.stopRing(0);
  return fe;
}

describe("VhostUserFrontend strict reply validation", { timeout: 60_000 }, () => {
  for (const bad of BAD_REPLIES) {
    test(`${bad.name} closes the connection with VIRTIO_ERR_VHOST_USER_PROTOCOL`, async (t) => {
      const p = pair(t);
      let answered = false;
      p.backend.responders.set(bad.request, (m, be) => {
        if (answered) return false;
        answered = true;
        bad.answer(m, be);
        return true;
      });
      const err = await within(
        fullSequence(p).then(
          () => assert.fail("the sequence should have failed"),
          (e: unknown) => e,
        ),
        WAIT_MS,
        "sequence",
      );
      assert.ok(answered, "the malformed reply was sent");
      assert.ok(isVirtioError(err, ErrorCode.VHOST_USER_PROTOCOL), `got ${String(err)}`);
      if (bad.match) assert.match(err.message, bad.match);
      await until("the back-end to see EOF", () => p.backend.ended);
      assert.equal(
        p.backend.readerError,
        undefined,
        "everything the front-end sent was well-formed",
      );
    });
  }

  test("a violation while rings run: pending requests reject, rings are released, closed resolves", async (t) => {
    const p = pair(t);
    const fe = await p.connect();
    const ring = await fe.startRing(0, {
      size: 8,
      descAddr: 0,
      availAddr: 0,
      usedAddr: 0,
      onCall() {},
    });
    p.backend.responders.set(R.GET_CONFIG, () => true); // hold the reply
    const pending = fe.getConfig(0, 8);
    const queued = fe.getConfig(0, 8);
    await until("GET_CONFIG sent", () => p.backend.requests.at(-1) === R.GET_CONFIG);
    p.backend.reply(R.GET_CONFIG, encodeU64(0n), 0x1); // no REPLY bit
    for (const pr of [pending, queued])
      await assert.rejects(pr, (e) => isVirtioError(e, ErrorCode.VHOST_USER_PROTOCOL));
    const why = await within(fe.closed, WAIT_MS, "closed");
    assert.equal(why.code, ErrorCode.VHOST_USER_PROTOCOL);
    assert.equal(fe.error, why);
    assert.equal(ring.stopped, true);
    await assert.rejects(fe.getConfig(0, 8), (e) => e === why);
    await fe.close(); // still fine
  });

  test("unsolicited bytes before any request close the connection", async (t) => {
    const p = pair(t);
    p.backend.responders.set(R.SET_OWNER, (_m, be) => {
      be.sendRaw(encodeMessage(R.GET_FEATURES, 0x5, encodeU64(0n)));
      return true;
    });
    await connectFails(p, ErrorCode.VHOST_USER_PROTOCOL);
  });

  test("a reply split into single bytes is reassembled", async (t) => {
    const p = pair(t);
    p.backend.responders.set(R.GET_FEATURES, (m, be) => {
      const bytes = encodeReply(m.request, encodeU64(VERSION_1 | PROTOCOL_FEATURES));
      bytes.forEach((_, i) => setTimeout(() => be.sendRaw(bytes.subarray(i, i + 1)), i));
      return true;
    });
    const fe = await p.connect();
    assert.equal(fe.deviceFeatures, VERSION_1 | PROTOCOL_FEATURES);
  });

  test("a back-end that never answers: the request fails after the reply timeout", async (t) => {
    const p = pair(t);
    p.backend.responders.set(R.GET_PROTOCOL_FEATURES, () => true);
    const err = await connectFails(p, ErrorCode.VHOST_USER_PROTOCOL, { replyTimeoutMs: 50 });
    assert.match(err.message, /no reply to VHOST_USER_GET_PROTOCOL_FEATURES/);
  });

  test("a back-end that hangs up mid-reply: VIRTIO_ERR_VHOST_USER_DISCONNECTED", async (t) => {
    const p = pair(t);
    p.backend.responders.set(R.GET_FEATURES, (m, be) => {
      be.sendRaw(encodeReply(m.request, encodeU64(0n)).subarray(0, 10));
      be.close();
      return true;
    });
    await connectFails(p, ErrorCode.VHOST_USER_DISCONNECTED);
  });
});

describe("VhostUserFrontend inflight buffer (INFLIGHT_SHMFD)", { timeout: 30_000 }, () => {
  const INFLIGHT_SHMFD = 1n << 12n;
  const withInflight = { protocolFeatures: 0x8f2bn | INFLIGHT_SHMFD };
  const regionBytes = 2 * (16 + 16 * 128 + 48); // two 64-byte-aligned queue regions of 128 entries

  /** Answers GET_INFLIGHT_FD with `desc` and `fds` (fresh memfds). */
  function answerInflight(
    p: Pair,
    fdCount: number,
    desc: (asked: {
      numQueues: number;
      queueSize: number;
    }) => Partial<InflightDescription> = () => ({}),
  ): void {
    p.backend.responders.set(R.GET_INFLIGHT_FD, (m, be) => {
      const asked = decodeInflight(m.payload);
      const fds = Array.from({ length: fdCount }, () => {
        const fd = memfdCreate("inflight-test");
        ftruncate(fd, regionBytes);
        return fd;
      });
      const d = { ...asked, mmapSize: BigInt(regionBytes), mmapOffset: 0n, ...desc(asked) };
      be.sendRaw(encodeReply(m.request, encodeInflight(d)), fds);
      fds.forEach((fd) => close(fd));
      return true;
    });
  }

  test("GET_INFLIGHT_FD returns the buffer and its fd; SET_INFLIGHT_FD hands both back", async (t) => {
    const p = pair(t, withInflight);
    answerInflight(p, 1);
    const fe = await p.connect();
    assert.ok(fe.hasProtocolFeature(12), "INFLIGHT_SHMFD negotiated when offered");
    const r = await fe.getInflight(2, 128);
    p.defer(() => close(r.fd));
    assert.deepEqual(r.description, {
      mmapSize: BigInt(regionBytes),
      mmapOffset: 0n,
      numQueues: 2,
      queueSize: 128,
    });
    assert.ok(r.fd >= 0);
    await fe.setInflight(r.description, r.fd);
    const sent = p.backend.received.at(-1)!;
    assert.equal(sent.request, R.SET_INFLIGHT_FD);
    assert.equal(sent.fdCount, 1);
    assert.deepEqual(decodeInflight(sent.payload), r.description);
  });

  test("without INFLIGHT_SHMFD the calls throw at once", async (t) => {
    const p = pair(t);
    const fe = await p.connect();
    assert.throws(() => fe.getInflight(1, 128), TypeError);
  });

  for (const [name, fds, desc, match] of [
    ["a reply without an fd", 0, () => ({}), /carries no fd/],
    ["a reply with two fds", 2, () => ({}), /sent 2 fds/],
    ["a reply for other queues", 1, () => ({ numQueues: 1 }), /1 queues of 128, asked for 2/],
    ["a buffer too small for the rings", 1, () => ({ mmapSize: 64n }), /mmap_size 64/],
  ] as const) {
    test(`${name} closes the connection with VIRTIO_ERR_VHOST_USER_PROTOCOL; no fd leaks`, async (t) => {
      const p = pair(t, withInflight);
      answerInflight(p, fds, desc);
      const fe = await p.connect();
      await assert.rejects(fe.getInflight(2, 128), (e) => {
        assert.ok(isVirtioError(e, ErrorCode.VHOST_USER_PROTOCOL), String(e));
        assert.match((e as Error).message, match);
        return true;
      });
      await until("the back-end to see EOF", () => p.backend.ended);
    });
  }

  test("an fd with any other reply is a violation", async (t) => {
    const p = pair(t);
    p.backend.responders.set(R.GET_CONFIG, (m, be) => {
      const fd = memfdCreate("stray");
      const c = decodeConfig(m.payload);
      be.sendRaw(
        encodeReply(m.request, encodeConfig({ ...c, data: new Uint8Array(c.data.byteLength) })),
        [fd],
      );
      close(fd);
      return true;
    });
    const fe = await p.connect();
    await assert.rejects(fe.getConfig(0, 8), (e) =>
      isVirtioError(e, ErrorCode.VHOST_USER_PROTOCOL),
    );
  });
});

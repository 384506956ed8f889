/**
 * Replays the QEMU 7.2 vhost-user-blk-pci message sequences recorded in
 * docs/vhost-user.md against the back-end, with a recording device
 * and real DeviceQueues over fake-mapped memory. Every reply is checked
 * byte for byte against literal wire bytes (flags 0x5, sizes).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { DriverQueue } from "../ring/driver-queue.ts";
import { VhostUserRequest as R } from "../spec/vhost-user.ts";
import { VIRTQ_USED_OFF_IDX } from "../spec/virtqueue.ts";
import {
  encodeConfig,
  encodeSingleMemRegion,
  encodeU64,
  encodeVringAddr,
  encodeVringFile,
  encodeVringState,
} from "./codec.ts";
import { Harness } from "./test-support.ts";

const hex = (s: string): Uint8Array =>
  Uint8Array.from(
    s
      .replace(/\s+/g, "")
      .match(/../g)!
      .map((b) => parseInt(b, 16)),
  );

/** Device bits of qemu-storage-daemon 7.2 minus NOTIFY_ON_EMPTY and LOG_ALL (not implemented here). */
const DEVICE_FEATURES = 0x30007e46n;
/** qsd 7.2's virtio_blk_config for a 64 MiB disk with 2 queues (57 bytes, as decoded in §1.3). */
const CONFIG_57 = hex(
  "0000020000000000 00000000 7e000000 00000000 00020000 00 00 0100 01000000" +
    " 00 00 0200 00800000 01000000 01000000 00800000 01000000 00",
);
const CONFIG_60 = new Uint8Array(60);
CONFIG_60.set(CONFIG_57);

const RAM = 0x1000_0000; // 256 MiB memfd RAM, one region at gpa 0
const UVA = 0x7f9b2ffff000n; // QEMU's mapping of it (from the trace)
const uva = (gpa: number) => UVA + BigInt(gpa);

/** Ring placements: SeaBIOS's legacy layout, Linux's 64-byte used alignment. */
const SEABIOS = { desc: 0x7000, avail: 0x7800, used: 0x8000 };
const LINUX0 = { desc: 0x2aa6000, avail: 0x2aa6800, used: 0x2aa6940 };
const LINUX1 = { desc: 0x2aa8000, avail: 0x2aa8800, used: 0x2aa8940 };
type Ring = typeof SEABIOS;

const REPLY_FEATURES = hex("01000000 05000000 08000000 467e0070 01000000");
const REPLY_PROTOCOL_FEATURES = hex("0f000000 05000000 08000000 09a20000 00000000");
const REPLY_QUEUE_NUM = hex("11000000 05000000 08000000 02000000 00000000");
const REPLY_MAX_MEM_SLOTS = hex("24000000 05000000 08000000 20000000 00000000");
const REPLY_ACK_ADD_MEM_REG = hex("25000000 05000000 08000000 00000000 00000000");
const replyVringBase = (index: number, num: number) =>
  hex(
    `0b000000 05000000 08000000 ${index.toString(16).padStart(2, "0")}000000 ` +
      [0, 8].map((s) => ((num >> s) & 0xff).toString(16).padStart(2, "0")).join("") +
      "0000",
  );

/** The front-end (QEMU) side of one connection, plus the guest's memory. */
class Qemu {
  readonly h = new Harness({ numQueues: 2, features: DEVICE_FEATURES, config: CONFIG_60 });
  readonly memfd: number;
  readonly guest;
  /** fds QEMU passed and that the back-end may still hold. */
  readonly calls: number[] = [];
  readonly errs: number[] = [];
  readonly kicks: number[] = [];

  constructor(ram?: SharedArrayBuffer) {
    this.memfd = this.h.fds.memfd(ram ?? RAM);
    this.guest = this.h.guestMemory(this.memfd);
  }

  /** Sends and checks the exact bytes of the one reply (or that none came). */
  async wire(
    request: number,
    payload: Uint8Array,
    expected: Uint8Array | null,
    fds: number[] = [],
    flags = 1,
  ) {
    this.h.send(request, payload, fds, flags);
    await this.h.idle();
    const sent = this.h.socket.sent.splice(0);
    if (expected === null) {
      assert.deepEqual(sent, [], `no reply to request ${request}`);
      return;
    }
    assert.equal(sent.length, 1, `one reply to request ${request}`);
    assert.deepEqual([...sent[0]!.bytes], [...expected]);
  }

  fdMsg(request: number, index: number): Promise<void> {
    const fd = this.h.fds.eventfd(`${request}/${index}`);
    (request === R.SET_VRING_CALL
      ? this.calls
      : request === R.SET_VRING_ERR
        ? this.errs
        : this.kicks)[index] = fd;
    return this.wire(request, encodeVringFile({ index, noFd: false }), null, [fd]);
  }

  /** §1.3 steps 1–11 (+ GET_CONFIG unless reconnecting). */
  async realize(withConfig = true): Promise<void> {
    await this.wire(R.GET_FEATURES, new Uint8Array(0), REPLY_FEATURES);
    await this.wire(R.GET_PROTOCOL_FEATURES, new Uint8Array(0), REPLY_PROTOCOL_FEATURES);
    await this.wire(R.SET_PROTOCOL_FEATURES, encodeU64(0xa209n), null);
    await this.wire(R.GET_QUEUE_NUM, new Uint8Array(0), REPLY_QUEUE_NUM);
    await this.wire(R.GET_MAX_MEM_SLOTS, new Uint8Array(0), REPLY_MAX_MEM_SLOTS);
    await this.wire(R.SET_OWNER, new Uint8Array(0), null);
    await this.wire(R.GET_FEATURES, new Uint8Array(0), REPLY_FEATURES);
    for (const i of [0, 1]) {
      await this.fdMsg(R.SET_VRING_CALL, i);
      await this.fdMsg(R.SET_VRING_ERR, i);
    }
    if (withConfig) {
      const request = encodeConfig({ offset: 0, flags: 0, data: new Uint8Array(57) });
      assert.equal(request.length, 69);
      const reply = new Uint8Array(12 + 69);
      reply.set(hex("18000000 05000000 45000000 00000000 39000000 00000000"));
      reply.set(CONFIG_57, 24);
      await this.wire(R.GET_CONFIG, request, reply);
    }
  }

  /** The prologue of every start: SET_FEATURES, CALL×2, SET_FEATURES (+ memory on a new connection). */
  async startPrologue(features: bigint, addMemory: boolean): Promise<void> {
    await this.wire(R.SET_FEATURES, encodeU64(features), null);
    await this.fdMsg(R.SET_VRING_CALL, 0);
    await this.fdMsg(R.SET_VRING_CALL, 1);
    await this.wire(R.SET_FEATURES, encodeU64(features), null);
    if (addMemory) {
      const region = encodeSingleMemRegion({
        guestPhysAddr: 0n,
        memorySize: BigInt(RAM),
        userspaceAddr: UVA,
        mmapOffset: 0n,
      });
      await this.wire(R.ADD_MEM_REG, region, REPLY_ACK_ADD_MEM_REG, [this.memfd], 0x9);
    }
  }

  /** NUM, BASE, ADDR, KICK of one ring (ENABLE comes later for all rings). */
  async setupRing(index: number, ring: Ring, base: number): Promise<void> {
    await this.wire(R.SET_VRING_NUM, encodeVringState({ index, num: 128 }), null);
    await this.wire(R.SET_VRING_BASE, encodeVringState({ index, num: base }), null);
    const addr = {
      index,
      flags: 0,
      desc: uva(ring.desc),
      used: uva(ring.used),
      avail: uva(ring.avail),
    };
    await this.wire(R.SET_VRING_ADDR, encodeVringAddr({ ...addr, log: BigInt(ring.used) }), null);
    await this.fdMsg(R.SET_VRING_KICK, index);
  }

  async enableAll(num: 0 | 1): Promise<void> {
    for (const index of [0, 1])
      await this.wire(R.SET_VRING_ENABLE, encodeVringState({ index, num }), null);
  }

  async getVringBase(index: number, expected: number): Promise<void> {
    await this.wire(
      R.GET_VRING_BASE,
      encodeVringState({ index, num: 0 }),
      replyVringBase(index, expected),
    );
  }

  /** The guest driver of a ring (re)initialises it, as a driver does after reset. */
  driver(ring: Ring, initialIndex = 0): DriverQueue<number> {
    return new DriverQueue<number>(this.guest, {
      size: 128,
      descAddr: ring.desc,
      availAddr: ring.avail,
      usedAddr: ring.used,
      initialIndex,
    });
  }

  /** The guest submits `n` requests on `ring` and kicks. */
  submit(drv: DriverQueue<number>, index: number, n: number): void {
    for (let i = 0; i < n; i++) {
      assert.ok(drv.add([{ addr: 0x10_0000, len: 16 }], [{ addr: 0x10_1000, len: 1 }], i));
    }
    this.h.fds.kick(this.kicks[index]!);
  }
}

/** Used entries the guest can collect. */
function collect(drv: DriverQueue<number>): number {
  let n = 0;
  while (drv.getUsed() !== null) n++;
  return n;
}

const SEABIOS_FEATURES = 0x140000046n;
const LINUX_FEATURES = 0x170007e46n;

describe("replay of QEMU 7.2 sequences", { timeout: 20_000 }, () => {
  test("realize, SeaBIOS start, Linux start (2 rings), reboot, poweroff, EOF", async () => {
    const q = new Qemu();
    const h = q.h;
    await q.realize();
    assert.deepEqual(h.device.events, [], "realize starts nothing");

    // SeaBIOS: queue 0 only; ENABLE(1) for both rings, ring 1 was never configured.
    const oldCalls = [...q.calls];
    await q.startPrologue(SEABIOS_FEATURES, true);
    assert.ok(
      oldCalls.every((fd) => !h.fds.isOpen(fd)),
      "replaced call fds are closed",
    );
    assert.ok(!h.fds.isOpen(q.memfd), "the region fd is closed once mapped");
    let bios = q.driver(SEABIOS);
    await q.setupRing(0, SEABIOS, 0);
    q.submit(bios, 0, 1); // kick before SET_VRING_ENABLE: must not be lost
    await h.idle();
    assert.deepEqual(h.device.events, [], "nothing runs before SET_VRING_ENABLE");
    await q.enableAll(1);
    assert.deepEqual(h.device.events, ["start 0 avail=0 used=0", "kick 0", "kick 0"]);
    assert.equal(collect(bios), 1);
    assert.ok(h.fds.signalCount(q.calls[0]!) >= 1, "the guest was notified");

    // Linux takes over: stop, then both rings at Linux's layout.
    h.device.events.length = 0;
    await q.enableAll(0);
    await q.getVringBase(0, 1);
    assert.deepEqual(h.device.events, ["stop 0", "stopped 0"]);
    assert.ok(!h.fds.isOpen(q.kicks[0]!), "GET_VRING_BASE closes the kick fd");
    await q.startPrologue(LINUX_FEATURES, false);
    const lin0 = q.driver(LINUX0);
    const lin1 = q.driver(LINUX1);
    await q.setupRing(0, LINUX0, 0);
    await q.setupRing(1, LINUX1, 0);
    await q.enableAll(1);
    q.submit(lin0, 0, 5);
    q.submit(lin1, 1, 4);
    await h.idle();
    assert.equal(collect(lin0), 5);
    assert.equal(collect(lin1), 4);

    // Reboot: stop both, then SeaBIOS again (no memory messages).
    await q.enableAll(0);
    await q.getVringBase(0, 5);
    await q.getVringBase(1, 4);
    await q.startPrologue(SEABIOS_FEATURES, false);
    bios = q.driver(SEABIOS);
    await q.setupRing(0, SEABIOS, 0);
    await q.enableAll(1);
    q.submit(bios, 0, 1);
    await h.idle();
    assert.equal(collect(bios), 1);
    assert.equal(h.mapper.calls.length, 1, "memory was mapped once per connection");

    // Poweroff: stop, then EOF.
    await q.enableAll(0);
    await q.getVringBase(0, 1);
    h.socket.end();
    const { error } = await h.conn.closed;
    assert.equal(error, undefined);
    h.assertReleased();
    assert.deepEqual(h.logs, []);
  });

  test("reconnect after a back-end crash: handshake without GET_CONFIG, SET_VRING_BASE ≠ 0", async () => {
    const first = new Qemu();
    await first.realize();
    first.h.socket.end();
    await first.h.conn.closed;
    first.h.assertReleased([first.memfd]); // never sent: QEMU still holds it

    // The guest's rings live on in the same memory; the used indexes are where the old back-end left them.
    const ram = first.h.fds.memoryOf(first.memfd)!;
    const q = new Qemu(ram);
    const lin0 = q.driver(LINUX0, 38);
    const lin1 = q.driver(LINUX1, 67);
    assert.equal(q.guest.readU16(LINUX0.used + VIRTQ_USED_OFF_IDX), 38);
    await q.realize(false);
    await q.startPrologue(LINUX_FEATURES, true);
    await q.setupRing(0, LINUX0, 38);
    await q.setupRing(1, LINUX1, 67);
    await q.enableAll(1);
    assert.deepEqual(
      q.h.device.events.filter((e) => e.startsWith("start")),
      ["start 0 avail=38 used=38", "start 1 avail=67 used=67"],
    );
    q.submit(lin0, 0, 3);
    await q.h.idle();
    assert.equal(collect(lin0), 3);
    assert.equal(collect(lin1), 0);
    await q.enableAll(0);
    await q.getVringBase(0, 41);
    await q.getVringBase(1, 67);
    q.h.socket.end();
    await q.h.conn.closed;
    q.h.assertReleased();
  });
});

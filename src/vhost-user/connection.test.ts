import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { setImmediate as tick } from "node:timers/promises";
import { ErrorCode, VirtioError } from "../errors.ts";
import type { GuestMemory } from "../memory/guest-memory.ts";
import { DriverQueue } from "../ring/driver-queue.ts";
import { vringLayout, type VringLayout } from "../ring/layout.ts";
import { VhostUserRequest as R } from "../spec/vhost-user.ts";
import { VIRTQ_AVAIL_OFF_IDX, VIRTQ_AVAIL_OFF_RING } from "../spec/virtqueue.ts";
import {
  decodeU64,
  decodeVringState,
  encodeConfig,
  encodeHeader,
  encodeMemoryTable,
  encodeMessage,
  encodeSingleMemRegion,
  encodeU64,
  encodeVringAddr,
  encodeVringFile,
  encodeVringState,
  type MemRegion,
} from "./codec.ts";
import { Harness, type HarnessOptions, type Reply } from "./test-support.ts";

const MEM = 1 << 20;
const UVA = 0x7000_0000_0000n;
const FEATURES = 0x1_4000_0000n; // VERSION_1 | PROTOCOL_FEATURES (the device offers no bits of its own)
const PF_ALL = 0xa209n; // MQ | REPLY_ACK | CONFIG | RESET_DEVICE | CONFIGURE_MEM_SLOTS
const RING0 = vringLayout(16, 0x1000);
const RING1 = vringLayout(16, 0x4000);
const NEED = 0x9;

const region = (gpa: number, size: number, uva: bigint, mmapOffset = 0n): MemRegion => ({
  guestPhysAddr: BigInt(gpa),
  memorySize: BigInt(size),
  userspaceAddr: uva,
  mmapOffset,
});

/** Bounded wait for background work (never asserts timing). */
async function turns(n = 20): Promise<void> {
  for (let i = 0; i < n; i++) await tick();
}

function ackOf(replies: Reply[], request: number): bigint {
  assert.equal(replies.length, 1, "one reply");
  assert.equal(replies[0]!.request, request);
  assert.equal(replies[0]!.flags, 0x5);
  return decodeU64(replies[0]!.payload);
}

async function negotiate(
  h: Harness,
  protocolFeatures = PF_ALL,
  features = FEATURES,
): Promise<void> {
  await h.call(R.SET_OWNER);
  await h.call(R.GET_FEATURES);
  await h.call(R.SET_FEATURES, encodeU64(features));
  await h.call(R.GET_PROTOCOL_FEATURES);
  await h.call(R.SET_PROTOCOL_FEATURES, encodeU64(protocolFeatures));
  assert.equal(h.replies().length, 0);
}

async function addMemory(h: Harness, flags = 1): Promise<GuestMemory> {
  const fd = h.fds.memfd(MEM);
  await h.call(R.ADD_MEM_REG, encodeSingleMemRegion(region(0, MEM, UVA)), [fd], flags);
  return h.guestMemory(fd);
}

interface RingFds {
  kick: number;
  call: number;
  err: number;
}

/** NUM, BASE, ADDR, KICK, CALL, ERR, ENABLE(1) for one ring at `layout` (uva = UVA + gpa). */
async function startRing(
  h: Harness,
  index: number,
  layout: VringLayout,
  flags = 1,
  base = 0,
): Promise<RingFds> {
  const fds = {
    kick: h.fds.eventfd("kick"),
    call: h.fds.eventfd("call"),
    err: h.fds.eventfd("err"),
  };
  const uva = (gpa: number) => UVA + BigInt(gpa);
  await h.call(R.SET_VRING_NUM, encodeVringState({ index, num: layout.size }), [], flags);
  await h.call(R.SET_VRING_BASE, encodeVringState({ index, num: base }), [], flags);
  const addr = {
    index,
    flags: 0,
    desc: uva(layout.descAddr),
    used: uva(layout.usedAddr),
    avail: uva(layout.availAddr),
  };
  await h.call(R.SET_VRING_ADDR, encodeVringAddr({ ...addr, log: 0n }), [], flags);
  await h.call(R.SET_VRING_KICK, encodeVringFile({ index, noFd: false }), [fds.kick], flags);
  await h.call(R.SET_VRING_CALL, encodeVringFile({ index, noFd: false }), [fds.call], flags);
  await h.call(R.SET_VRING_ERR, encodeVringFile({ index, noFd: false }), [fds.err], flags);
  await h.call(R.SET_VRING_ENABLE, encodeVringState({ index, num: 1 }), [], flags);
  return fds;
}

function driver(guest: GuestMemory, layout: VringLayout, initialIndex = 0): DriverQueue<number> {
  return new DriverQueue<number>(guest, { ...layout, initialIndex });
}

function submit(h: Harness, drv: DriverQueue<number>, kick: number, n: number): void {
  for (let i = 0; i < n; i++)
    assert.ok(drv.add([{ addr: 0x8_0000, len: 16 }], [{ addr: 0x8_1000, len: 1 }], i));
  h.fds.kick(kick);
}

function collect(drv: DriverQueue<number>): number {
  let n = 0;
  while (drv.getUsed() !== null) n++;
  return n;
}

/** A negotiated connection with memory and ring 0 running. */
async function running(o: HarnessOptions = {}, protocolFeatures = PF_ALL) {
  const h = new Harness(o);
  await negotiate(h, protocolFeatures);
  const guest = await addMemory(h);
  const fds0 = await startRing(h, 0, RING0);
  const drv0 = driver(guest, RING0);
  h.replies();
  return { h, guest, fds0, drv0 };
}

describe("REPLY_ACK", { timeout: 10_000 }, () => {
  test("NEED_REPLY is ignored until REPLY_ACK is negotiated", async () => {
    const h = new Harness();
    await h.expectNoReply(R.SET_OWNER, undefined, [], NEED);
    await negotiate(h, PF_ALL & ~0x8n);
    await h.expectNoReply(R.SET_FEATURES, encodeU64(FEATURES), [], NEED);
  });

  test("a request without a reply body gets a u64 0 (exact bytes)", async () => {
    const h = new Harness();
    await negotiate(h);
    const [r] = await h.call(R.SET_OWNER, undefined, [], NEED);
    assert.deepEqual([...h.socket.sent], []);
    assert.deepEqual(
      [
        ...encodeHeader({ request: r!.request, flags: r!.flags, size: r!.payload.length }),
        ...r!.payload,
      ],
      [3, 0, 0, 0, 5, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    );
  });

  test("a request with a reply body gets only that reply", async () => {
    const h = new Harness();
    await negotiate(h);
    await h.expectReply(R.GET_QUEUE_NUM, undefined, encodeU64(2n), [], NEED);
    await h.expectReply(R.GET_FEATURES, undefined, encodeU64(FEATURES), [], NEED);
  });

  test("a refused SET_CONFIG gets status 1 and the connection stays up", async () => {
    const h = new Harness();
    await negotiate(h);
    const refused = await h.call(
      R.SET_CONFIG,
      encodeConfig({ offset: 0, flags: 0, data: new Uint8Array(8) }),
      [],
      NEED,
    );
    assert.equal(ackOf(refused, R.SET_CONFIG), 1n);
    const ok = await h.call(
      R.SET_CONFIG,
      encodeConfig({ offset: 32, flags: 0, data: Uint8Array.of(1) }),
      [],
      NEED,
    );
    assert.equal(ackOf(ok, R.SET_CONFIG), 0n);
    await h.expectReply(
      R.GET_CONFIG,
      encodeConfig({ offset: 30, flags: 0, data: new Uint8Array(4) }),
      encodeConfig({ offset: 30, flags: 0, data: Uint8Array.of(0, 0, 1, 0) }),
    );
  });

  test("REM_MEM_REG of an unknown region gets status 1", async () => {
    const h = new Harness();
    await negotiate(h);
    await addMemory(h);
    const r = await h.call(
      R.REM_MEM_REG,
      encodeSingleMemRegion(region(0x10_0000, 4096, UVA + 0x10_0000n)),
      [],
      NEED,
    );
    assert.equal(ackOf(r, R.REM_MEM_REG), 1n);
    assert.equal(h.mapper.live, 1);
  });
});

describe(
  "libblkio order: SET_OWNER first, NEED_REPLY on everything after negotiation",
  { timeout: 10_000 },
  () => {
    test("identity-mapped regions, two queues, I/O, GET_CONFIG, REM_MEM_REG, EOF", async () => {
      const h = new Harness({ numQueues: 2 });
      await h.expectNoReply(R.SET_OWNER);
      await h.expectReply(R.GET_FEATURES, undefined, encodeU64(FEATURES));
      await h.expectNoReply(R.SET_FEATURES, encodeU64(FEATURES));
      await h.expectReply(R.GET_PROTOCOL_FEATURES, undefined, encodeU64(PF_ALL));
      await h.expectNoReply(R.SET_PROTOCOL_FEATURES, encodeU64(PF_ALL));
      await h.expectReply(R.GET_QUEUE_NUM, undefined, encodeU64(2n), [], NEED);
      await h.expectReply(R.GET_MAX_MEM_SLOTS, undefined, encodeU64(32n), [], NEED);
      // guest_phys_addr = userspace_addr = the process address (libblkio's IOVA = pointer).
      const ringBase = 0x7f12_0000_0000;
      const dataBase = 0x7f12_0010_0000;
      const ringFd = h.fds.memfd(0x1_0000);
      const dataFd = h.fds.memfd(0x10_0000);
      for (const [fd, base, size] of [
        [ringFd, ringBase, 0x1_0000],
        [dataFd, dataBase, 0x10_0000],
      ] as const) {
        const r = await h.call(
          R.ADD_MEM_REG,
          encodeSingleMemRegion(region(base, size, BigInt(base))),
          [fd],
          NEED,
        );
        assert.equal(ackOf(r, R.ADD_MEM_REG), 0n);
      }
      const layouts = [vringLayout(16, ringBase), vringLayout(16, ringBase + 0x4000)];
      const kicks: number[] = [];
      for (const index of [0, 1]) {
        const l = layouts[index]!;
        const steps: [number, Uint8Array, number[]][] = [
          [R.SET_VRING_NUM, encodeVringState({ index, num: 16 }), []],
          [R.SET_VRING_BASE, encodeVringState({ index, num: 0 }), []],
          [
            R.SET_VRING_ADDR,
            encodeVringAddr({
              index,
              flags: 0,
              desc: BigInt(l.descAddr),
              used: BigInt(l.usedAddr),
              avail: BigInt(l.availAddr),
              log: 0n,
            }),
            [],
          ],
          [
            R.SET_VRING_KICK,
            encodeVringFile({ index, noFd: false }),
            [(kicks[index] = h.fds.eventfd())],
          ],
          [R.SET_VRING_CALL, encodeVringFile({ index, noFd: false }), [h.fds.eventfd()]],
          [R.SET_VRING_ENABLE, encodeVringState({ index, num: 1 }), []],
        ];
        for (const [request, payload, fds] of steps)
          assert.equal(ackOf(await h.call(request, payload, fds, NEED), request), 0n);
      }
      const cfg = await h.call(
        R.GET_CONFIG,
        encodeConfig({ offset: 0, flags: 0, data: new Uint8Array(60) }),
        [],
        NEED,
      );
      assert.equal(cfg.length, 1);
      assert.equal(cfg[0]!.payload.length, 72);
      // The guest (here: the libblkio process) posts I/O on both queues.
      const ram = h.guestMemory(ringFd, ringBase);
      const drivers = layouts.map((l) => new DriverQueue<number>(ram, l));
      for (const index of [0, 1]) {
        assert.ok(
          drivers[index]!.add(
            [{ addr: ringBase + 0x8000, len: 16 }],
            [{ addr: ringBase + 0x9000, len: 1 }],
            index,
          ),
        );
        h.fds.kick(kicks[index]!);
      }
      await h.idle();
      assert.deepEqual(drivers.map(collect), [1, 1]);
      // Unmapping the data region restarts the running rings (their memory changed).
      const rem = await h.call(
        R.REM_MEM_REG,
        encodeSingleMemRegion(region(dataBase, 0x10_0000, BigInt(dataBase))),
        [],
        NEED,
      );
      assert.equal(ackOf(rem, R.REM_MEM_REG), 0n);
      assert.equal(h.mapper.live, 1);
      assert.deepEqual(
        h.device.events.filter((e) => e.startsWith("start")),
        [
          "start 0 avail=0 used=0",
          "start 1 avail=0 used=0",
          "start 0 avail=1 used=1",
          "start 1 avail=1 used=1",
        ],
      );
      h.socket.end();
      assert.equal((await h.conn.closed).error, undefined);
      h.assertReleased();
    });
  },
);

describe("ring lifecycle", { timeout: 10_000 }, () => {
  test("GET_VRING_BASE waits for in-flight requests before it replies", async () => {
    const { h, fds0, drv0 } = await running();
    h.device.hold = true;
    submit(h, drv0, fds0.kick, 3);
    await h.idle();
    h.send(R.GET_VRING_BASE, encodeVringState({ index: 0, num: 0 }));
    await turns();
    assert.deepEqual(h.socket.sent, [], "no reply while requests are in flight");
    assert.equal(collect(drv0), 0);
    h.device.release(0);
    await h.idle();
    const [r] = h.replies();
    assert.deepEqual(decodeVringState(r!.payload), { index: 0, num: 3 });
    assert.equal(collect(drv0), 3, "in-flight requests completed before the reply");
  });

  test("SET_VRING_ENABLE(0) then (1) resumes where the ring stopped (not a reset)", async () => {
    const { h, fds0, drv0 } = await running();
    submit(h, drv0, fds0.kick, 3);
    await h.idle();
    await h.call(R.SET_VRING_ENABLE, encodeVringState({ index: 0, num: 0 }));
    submit(h, drv0, fds0.kick, 2); // while disabled: kept for later
    await h.idle();
    assert.equal(collect(drv0), 3);
    await h.call(R.SET_VRING_ENABLE, encodeVringState({ index: 0, num: 1 }));
    assert.equal(collect(drv0), 2);
    assert.deepEqual(
      h.device.events.filter((e) => e.startsWith("start")),
      ["start 0 avail=0 used=0", "start 0 avail=3 used=3"],
    );
  });

  test("SET_FEATURES does not disable a running ring", async () => {
    const { h, fds0, drv0 } = await running();
    await h.call(R.SET_FEATURES, encodeU64(FEATURES));
    submit(h, drv0, fds0.kick, 1);
    await h.idle();
    assert.equal(collect(drv0), 1);
  });

  test("without VHOST_USER_F_PROTOCOL_FEATURES rings are enabled from the start", async () => {
    const h = new Harness();
    await h.call(R.SET_FEATURES, encodeU64(FEATURES & ~(1n << 30n)));
    const guest = await addMemory(h);
    const fds = { kick: h.fds.eventfd(), call: h.fds.eventfd() };
    await h.call(R.SET_VRING_NUM, encodeVringState({ index: 0, num: 16 }));
    const a = RING0;
    await h.call(
      R.SET_VRING_ADDR,
      encodeVringAddr({
        index: 0,
        flags: 0,
        desc: UVA + BigInt(a.descAddr),
        used: UVA + BigInt(a.usedAddr),
        avail: UVA + BigInt(a.availAddr),
        log: 0n,
      }),
    );
    await h.call(R.SET_VRING_CALL, encodeVringFile({ index: 0, noFd: false }), [fds.call]);
    const drv = driver(guest, RING0);
    await h.call(R.SET_VRING_KICK, encodeVringFile({ index: 0, noFd: false }), [fds.kick]);
    submit(h, drv, fds.kick, 1);
    await h.idle();
    assert.equal(collect(drv), 1);
    assert.ok(h.fds.signalCount(fds.call) >= 1);
  });

  test("a call fd replaced while the ring runs: the new one is used, the old one closed", async () => {
    const { h, fds0, drv0 } = await running();
    const call2 = h.fds.eventfd("call2");
    await h.call(R.SET_VRING_CALL, encodeVringFile({ index: 0, noFd: false }), [call2]);
    assert.equal(h.fds.isOpen(fds0.call), false);
    submit(h, drv0, fds0.kick, 1);
    await h.idle();
    assert.equal(h.fds.signalCount(call2), 1);
    // No call fd at all (NOFD): completions still land, nothing is signalled.
    await h.call(R.SET_VRING_CALL, encodeVringFile({ index: 0, noFd: true }));
    assert.equal(h.fds.isOpen(call2), false);
    submit(h, drv0, fds0.kick, 1);
    await h.idle();
    assert.equal(collect(drv0), 2);
  });

  test("SET_MEM_TABLE mode: a new table while running restarts the ring at its index", async () => {
    const h = new Harness();
    await negotiate(h, 0x209n); // no CONFIGURE_MEM_SLOTS: QEMU sends SET_MEM_TABLE at every start
    const lowFd = h.fds.memfd(MEM);
    const highFd = h.fds.memfd(MEM);
    const table = encodeMemoryTable([
      region(0, MEM, UVA),
      region(0x1_0000_0000, MEM, UVA + 0x1000_0000n),
    ]);
    assert.equal(
      ackOf(await h.call(R.SET_MEM_TABLE, table, [lowFd, highFd], NEED), R.SET_MEM_TABLE),
      0n,
    );
    assert.equal(h.mapper.live, 2);
    const fds0 = await startRing(h, 0, RING0);
    const drv0 = driver(h.guestMemory(lowFd), RING0);
    submit(h, drv0, fds0.kick, 2);
    await h.idle();
    const again = [h.fds.memfd(h.fds.memoryOf(lowFd)!), h.fds.memfd(h.fds.memoryOf(highFd)!)];
    assert.equal(ackOf(await h.call(R.SET_MEM_TABLE, table, again, NEED), R.SET_MEM_TABLE), 0n);
    assert.equal(h.mapper.live, 2, "the old mappings were released");
    submit(h, drv0, fds0.kick, 1);
    await h.idle();
    assert.equal(collect(drv0), 3);
    assert.deepEqual(
      h.device.events.filter((e) => e.startsWith("st")),
      ["start 0 avail=0 used=0", "stop 0", "stopped 0", "start 0 avail=2 used=2"],
    );
    // The device sees the high region too.
    h.device.started.get(0)!.ctx.memory.writeU32(0x1_0000_0010, 0xfeedf00d);
    assert.equal(h.guestMemory(highFd, 0x1_0000_0000).readU32(0x1_0000_0010), 0xfeedf00d);
  });

  test("a region mapped as several windows is one contiguous guest range", async () => {
    const { h, guest } = await running({ windowSize: 0x1_0000 });
    const mem = h.device.started.get(0)!.ctx.memory;
    assert.equal(mem.layout.length, 16);
    const bytes = Uint8Array.from({ length: 32 }, (_, i) => i + 1);
    mem.write(0x1_fff0, bytes); // crosses the 64 KiB window boundary
    const back = new Uint8Array(32);
    guest.read(0x1_fff0, back);
    assert.deepEqual(back, bytes);
  });

  test("a ring with a bad size does not start: err fd signalled, connection stays", async () => {
    const h = new Harness();
    await negotiate(h);
    await addMemory(h);
    const err = h.fds.eventfd("err");
    await h.call(R.SET_VRING_ERR, encodeVringFile({ index: 0, noFd: false }), [err]);
    await h.call(R.SET_VRING_NUM, encodeVringState({ index: 0, num: 100 }));
    const a = RING0;
    await h.call(
      R.SET_VRING_ADDR,
      encodeVringAddr({
        index: 0,
        flags: 0,
        desc: UVA + BigInt(a.descAddr),
        used: UVA + BigInt(a.usedAddr),
        avail: UVA + BigInt(a.availAddr),
        log: 0n,
      }),
    );
    await h.call(R.SET_VRING_KICK, encodeVringFile({ index: 0, noFd: false }), [h.fds.eventfd()]);
    await h.call(R.SET_VRING_ENABLE, encodeVringState({ index: 0, num: 1 }));
    assert.deepEqual(h.device.events, []);
    assert.equal(h.fds.signalCount(err), 1);
    assert.match(h.logs.join("\n"), /ring 0 does not start: queue size 100/);
    await h.expectReply(
      R.GET_VRING_BASE,
      encodeVringState({ index: 0, num: 0 }),
      encodeVringState({ index: 0, num: 0 }),
    );
  });

  test("a misaligned ring (the queue refuses it) does not start; the connection stays", async () => {
    const h = new Harness();
    await negotiate(h);
    await addMemory(h);
    const err = h.fds.eventfd("err");
    await h.call(R.SET_VRING_ERR, encodeVringFile({ index: 0, noFd: false }), [err]);
    await h.call(R.SET_VRING_NUM, encodeVringState({ index: 0, num: 16 }));
    const a = RING0;
    const desc = UVA + BigInt(a.descAddr) + 8n; // not 16-aligned
    await h.call(
      R.SET_VRING_ADDR,
      encodeVringAddr({
        index: 0,
        flags: 0,
        desc,
        used: UVA + BigInt(a.usedAddr),
        avail: UVA + BigInt(a.availAddr),
        log: 0n,
      }),
    );
    await h.call(R.SET_VRING_KICK, encodeVringFile({ index: 0, noFd: false }), [h.fds.eventfd()]);
    await h.call(R.SET_VRING_ENABLE, encodeVringState({ index: 0, num: 1 }));
    assert.deepEqual(h.device.events, []);
    assert.equal(h.fds.signalCount(err), 1);
    assert.match(
      h.logs.join("\n"),
      /ring 0 does not start: descriptor table at 0x1008 is not 16-aligned/,
    );
    await h.expectReply(R.GET_QUEUE_NUM, undefined, encodeU64(2n));
  });

  test("a ring violation breaks the device: err fd signalled, every ring stops, a fresh setup recovers", async () => {
    const { h, guest, fds0, drv0 } = await running();
    const fds1 = await startRing(h, 1, RING1);
    const drv1 = driver(guest, RING1);
    submit(h, drv1, fds1.kick, 1);
    await h.idle();
    assert.equal(collect(drv1), 1);
    // The guest puts head 200 on a 16-entry ring.
    guest.writeU16(RING0.availAddr + VIRTQ_AVAIL_OFF_RING, 200);
    guest.atomicStoreU16(RING0.availAddr + VIRTQ_AVAIL_OFF_IDX, 1);
    h.fds.kick(fds0.kick);
    await h.idle();
    assert.equal(h.fds.signalCount(fds0.err), 1);
    assert.match(h.logs.join("\n"), /ring 0 broken: VIRTIO_ERR_HEAD_OUT_OF_RANGE/);
    assert.equal(h.dataplane.runningRings, 0, "every ring stopped");
    submit(h, drv1, fds1.kick, 1);
    await h.idle();
    assert.equal(collect(drv1), 0, "nothing is served while broken");
    // QEMU's stop (guest reset), then a fresh start.
    for (const index of [0, 1])
      await h.call(R.SET_VRING_ENABLE, encodeVringState({ index, num: 0 }));
    await h.call(R.GET_VRING_BASE, encodeVringState({ index: 0, num: 0 }));
    await h.call(R.GET_VRING_BASE, encodeVringState({ index: 1, num: 0 }));
    h.replies();
    void drv0;
    const drv = driver(guest, RING0); // the guest re-initialises its ring before the device starts it
    const fresh = await startRing(h, 0, RING0);
    submit(h, drv, fresh.kick, 1);
    await h.idle();
    assert.equal(collect(drv), 1);
  });

  test("RESET_DEVICE stops every ring and forgets their setup", async () => {
    const { h, fds0, drv0 } = await running();
    submit(h, drv0, fds0.kick, 1);
    await h.idle();
    assert.equal(ackOf(await h.call(R.RESET_DEVICE, undefined, [], NEED), R.RESET_DEVICE), 0n);
    assert.deepEqual(h.device.events.slice(-3), ["stop 0", "stopped 0", "reset"]);
    assert.equal(h.fds.isOpen(fds0.kick), false);
    assert.equal(h.mapper.live, 1, "memory stays mapped");
    await h.call(R.SET_FEATURES, encodeU64(FEATURES));
    const drv = driver(h.guestMemory(h.mapper.calls[0]!.fd), RING0); // the guest re-initialises its ring
    const again = await startRing(h, 0, RING0);
    submit(h, drv, again.kick, 1);
    await h.idle();
    assert.equal(collect(drv), 1);
  });

  test("EOF with requests in flight: close waits for them, then releases everything", async () => {
    const { h, fds0, drv0 } = await running();
    h.device.hold = true;
    submit(h, drv0, fds0.kick, 2);
    await h.idle();
    let closed = false;
    void h.conn.closed.then(() => (closed = true));
    h.socket.end();
    await turns();
    assert.equal(closed, false, "memory stays mapped while requests are in flight");
    assert.equal(h.mapper.live, 1);
    h.device.release(0);
    assert.equal((await h.conn.closed).error, undefined);
    assert.equal(collect(drv0), 2);
    h.assertReleased();
  });
});

interface Violation {
  readonly name: string;
  /** Sends the offending message (flags 0x9 where the header allows). */
  readonly send: (h: Harness) => void;
  /** A failure status (u64 1) is expected before the close. */
  readonly nack: number | undefined;
  readonly match: RegExp;
  readonly options?: HarnessOptions;
}

const vf = (index: number, noFd = false) => encodeVringFile({ index, noFd });
const violations: Violation[] = [
  {
    name: "unknown request id",
    send: (h) => h.send(99, undefined, [], NEED),
    nack: undefined,
    match: /request 99: unknown/,
  },
  {
    name: "bad version bits",
    send: (h) => h.send(R.SET_OWNER, undefined, [], 0xa),
    nack: undefined,
    match: /version bits 2/,
  },
  {
    name: "REPLY set on a request",
    send: (h) => h.send(R.SET_OWNER, undefined, [], 0xd),
    nack: undefined,
    match: /REPLY flag/,
  },
  {
    name: "payload above the cap",
    send: (h) =>
      h.socket.deliver(encodeHeader({ request: R.SET_FEATURES, flags: NEED, size: 5000 })),
    nack: R.SET_FEATURES,
    match: /exceeds 4096/,
  },
  {
    name: "payload not what the request needs",
    send: (h) => h.send(R.SET_VRING_NUM, new Uint8Array(4), [], NEED),
    nack: R.SET_VRING_NUM,
    match: /payload of 4 bytes, expected 8/,
  },
  {
    name: "wrong number of fds",
    send: (h) => h.send(R.SET_VRING_CALL, vf(1), [], NEED),
    nack: R.SET_VRING_CALL,
    match: /0 fds, expected 1/,
  },
  {
    name: "memory table with 0 regions",
    send: (h) => h.send(R.SET_MEM_TABLE, new Uint8Array(8), [], NEED),
    nack: R.SET_MEM_TABLE,
    match: /payload of 8 bytes/,
  },
  {
    name: "more regions than memory slots",
    options: { maxMemSlots: 1 },
    send: (h) =>
      h.send(
        R.ADD_MEM_REG,
        encodeSingleMemRegion(region(0x20_0000, 4096, UVA + 0x20_0000n)),
        [h.fds.memfd(4096)],
        NEED,
      ),
    nack: R.ADD_MEM_REG,
    match: /would hold 2 regions, at most 1/,
  },
  {
    name: "region of size 0",
    send: (h) =>
      h.send(
        R.ADD_MEM_REG,
        encodeSingleMemRegion(region(0x20_0000, 0, UVA + 0x20_0000n)),
        [h.fds.memfd(4096)],
        NEED,
      ),
    nack: R.ADD_MEM_REG,
    match: /size 0/,
  },
  {
    name: "region overflowing 2^64",
    send: (h) =>
      h.send(
        R.ADD_MEM_REG,
        encodeSingleMemRegion({
          ...region(0x20_0000, 8192, 0n),
          userspaceAddr: (1n << 64n) - 4096n,
        }),
        [h.fds.memfd(8192)],
        NEED,
      ),
    nack: R.ADD_MEM_REG,
    match: /overflows 2\^64/,
  },
  {
    name: "region overlapping another",
    send: (h) =>
      h.send(
        R.ADD_MEM_REG,
        encodeSingleMemRegion(region(0x8_0000, 4096, UVA + 0x1000_0000n)),
        [h.fds.memfd(4096)],
        NEED,
      ),
    nack: R.ADD_MEM_REG,
    match: /overlaps .* in guest-physical space/,
  },
  {
    name: "region the fd cannot map",
    send: (h) =>
      h.send(
        R.ADD_MEM_REG,
        encodeSingleMemRegion(region(0x20_0000, 8192, UVA + 0x20_0000n)),
        [h.fds.memfd(4096)],
        NEED,
      ),
    nack: R.ADD_MEM_REG,
    match: /cannot map region gpa 0x200000/,
  },
  {
    name: "ring index ≥ queue count",
    send: (h) => h.send(R.SET_VRING_NUM, encodeVringState({ index: 2, num: 16 }), [], NEED),
    nack: R.SET_VRING_NUM,
    match: /ring index 2 is out of range \(2 queues\)/,
  },
  {
    name: "ring address outside every region",
    send: (h) =>
      h.send(
        R.SET_VRING_ADDR,
        encodeVringAddr({
          index: 1,
          flags: 0,
          desc: 0x1000n,
          used: 0x2000n,
          avail: 0x3000n,
          log: 0n,
        }),
        [],
        NEED,
      ),
    nack: R.SET_VRING_ADDR,
    match:
      /ring 1: descriptor table at front-end address 0x1000 .*not inside any of the 1 memory regions/,
  },
  {
    name: "SET_VRING_ENABLE with 2",
    send: (h) => h.send(R.SET_VRING_ENABLE, encodeVringState({ index: 1, num: 2 }), [], NEED),
    nack: R.SET_VRING_ENABLE,
    match: /enable value 2 is not 0 or 1/,
  },
  {
    name: "GET_CONFIG larger than the config space",
    send: (h) =>
      h.send(
        R.GET_CONFIG,
        encodeConfig({ offset: 40, flags: 0, data: new Uint8Array(30) }),
        [],
        NEED,
      ),
    nack: undefined,
    match: /\[40, \+30\) is outside the 60-byte config space/,
  },
  {
    name: "SET_PROTOCOL_FEATURES with a feature not offered",
    send: (h) => h.send(R.SET_PROTOCOL_FEATURES, encodeU64(PF_ALL | (1n << 16n)), [], NEED),
    nack: R.SET_PROTOCOL_FEATURES,
    match: /protocol features 0x10000 were not offered/,
  },
  {
    name: "SET_FEATURES with a feature not offered",
    send: (h) => h.send(R.SET_FEATURES, encodeU64(FEATURES | (1n << 26n)), [], NEED),
    nack: R.SET_FEATURES,
    match: /features 0x4000000 were not offered/,
  },
  {
    name: "SET_FEATURES without VERSION_1",
    send: (h) => h.send(R.SET_FEATURES, encodeU64(1n << 30n), [], NEED),
    nack: R.SET_FEATURES,
    match: /VERSION_1 not set/,
  },
  {
    name: "SET_VRING_KICK in polling mode",
    send: (h) => h.send(R.SET_VRING_KICK, vf(1, true), [], NEED),
    nack: R.SET_VRING_KICK,
    match: /polling mode/,
  },
  {
    name: "SET_VRING_BASE above 0xffff",
    send: (h) => h.send(R.SET_VRING_BASE, encodeVringState({ index: 1, num: 0x1_0000 }), [], NEED),
    nack: R.SET_VRING_BASE,
    match: /base 65536 of ring 1 is not a u16/,
  },
  {
    name: "SET_VRING_ADDR asking for dirty logging",
    send: (h) =>
      h.send(
        R.SET_VRING_ADDR,
        encodeVringAddr({ index: 1, flags: 1, desc: UVA, used: UVA, avail: UVA, log: 0n }),
        [],
        NEED,
      ),
    nack: R.SET_VRING_ADDR,
    match: /dirty logging/,
  },
];

describe(
  "front-end violations close the connection and release everything",
  { timeout: 20_000 },
  () => {
    for (const v of violations) {
      test(v.name, async () => {
        // A running ring with a request in flight: teardown must wait for it, then unmap and close all.
        const { h, fds0, drv0 } = await running(v.options);
        h.device.hold = true;
        submit(h, drv0, fds0.kick, 1);
        await h.idle();
        let closed = false;
        void h.conn.closed.then(() => (closed = true));
        v.send(h);
        await turns();
        const replies = h.replies();
        if (v.nack === undefined) assert.deepEqual(replies, []);
        else assert.equal(ackOf(replies, v.nack), 1n);
        assert.equal(h.socket.closed, true);
        assert.equal(closed, false, "teardown waits for the in-flight request");
        h.device.release(0);
        const { error } = await h.conn.closed;
        assert.equal(error?.code, ErrorCode.VHOST_USER_PROTOCOL);
        assert.match(error.message, v.match);
        assert.equal(h.logs.length, 1, "one log line");
        assert.match(h.logs[0]!, /closing connection: VIRTIO_ERR_VHOST_USER_PROTOCOL/);
        assert.equal(collect(drv0), 1, "the in-flight request was completed");
        h.assertReleased();
      });
    }

    test("SET_VRING_ENABLE before VHOST_USER_F_PROTOCOL_FEATURES was negotiated", async () => {
      const h = new Harness();
      h.send(R.SET_VRING_ENABLE, encodeVringState({ index: 0, num: 1 }));
      const { error } = await h.conn.closed;
      assert.match(error!.message, /before VHOST_USER_F_PROTOCOL_FEATURES was negotiated/);
      h.assertReleased();
    });

    test("a ring address with no shared memory at all says how to fix it", async () => {
      const h = new Harness();
      await negotiate(h);
      h.send(
        R.SET_VRING_ADDR,
        encodeVringAddr({
          index: 0,
          flags: 0,
          desc: UVA,
          used: UVA + 0x1000n,
          avail: UVA + 0x800n,
          log: 0n,
        }),
      );
      const { error } = await h.conn.closed;
      assert.match(error!.message, /no memory region was shared.*memory-backend-memfd,share=on/);
      h.assertReleased();
    });

    test("an mmap failure on our side closes with VHOST_USER_BACKEND after a failure status", async () => {
      const h = new Harness();
      await negotiate(h);
      h.mapper.failNext = new VirtioError(ErrorCode.NATIVE, "mmap ENOMEM: cannot allocate memory");
      const fd = h.fds.memfd(MEM);
      h.send(R.ADD_MEM_REG, encodeSingleMemRegion(region(0, MEM, UVA)), [fd], NEED);
      const { error } = await h.conn.closed;
      assert.equal(error?.code, ErrorCode.VHOST_USER_BACKEND);
      assert.match(error.message, /cannot map region gpa 0x0 .*ENOMEM/);
      assert.equal(ackOf(h.replies(), R.ADD_MEM_REG), 1n);
      h.assertReleased();
    });

    test("a front-end that floods messages behind a pending one is cut off", async () => {
      const { h, fds0, drv0 } = await running();
      h.device.hold = true;
      submit(h, drv0, fds0.kick, 1);
      await h.idle();
      h.send(R.GET_VRING_BASE, encodeVringState({ index: 0, num: 0 })); // waits for the request
      const one = encodeMessage(R.SET_OWNER, 1, new Uint8Array(0));
      const flood = new Uint8Array(one.length * 1100);
      for (let i = 0; i < 1100; i++) flood.set(one, i * one.length);
      h.socket.deliver(flood);
      assert.equal(h.socket.closed, true);
      h.device.release(0);
      const { error } = await h.conn.closed;
      assert.match(error!.message, /more than 1024 messages queued/);
      h.assertReleased();
    });

    test("data arriving after the close is dropped and its fds closed", async () => {
      const h = new Harness();
      h.send(99);
      await h.conn.closed;
      assert.equal(h.socket.closed, true);
      h.assertReleased();
    });
  },
);

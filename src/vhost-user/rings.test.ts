/**
 * Rings on dataplane worker threads over real kernel objects: the control
 * thread answers the protocol, two runtimes map the memfd themselves, watch
 * the kick eventfds and signal the call / err eventfds.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { setImmediate as tick } from "node:timers/promises";
import { nodeThreadHost } from "../dataplane/node-threads.ts";
import { DataplanePool } from "../dataplane/pool.ts";
import { silentLogger } from "../log.ts";
import { GuestMemory } from "../memory/guest-memory.ts";
import {
  F_SEAL_SHRINK,
  MFD_ALLOW_SEALING,
  addSeals,
  close,
  eventfd,
  eventfdRead,
  eventfdWrite,
  ftruncate,
  mappingCount,
  memfdCreate,
  mmap,
  munmap,
  recvmsg,
  sendmsg,
  socketPair,
} from "../native/index.ts";
import { fdSnapshot, fdsOpenedSince, within } from "../native/test-support.ts";
import { DriverQueue } from "../ring/driver-queue.ts";
import { vringLayout, type VringLayout } from "../ring/layout.ts";
import { VhostUserRequest as R } from "../spec/vhost-user.ts";
import { VIRTQ_AVAIL_OFF_IDX, VIRTQ_AVAIL_OFF_RING } from "../spec/virtqueue.ts";
import {
  decodeHeader,
  decodeVringState,
  encodeMessage,
  encodeSingleMemRegion,
  encodeU64,
  encodeVringAddr,
  encodeVringFile,
  encodeVringState,
} from "./codec.ts";
import { VhostUserConnection } from "./connection.ts";
import { NativeEventFds, NativeSocket } from "./native-host.ts";
import { DataplaneRings } from "./rings.ts";
import { RecordingBackend } from "./test-support.ts";

const MEM = 1 << 20;
const UVA = 0x7f00_0000_0000n;

function startPool(): Promise<DataplanePool> {
  return DataplanePool.start({
    host: nodeThreadHost({ loaderRegister: import.meta.resolve("tsx/esm/api") }),
    module: new URL("./rings-test-worker.ts", import.meta.url),
    runtimes: 2,
    timeoutMs: 20_000,
    logger: silentLogger,
  });
}

async function reply(fd: number): Promise<Uint8Array> {
  for (let i = 0; i < 5000; i++) {
    const r = recvmsg(fd, 4096, 0);
    if (r !== null) {
      assert.equal(r.eof, false);
      assert.equal(decodeHeader(r.bytes).flags, 0x5);
      return new Uint8Array(r.bytes.subarray(12));
    }
    await tick();
  }
  throw new Error("no reply");
}

async function until(what: string, cond: () => boolean): Promise<void> {
  for (let i = 0; i < 5000; i++) {
    if (cond()) return;
    await tick();
  }
  assert.fail(`timed out waiting: ${what}`);
}

describe("DataplaneRings on worker threads", { timeout: 30_000 }, () => {
  test("two workers run two rings; broken report and stops cross threads; nothing leaks", async (t) => {
    const fdsBefore = fdSnapshot();
    const mappingsBefore = mappingCount();
    const pool = await within(startPool(), 20_000, "workers ready");
    t.after(() => pool.close());
    const handle = await pool.open(
      { kind: "recording", options: { numQueues: 2 } } as { kind: string },
      { queues: 2 },
    );

    const [backendFd, fe] = socketPair();
    const eventFds = new NativeEventFds();
    const logs: string[] = [];
    const conn = new VhostUserConnection(new NativeSocket(backendFd), {
      backend: new RecordingBackend({ numQueues: 2 }), // control side only: features, config
      dataplane: new DataplaneRings(handle),
      fds: eventFds,
      log: (l) => logs.push(l),
    });
    conn.start();
    let feOpen = true;
    t.after(async () => {
      await within(conn.close(), 10_000, "close").catch(() => {});
      if (feOpen) close(fe);
    });
    const send = (
      request: number,
      payload: Uint8Array = new Uint8Array(0),
      fds: number[] = [],
      flags = 1,
    ) => assert.ok(sendmsg(fe, encodeMessage(request, flags, payload), fds));

    send(R.SET_FEATURES, encodeU64(0x1_4000_0000n));
    send(R.SET_PROTOCOL_FEATURES, encodeU64(0xa209n));
    const memfd = memfdCreate("guest-ram", MFD_ALLOW_SEALING);
    ftruncate(memfd, MEM);
    addSeals(memfd, F_SEAL_SHRINK); // a back-end refuses memory that could shrink
    const ram = mmap(memfd, MEM, 0);
    t.after(() => void munmap(ram));
    const guest = new GuestMemory([{ guestPhysAddr: 0, size: MEM, buffer: ram }]);
    send(
      R.ADD_MEM_REG,
      encodeSingleMemRegion({
        guestPhysAddr: 0n,
        memorySize: BigInt(MEM),
        userspaceAddr: UVA,
        mmapOffset: 0n,
      }),
      [memfd],
      0x9,
    );
    assert.deepEqual([...(await reply(fe))], [0, 0, 0, 0, 0, 0, 0, 0]);
    close(memfd);

    const layouts: VringLayout[] = [vringLayout(16, 0x1000), vringLayout(16, 0xf000)];
    const drivers = layouts.map((l) => new DriverQueue<number>(guest, l));
    const fds = layouts.map(() => ({ kick: eventfd(), call: eventfd(), err: eventfd() }));
    t.after(() => fds.forEach((f) => [f.kick, f.call, f.err].forEach((fd) => close(fd))));
    const uva = (gpa: number) => UVA + BigInt(gpa);
    layouts.forEach((l, index) => {
      send(R.SET_VRING_NUM, encodeVringState({ index, num: 16 }));
      send(
        R.SET_VRING_ADDR,
        encodeVringAddr({
          index,
          flags: 0,
          desc: uva(l.descAddr),
          used: uva(l.usedAddr),
          avail: uva(l.availAddr),
          log: 0n,
        }),
      );
      send(R.SET_VRING_KICK, encodeVringFile({ index, noFd: false }), [fds[index]!.kick]);
      send(R.SET_VRING_CALL, encodeVringFile({ index, noFd: false }), [fds[index]!.call]);
      send(R.SET_VRING_ERR, encodeVringFile({ index, noFd: false }), [fds[index]!.err]);
      send(R.SET_VRING_ENABLE, encodeVringState({ index, num: 1 }));
    });

    const counts = [3, 2];
    drivers.forEach((drv, index) => {
      for (let i = 0; i < counts[index]!; i++)
        assert.ok(drv.add([{ addr: 0x8_0000, len: 16 }], [{ addr: 0x8_1000, len: 1 }], i));
      eventfdWrite(fds[index]!.kick, 1);
    });
    const done = [0, 0];
    await until("both rings served by the workers", () => {
      drivers.forEach((d, i) => {
        while (d.getUsed() !== null) done[i]!++;
      });
      return done[0] === 3 && done[1] === 2;
    });
    await until("ring 0's call fd signalled", () => eventfdRead(fds[0]!.call) !== null);
    await until("ring 1's call fd signalled", () => eventfdRead(fds[1]!.call) !== null);

    // The guest puts head 200 on ring 1 (16 entries): the worker reports it, the control side stops every ring.
    guest.writeU16(layouts[1]!.availAddr + VIRTQ_AVAIL_OFF_RING + 2 * 2, 200);
    guest.atomicStoreU16(layouts[1]!.availAddr + VIRTQ_AVAIL_OFF_IDX, 3);
    eventfdWrite(fds[1]!.kick, 1);
    await until("ring 1's err fd signalled", () => eventfdRead(fds[1]!.err) !== null);
    assert.match(logs.join("\n"), /ring 1 broken: VIRTIO_ERR_HEAD_OUT_OF_RANGE/);

    send(R.GET_VRING_BASE, encodeVringState({ index: 0, num: 0 }));
    assert.deepEqual(decodeVringState(await reply(fe)), { index: 0, num: 3 });
    send(R.GET_VRING_BASE, encodeVringState({ index: 1, num: 0 }));
    assert.deepEqual(decodeVringState(await reply(fe)), { index: 1, num: 2 });

    close(fe);
    feOpen = false;
    assert.equal((await within(conn.closed, 10_000, "connection closed")).error, undefined);
    await pool.close();
    for (const f of fds) [f.kick, f.call, f.err].forEach((fd) => close(fd));
    fds.length = 0;
    assert.equal(munmap(ram), true);
    assert.equal(mappingCount(), mappingsBefore, "the workers unmapped guest memory");
    assert.deepEqual(fdsOpenedSince(fdsBefore), []);
  });

  test("a device kind the runtime does not know: the open fails, and so does every ring call", async (t) => {
    const pool = await within(startPool(), 20_000, "workers ready");
    t.after(() => pool.close());
    const open = pool.open({ kind: "noSuchDevice" }, { queues: 1 });
    await assert.rejects(
      open,
      (e: unknown) => e instanceof TypeError && /unknown device kind noSuchDevice/.test(e.message),
    );
    const region = { gpa: 0, size: 4096, uva: UVA, mmapOffset: 0 };
    await assert.rejects(new DataplaneRings(open).addRegion(region, 3), /unknown device kind/);
  });
});

/**
 * The back-end over real kernel objects: a socketpair with SCM_RIGHTS, a
 * memfd mapped on both sides, eventfds for kick and call. The test plays the
 * front-end and the guest driver; at the end no fd, mapping or watch is left.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { setImmediate as tick } from "node:timers/promises";
import { ErrorCode } from "../errors.ts";
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
  watchCount,
} from "../native/index.ts";
import { fdSnapshot, fdsOpenedSince, within } from "../native/test-support.ts";
import { DriverQueue } from "../ring/driver-queue.ts";
import { vringLayout } from "../ring/layout.ts";
import { VhostUserRequest as R } from "../spec/vhost-user.ts";
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
import { NativeEventFds, NativeMapper, NativeSocket } from "./native-host.ts";
import { DataplaneRings } from "./rings.ts";
import { RecordingBackend, nativeTestDataplane } from "./test-support.ts";

const MEM = 1 << 20;
const UVA = 0x7f00_0000_0000n;

/** The test's front-end end of the socketpair. */
class Frontend {
  readonly fd: number;
  #closed = false;
  constructor(fd: number) {
    this.fd = fd;
  }

  /** Hangs up (once: a closed fd number may be reused). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    close(this.fd);
  }

  send(
    request: number,
    payload: Uint8Array = new Uint8Array(0),
    fds: number[] = [],
    flags = 1,
  ): void {
    assert.ok(sendmsg(this.fd, encodeMessage(request, flags, payload), fds));
  }

  /** The next reply (bounded wait). */
  async reply(): Promise<{ request: number; flags: number; payload: Uint8Array }> {
    for (let i = 0; i < 5000; i++) {
      const r = recvmsg(this.fd, 4096, 0);
      if (r !== null) {
        assert.equal(r.eof, false, "the back-end closed the connection");
        const h = decodeHeader(r.bytes);
        assert.equal(h.size, r.bytes.length - 12);
        return {
          request: h.request,
          flags: h.flags,
          payload: new Uint8Array(r.bytes.subarray(12)),
        };
      }
      await tick();
    }
    throw new Error("no reply from the back-end");
  }
}

/** Waits (bounded) until `cond` holds once; `cond` may consume what it checks. */
async function until(what: string, cond: () => boolean): Promise<void> {
  for (let i = 0; i < 5000; i++) {
    if (cond()) return;
    await tick();
  }
  assert.fail(`timed out waiting: ${what}`);
}

function start(mapper = new NativeMapper(), allowUnsealedMemory = false) {
  const [backendFd, frontendFd] = socketPair();
  const device = new RecordingBackend({ numQueues: 1 });
  const eventFds = new NativeEventFds();
  const logs: string[] = [];
  const conn = new VhostUserConnection(new NativeSocket(backendFd), {
    backend: device,
    dataplane: new DataplaneRings(nativeTestDataplane(device, mapper), { allowUnsealedMemory }),
    fds: eventFds,
    log: (l) => logs.push(l),
  });
  conn.start();
  const fe = new Frontend(frontendFd);
  /** On failure too: stop every watch so the test process can exit. */
  const cleanup = async (): Promise<void> => {
    await within(conn.close(), 10_000, "connection close").catch(() => {});
    fe.close();
  };
  return { conn, device, logs, fe, cleanup };
}

describe("vhost-user over real sockets, memfd and eventfds", { timeout: 20_000 }, () => {
  test("negotiate, map, run a ring, stop it, hang up: nothing leaks", async (t) => {
    const fdsBefore = fdSnapshot();
    const mappingsBefore = mappingCount();
    const watchesBefore = watchCount();
    const { conn, fe, cleanup } = start(new NativeMapper(64 * 1024)); // several windows per region
    t.after(cleanup);

    fe.send(R.GET_FEATURES);
    assert.equal((await fe.reply()).flags, 0x5);
    fe.send(R.SET_FEATURES, encodeU64(0x1_4000_0000n));
    fe.send(R.SET_PROTOCOL_FEATURES, encodeU64(0xa209n));

    // Guest RAM: a memfd the front-end maps too.
    const memfd = memfdCreate("guest-ram", MFD_ALLOW_SEALING);
    ftruncate(memfd, MEM);
    addSeals(memfd, F_SEAL_SHRINK); // a back-end refuses memory that could shrink
    const ram = mmap(memfd, MEM, 0);
    const guest = new GuestMemory([{ guestPhysAddr: 0, size: MEM, buffer: ram }]);
    fe.send(
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
    assert.deepEqual([...(await fe.reply()).payload], [0, 0, 0, 0, 0, 0, 0, 0]);
    close(memfd); // the back-end has its own copy of the fd (and closes it after mapping)

    const layout = vringLayout(16, 0xf000); // the used ring crosses the 64 KiB window boundary
    const drv = new DriverQueue<number>(guest, layout);
    const kick = eventfd();
    const call = eventfd();
    const uva = (gpa: number) => UVA + BigInt(gpa);
    fe.send(R.SET_VRING_NUM, encodeVringState({ index: 0, num: 16 }));
    fe.send(R.SET_VRING_BASE, encodeVringState({ index: 0, num: 0 }));
    fe.send(
      R.SET_VRING_ADDR,
      encodeVringAddr({
        index: 0,
        flags: 0,
        desc: uva(layout.descAddr),
        used: uva(layout.usedAddr),
        avail: uva(layout.availAddr),
        log: 0n,
      }),
    );
    fe.send(R.SET_VRING_KICK, encodeVringFile({ index: 0, noFd: false }), [kick]);
    fe.send(R.SET_VRING_CALL, encodeVringFile({ index: 0, noFd: false }), [call]);
    fe.send(R.SET_VRING_ENABLE, encodeVringState({ index: 0, num: 1 }));

    for (let i = 0; i < 3; i++)
      assert.ok(drv.add([{ addr: 0x8_0000, len: 16 }], [{ addr: 0x8_1000, len: 1 }], i));
    eventfdWrite(kick, 1);
    let used = 0;
    await until("three requests completed", () => {
      while (drv.getUsed() !== null) used++;
      return used === 3;
    });
    await until("the guest was notified", () => eventfdRead(call) !== null);

    fe.send(R.GET_VRING_BASE, encodeVringState({ index: 0, num: 0 }));
    const base = await fe.reply();
    assert.equal(base.request, R.GET_VRING_BASE);
    assert.deepEqual(decodeVringState(base.payload), { index: 0, num: 3 });

    fe.close();
    const { error } = await within(conn.closed, 10_000, "connection close");
    assert.equal(error, undefined);
    close(kick);
    close(call);
    assert.equal(munmap(ram), true);
    assert.deepEqual(fdsOpenedSince(fdsBefore), []);
    assert.equal(mappingCount(), mappingsBefore);
    assert.equal(watchCount(), watchesBefore);
  });

  test("a region larger than its file is refused before mapping (no SIGBUS)", async (t) => {
    const fdsBefore = fdSnapshot();
    const mappingsBefore = mappingCount();
    const { conn, fe, cleanup } = start();
    t.after(cleanup);
    fe.send(R.SET_FEATURES, encodeU64(0x1_4000_0000n));
    fe.send(R.SET_PROTOCOL_FEATURES, encodeU64(0xa209n));
    const memfd = memfdCreate("small");
    ftruncate(memfd, 4096);
    fe.send(
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
    close(memfd);
    assert.deepEqual([...(await fe.reply()).payload], [1, 0, 0, 0, 0, 0, 0, 0]);
    const { error } = await within(conn.closed, 10_000, "connection close");
    assert.equal(error?.code, ErrorCode.VHOST_USER_PROTOCOL);
    assert.match(error.message, /smaller than offset 0 \+ size 1048576/);
    fe.close();
    assert.deepEqual(fdsOpenedSince(fdsBefore), []);
    assert.equal(mappingCount(), mappingsBefore);
  });

  test("a region whose fd can shrink under the mapping is refused unless the operator allows it", async (t) => {
    const fdsBefore = fdSnapshot();
    const mappingsBefore = mappingCount();
    const region = encodeSingleMemRegion({
      guestPhysAddr: 0n,
      memorySize: BigInt(MEM),
      userspaceAddr: UVA,
      mmapOffset: 0n,
    });
    for (const allowed of [false, true]) {
      const { conn, fe, cleanup } = start(new NativeMapper(), allowed);
      t.after(cleanup);
      fe.send(R.SET_FEATURES, encodeU64(0x1_4000_0000n));
      fe.send(R.SET_PROTOCOL_FEATURES, encodeU64(0xa209n));
      const memfd = memfdCreate("unsealed");
      ftruncate(memfd, MEM);
      fe.send(R.ADD_MEM_REG, region, [memfd], 0x9);
      close(memfd);
      const status = (await fe.reply()).payload[0];
      if (allowed) {
        assert.equal(status, 0, "mapped when the operator allows unsealed memory");
        await within(conn.close(), 10_000, "connection close");
      } else {
        assert.equal(status, 1);
        const { error } = await within(conn.closed, 10_000, "connection close");
        assert.equal(error?.code, ErrorCode.VHOST_USER_PROTOCOL);
        assert.match(error.message, /can shrink under the mapping/);
      }
      fe.close();
    }
    assert.deepEqual(fdsOpenedSince(fdsBefore), []);
    assert.equal(mappingCount(), mappingsBefore);
  });
});

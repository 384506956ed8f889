/**
 * A raw vhost-user-blk front-end for the CLI tests that need what no proper
 * front-end does: guest memory in memfds it chooses (unsealed ones, which it
 * may shrink under the back-end's mapping). Two regions of {@link REGION}
 * bytes: region 0 at guest address 0, region 1 right after it; queue 0's
 * ring and request headers live in region 0. qemu/qemu
 * docs/interop/vhost-user.rst "Memory access", "Ring states".
 *
 * @module
 */
import assert from "node:assert/strict";
import { setImmediate as tick } from "node:timers/promises";
import { GuestMemory } from "../../src/memory/guest-memory.ts";
import {
  F_SEAL_SHRINK,
  MFD_ALLOW_SEALING,
  addSeals,
  close,
  connectUnix,
  eventfd,
  eventfdWrite,
  ftruncate,
  memfdCreate,
  mmap,
  munmap,
  recvmsg,
  sendmsg,
} from "../../src/native/index.ts";
import { DriverQueue } from "../../src/ring/driver-queue.ts";
import { vringLayout } from "../../src/ring/layout.ts";
import { VIRTIO_BLK_T_IN } from "../../src/spec/blk.ts";
import { VhostUserRequest as R } from "../../src/spec/vhost-user.ts";
import {
  decodeHeader,
  encodeMessage,
  encodeSingleMemRegion,
  encodeU64,
  encodeVringAddr,
  encodeVringFile,
  encodeVringState,
} from "../../src/vhost-user/codec.ts";

/** Bytes per region. */
export const REGION = 1 << 20;
const UVA = 0x7f00_0000_0000n;
const RING = 0x1000; // ring of 16 at gpa 0x1000 (region 0)
const HEADER = 0x8000; // request headers (region 0)
const STATUS = 0x9000; // status bytes (region 0)

/** A connected front-end with both regions shared and queue 0 running. */
export class RawBlkFrontend {
  readonly #fd: number;
  readonly memfds: readonly [number, number];
  readonly #buffers: ArrayBuffer[];
  readonly #queue: DriverQueue<number>;
  readonly #memory: GuestMemory;
  readonly #kick = eventfd();
  readonly #call = eventfd();
  #next = 0;

  private constructor(fd: number, sealed: readonly [boolean, boolean]) {
    this.#fd = fd;
    this.memfds = [memfd(sealed[0]), memfd(sealed[1])];
    this.#buffers = this.memfds.map((m) => mmap(m, REGION, 0));
    this.#memory = new GuestMemory(
      this.#buffers.map((buffer, i) => ({ guestPhysAddr: i * REGION, size: REGION, buffer })),
    );
    this.#queue = new DriverQueue<number>(this.#memory, vringLayout(16, RING));
  }

  /** Connects, negotiates, shares both regions (sealed against shrinking or not) and starts queue 0. */
  static async connect(path: string, sealed: readonly [boolean, boolean]): Promise<RawBlkFrontend> {
    const fe = new RawBlkFrontend(connectUnix(path), sealed);
    fe.#send(R.SET_FEATURES, encodeU64(0x1_4000_0000n)); // VERSION_1 | PROTOCOL_FEATURES
    fe.#send(R.SET_PROTOCOL_FEATURES, encodeU64(0xa209n)); // REPLY_ACK, CONFIGURE_MEM_SLOTS, ...
    for (const [i, m] of fe.memfds.entries()) {
      const region = {
        guestPhysAddr: BigInt(i * REGION),
        memorySize: BigInt(REGION),
        userspaceAddr: UVA + BigInt(i * REGION),
        mmapOffset: 0n,
      };
      fe.#send(R.ADD_MEM_REG, encodeSingleMemRegion(region), [m], 0x9);
      assert.equal(await fe.#ack(), 0n, `region ${i} mapped`);
    }
    const l = vringLayout(16, RING);
    const uva = (gpa: number): bigint => UVA + BigInt(gpa);
    fe.#send(R.SET_VRING_NUM, encodeVringState({ index: 0, num: 16 }));
    fe.#send(R.SET_VRING_BASE, encodeVringState({ index: 0, num: 0 }));
    const addr = { desc: uva(l.descAddr), used: uva(l.usedAddr), avail: uva(l.availAddr) };
    fe.#send(R.SET_VRING_ADDR, encodeVringAddr({ index: 0, flags: 0, ...addr, log: 0n }));
    fe.#send(R.SET_VRING_KICK, encodeVringFile({ index: 0, noFd: false }), [fe.#kick]);
    fe.#send(R.SET_VRING_CALL, encodeVringFile({ index: 0, noFd: false }), [fe.#call]);
    fe.#send(R.SET_VRING_ENABLE, encodeVringState({ index: 0, num: 1 }), [], 0x9);
    assert.equal(await fe.#ack(), 0n, "ring enabled");
    return fe;
  }

  /** Makes a read of `length` bytes from sector 0 into guest address `data` available; returns its status address. */
  submitRead(data: number, length: number): number {
    const n = this.#next++;
    const header = HEADER + 16 * n;
    this.#memory.fill(header, 16); // sector 0
    this.#memory.fill(header, 1, VIRTIO_BLK_T_IN);
    const status = STATUS + n;
    this.#memory.fill(status, 1, 0xff);
    const writable = [
      { addr: data, len: length },
      { addr: status, len: 1 },
    ];
    assert.ok(this.#queue.add([{ addr: header, len: 16 }], writable, n));
    return status;
  }

  /** Kicks queue 0. */
  kick(): void {
    eventfdWrite(this.#kick, 1);
  }

  /** Waits (bounded) for one used buffer and returns its status byte. */
  async completion(status: number): Promise<number> {
    for (let i = 0; i < 20_000; i++) {
      if (this.#queue.getUsed() !== null) {
        const byte = new Uint8Array(1);
        this.#memory.read(status, byte);
        return byte[0]!;
      }
      await tick();
    }
    assert.fail("no completion within the wait");
  }

  /** Waits (bounded) until the back-end closes the connection. */
  async closedByBackend(): Promise<void> {
    for (let i = 0; i < 20_000; i++) {
      const r = recvmsg(this.#fd, 4096, 0);
      if (r?.eof === true) return;
      await tick();
    }
    assert.fail("the back-end did not close the connection");
  }

  /** Hangs up and releases everything (the test's own mappings first). */
  close(): void {
    for (const b of this.#buffers) munmap(b);
    for (const fd of [this.#fd, this.#kick, this.#call, ...this.memfds]) close(fd);
  }

  #send(request: number, payload: Uint8Array, fds: number[] = [], flags = 1): void {
    assert.ok(sendmsg(this.#fd, encodeMessage(request, flags, payload), fds));
  }

  /** The next REPLY_ACK status (bounded wait). */
  async #ack(): Promise<bigint> {
    for (let i = 0; i < 20_000; i++) {
      const r = recvmsg(this.#fd, 4096, 0);
      if (r !== null) {
        assert.equal(r.eof, false, "the back-end closed the connection");
        assert.equal(decodeHeader(r.bytes).size, 8);
        return r.bytes.readBigUInt64LE(12);
      }
      await tick();
    }
    assert.fail("no reply from the back-end");
  }
}

function memfd(sealed: boolean): number {
  const fd = memfdCreate("raw-frontend", MFD_ALLOW_SEALING);
  ftruncate(fd, REGION);
  if (sealed) addSeals(fd, F_SEAL_SHRINK);
  return fd;
}

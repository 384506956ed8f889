/**
 * A raw vhost-user-blk front-end over a packed virtqueue, for the inflight
 * tests: the project's own front-end drives split rings only, so this one
 * plays QEMU's part by hand — VIRTIO_F_RING_PACKED negotiated, the inflight
 * buffer asked for once (GET_INFLIGHT_FD) and handed to every back-end it
 * connects to (SET_INFLIGHT_FD), and after a back-end crash the ring's base
 * sent as QEMU 7.2 sends it then: its own stale state, since GET_VRING_BASE
 * could not be answered. The driver side is the project's
 * `MockPackedQueue` over one sealed memfd region. qemu/qemu
 * docs/interop/vhost-user.rst "Inflight I/O tracking", "Vring descriptor
 * indices for packed virtqueues"; VIRTIO 1.2 §2.8 (packed ring), §5.2.6
 * (virtio-blk requests).
 *
 * @module
 */
import assert from "node:assert/strict";
import { setImmediate as tick } from "node:timers/promises";
import { GuestMemory } from "../../src/memory/guest-memory.ts";
import {
  F_SEAL_GROW,
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
import { PACKED_RING_START, encodePackedVringBase } from "../../src/ring/packed-ring-state.ts";
import { VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT } from "../../src/spec/blk.ts";
import { VhostUserRequest as R } from "../../src/spec/vhost-user.ts";
import { MockPackedQueue } from "../../src/testing/mock-packed-driver.ts";
import {
  decodeHeader,
  decodeInflight,
  encodeInflight,
  encodeMessage,
  encodeSingleMemRegion,
  encodeU64,
  encodeVringAddr,
  encodeVringFile,
  encodeVringState,
} from "../../src/vhost-user/codec.ts";

const REGION = 8 << 20;
const UVA = 0x7f00_0000_0000n;
const RING = 0x1000;
const HEADERS = 0x10000; // 16 bytes per request
const STATUS = 0x20000; // 1 byte per request
const IDS = 0x30000; // 20 bytes per GET_ID
const DATA = 0x100000;
/** VERSION_1 | RING_PACKED | VHOST_USER_F_PROTOCOL_FEATURES. */
const FEATURES = (1n << 32n) | (1n << 34n) | (1n << 30n);
/** MQ, REPLY_ACK, CONFIG, INFLIGHT_SHMFD, RESET_DEVICE, CONFIGURE_MEM_SLOTS. */
const PROTOCOL_FEATURES = 0xb209n;

/** One request as the driver made it available. */
export interface Request {
  readonly n: number;
  readonly id: number;
  readonly type: number;
}

/** The driver's side: guest memory, the packed ring and the inflight buffer, kept across back-ends. */
export class PackedDriver {
  readonly size: number;
  readonly memfd: number;
  readonly #buffer: ArrayBuffer;
  readonly memory: GuestMemory;
  readonly ring: MockPackedQueue;
  /** The inflight buffer, once a back-end gave it (GET_INFLIGHT_FD). */
  inflight: { fd: number; size: bigint } | null = null;
  readonly #pending = new Map<number, Request>();
  #next = 0;

  constructor(size: number) {
    this.size = size;
    this.memfd = memfdCreate("packed-frontend", MFD_ALLOW_SEALING);
    ftruncate(this.memfd, REGION);
    addSeals(this.memfd, F_SEAL_SHRINK | F_SEAL_GROW);
    this.#buffer = mmap(this.memfd, REGION, 0);
    this.memory = new GuestMemory([{ guestPhysAddr: 0, size: REGION, buffer: this.#buffer }]);
    this.ring = new MockPackedQueue(this.memory, size, RING);
  }

  /** Makes a write of `data` at `offset` available (header, data, status: 3 ring descriptors). */
  write(offset: number, data: Uint8Array): Request {
    const n = this.#next;
    const at = DATA + n * 0x10000;
    assert.ok(data.length <= 0x10000);
    this.memory.write(at, data);
    return this.#add(VIRTIO_BLK_T_OUT, offset, [{ addr: at, len: data.length }], []);
  }

  /** Makes a read of `len` bytes at `offset` available; the data lands at {@link dataOf}. */
  read(offset: number, len: number): Request {
    const at = DATA + this.#next * 0x10000;
    return this.#add(VIRTIO_BLK_T_IN, offset, [], [{ addr: at, len, writable: true }]);
  }

  /** Makes a GET_ID available (its 20 bytes land at {@link idOf}). */
  getId(): Request {
    const at = IDS + 20 * this.#next;
    return this.#add(VIRTIO_BLK_T_GET_ID, 0, [], [{ addr: at, len: 20, writable: true }]);
  }

  /** The data a read landed. */
  dataOf(r: Request, len: number): Uint8Array {
    const out = new Uint8Array(len);
    this.memory.read(DATA + r.n * 0x10000, out);
    return out;
  }

  /** The serial a GET_ID returned. */
  idOf(r: Request): string {
    const out = new Uint8Array(20);
    this.memory.read(IDS + 20 * r.n, out);
    return new TextDecoder().decode(out).replace(/\0+$/, "");
  }

  /**
   * Takes every used descriptor published: each must name a request the
   * driver waits for (a repeated one fails here), with status OK.
   */
  collect(): Request[] {
    const done: Request[] = [];
    for (let u = this.ring.popUsed(); u !== null; u = this.ring.popUsed()) {
      const r = this.#pending.get(u.id);
      assert.ok(r !== undefined, `buffer ID ${u.id} completed, but no request waits under it`);
      this.#pending.delete(u.id);
      const status = new Uint8Array(1);
      this.memory.read(STATUS + r.n, status);
      assert.equal(status[0], 0, `request ${r.n} status`);
      done.push(r);
    }
    return done;
  }

  /** Requests made available and not completed. */
  get pending(): number {
    return this.#pending.size;
  }

  close(): void {
    munmap(this.#buffer);
    close(this.memfd);
    if (this.inflight !== null) close(this.inflight.fd);
  }

  #add(
    type: number,
    offset: number,
    readable: { addr: number; len: number }[],
    writable: { addr: number; len: number; writable: true }[],
  ): Request {
    const n = this.#next++;
    const header = HEADERS + 16 * n;
    this.memory.fill(header, 16);
    new DataView(this.#buffer).setUint32(header, type, true);
    new DataView(this.#buffer).setBigUint64(header + 8, BigInt(offset / 512), true);
    this.memory.fill(STATUS + n, 1, 0xff);
    const id = this.ring.addChain([
      { addr: header, len: 16 },
      ...readable,
      ...writable,
      { addr: STATUS + n, len: 1, writable: true },
    ]);
    const r = { n, id, type };
    this.#pending.set(id, r);
    return r;
  }
}

/** One connection to a back-end, set up as QEMU's vhost-user-blk does at a start or a reconnect. */
export class PackedConnection {
  readonly #fd: number;
  readonly #kick = eventfd();
  readonly #call = eventfd();

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /**
   * Connects, negotiates RING_PACKED and INFLIGHT_SHMFD, shares memory, gets
   * the inflight buffer the first time and hands it over, and starts queue 0
   * at `base` (default: the ring's start, what QEMU 7.2 sends after a crash
   * when nothing was stopped cleanly before). Returns the GET_INFLIGHT_FD
   * reply's size the first time.
   */
  static async open(
    path: string,
    drv: PackedDriver,
    base = encodePackedVringBase(PACKED_RING_START),
  ): Promise<PackedConnection> {
    const c = new PackedConnection(connectUnix(path));
    c.#send(R.SET_FEATURES, encodeU64(FEATURES));
    c.#send(R.SET_PROTOCOL_FEATURES, encodeU64(PROTOCOL_FEATURES));
    const region = {
      guestPhysAddr: 0n,
      memorySize: BigInt(REGION),
      userspaceAddr: UVA,
      mmapOffset: 0n,
    };
    c.#send(R.ADD_MEM_REG, encodeSingleMemRegion(region), [drv.memfd], 0x9);
    assert.equal(await c.#ack(), 0n, "memory shared");
    if (drv.inflight === null) drv.inflight = await c.#getInflight(drv.size);
    const d = { mmapSize: drv.inflight.size, mmapOffset: 0n, numQueues: 1, queueSize: drv.size };
    c.#send(R.SET_INFLIGHT_FD, encodeInflight(d), [drv.inflight.fd], 0x9);
    assert.equal(await c.#ack(), 0n, "inflight buffer taken");
    const uva = (gpa: number): bigint => UVA + BigInt(gpa);
    c.#send(R.SET_VRING_NUM, encodeVringState({ index: 0, num: drv.size }));
    c.#send(R.SET_VRING_BASE, encodeVringState({ index: 0, num: base }));
    const addr = { desc: uva(drv.ring.descAddr), avail: uva(drv.ring.driverAddr) };
    c.#send(
      R.SET_VRING_ADDR,
      encodeVringAddr({ index: 0, flags: 0, ...addr, used: uva(drv.ring.deviceAddr), log: 0n }),
    );
    c.#send(R.SET_VRING_KICK, encodeVringFile({ index: 0, noFd: false }), [c.#kick]);
    c.#send(R.SET_VRING_CALL, encodeVringFile({ index: 0, noFd: false }), [c.#call]);
    c.#send(R.SET_VRING_ENABLE, encodeVringState({ index: 0, num: 1 }), [], 0x9);
    assert.equal(await c.#ack(), 0n, "ring enabled");
    return c;
  }

  /** Kicks queue 0. */
  kick(): void {
    eventfdWrite(this.#kick, 1);
  }

  close(): void {
    for (const fd of [this.#fd, this.#kick, this.#call]) close(fd);
  }

  /** GET_INFLIGHT_FD for one queue of `size`: the buffer's fd and size. */
  async #getInflight(size: number): Promise<{ fd: number; size: bigint }> {
    const d = { mmapSize: 0n, mmapOffset: 0n, numQueues: 1, queueSize: size };
    this.#send(R.GET_INFLIGHT_FD, encodeInflight(d));
    const r = await this.#receive(1);
    assert.equal(decodeHeader(r.bytes).request, R.GET_INFLIGHT_FD);
    const reply = decodeInflight(r.bytes.subarray(12));
    assert.equal(r.fds.length, 1, "one fd with the reply");
    assert.deepEqual([reply.mmapOffset, reply.numQueues, reply.queueSize], [0n, 1, size]);
    return { fd: r.fds[0]!, size: reply.mmapSize };
  }

  #send(request: number, payload: Uint8Array, fds: number[] = [], flags = 1): void {
    assert.ok(sendmsg(this.#fd, encodeMessage(request, flags, payload), fds));
  }

  /** The next REPLY_ACK status. */
  async #ack(): Promise<bigint> {
    const r = await this.#receive(0);
    assert.equal(decodeHeader(r.bytes).size, 8);
    return r.bytes.readBigUInt64LE(12);
  }

  /** The next message (bounded wait). */
  async #receive(maxFds: number): Promise<{ bytes: Buffer; fds: number[] }> {
    for (let i = 0; i < 20_000; i++) {
      const r = recvmsg(this.#fd, 4096, maxFds);
      if (r !== null) {
        assert.equal(r.eof, false, "the back-end closed the connection");
        return r;
      }
      await tick();
    }
    assert.fail("no reply from the back-end");
  }
}

/** Waits (bounded) until `drv` has collected `n` more completions; returns them. */
export async function completions(drv: PackedDriver, n: number, what: string): Promise<Request[]> {
  const done: Request[] = [];
  for (let i = 0; i < 200_000 && done.length < n; i++) {
    done.push(...drv.collect());
    if (done.length < n) await tick();
  }
  assert.equal(done.length, n, `${what}: ${done.length} of ${n} completed`);
  return done;
}

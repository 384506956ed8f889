/**
 * vhost-user front-end: the driver side of the protocol, so a program can use
 * any vhost-user back-end (qemu-storage-daemon, this project's daemon, ...)
 * directly, the way libblkio does. qemu/qemu docs/interop/vhost-user.rst
 * "Communication", "Starting and stopping rings", "Memory access", "REPLY_ACK",
 * "Front-end message types"; docs/vhost-user.md
 *
 * Connection and negotiation follow libblkio's order (./frontend-negotiate.ts).
 * Memory is shared with ADD_MEM_REG, or SET_MEM_TABLE when
 * CONFIGURE_MEM_SLOTS is absent. Rings start with SET_VRING_* and stop with
 * GET_VRING_BASE; a kick writes 1 to the ring's kick eventfd, and the call
 * eventfd is watched on the calling thread's event loop
 * (./frontend-ring.ts).
 *
 * The back-end is untrusted: a malformed reply closes the connection with
 * `VIRTIO_ERR_VHOST_USER_PROTOCOL` (see ./frontend-channel.ts), every ring's
 * eventfds are released, and {@link VhostUserFrontend.closed} resolves with
 * the error so that the driver can fail what it has in flight.
 *
 * Node-only (native addon).
 *
 * @module
 */
import { VirtioError } from "../errors.ts";
import { connectUnix } from "../native/index.ts";
import { ringLayoutOf, ringSizeProblem } from "../ring/ring-layout.ts";
import {
  VHOST_MEMORY_BASELINE_NREGIONS,
  VhostUserProtocolFeature as PF,
  VhostUserRequest as R,
} from "../spec/vhost-user.ts";
import {
  encodeInflight,
  encodeMemoryTable,
  encodeSingleMemRegion,
  type InflightDescription,
  type MemRegion,
} from "./codec.ts";
import { ControlChannel, type InflightReply } from "./frontend-channel.ts";
import {
  checkOptions,
  negotiate,
  readConfig,
  type Negotiated,
  type VhostUserFrontendOptions,
} from "./frontend-negotiate.ts";
import {
  closeQuietly,
  createRing,
  sendRingStart,
  sendRingStop,
  type FrontendRing,
  type Ring,
  type StartRingOptions,
} from "./frontend-ring.ts";
import { decodeStoppedRing, type StoppedRing } from "./frontend-vring-base.ts";
import type { FdCloser, VhostUserSocket } from "./host.ts";
import { NativeSocket } from "./native-host.ts";

export {
  FRONTEND_PROTOCOL_FEATURES,
  FRONTEND_REQUIRED_PROTOCOL_FEATURES,
  type VhostUserFrontendOptions,
} from "./frontend-negotiate.ts";
export type { FrontendRing, FrontendRingAddresses, StartRingOptions } from "./frontend-ring.ts";
export type { StoppedRing } from "./frontend-vring-base.ts";
export type { InflightReply } from "./frontend-channel.ts";
export type { InflightDescription } from "./codec.ts";

/** Memory shared with the back-end: one region and its fd (see {@link SharedGuestMemory}). */
export interface FrontendMemoryRegion {
  readonly region: MemRegion;
  readonly fd: number;
}

/** Before the handshake: what a back-end offers without any feature. */
const NOT_NEGOTIATED: Negotiated = {
  deviceFeatures: 0n,
  features: 0n,
  deviceProtocolFeatures: 0n,
  protocolFeatures: 0n,
  maxQueues: 1,
  maxMemSlots: VHOST_MEMORY_BASELINE_NREGIONS,
  config: new Uint8Array(0),
};

/**
 * A connection to a vhost-user back-end, negotiated and ready for memory and
 * rings.
 *
 * @example
 * ```ts
 * const fe = await VhostUserFrontend.connect("/run/vhost.sock", { features: 1n << 32n, configSize: 60 });
 * const mem = SharedGuestMemory.create({ size: 1 << 20 });
 * await fe.addMemory(mem);
 * const ring = await fe.startRing(0, { ...vringLayout(128, mem.alloc(8192, 4096)), onCall: drain });
 * ring.kick();
 * await fe.close();
 * mem.close();
 * ```
 */
export class VhostUserFrontend {
  readonly #channel: ControlChannel;
  readonly #rings = new Map<number, Ring>();
  readonly #regions: FrontendMemoryRegion[] = [];
  readonly #closed: Promise<VirtioError>;
  #resolveClosed!: (e: VirtioError) => void;
  #closing = false;
  #n: Negotiated = NOT_NEGOTIATED;

  private constructor(socket: VhostUserSocket, fds: FdCloser, replyTimeoutMs: number | undefined) {
    this.#closed = new Promise((resolve) => (this.#resolveClosed = resolve));
    this.#channel = new ControlChannel(socket, {
      fds,
      ...(replyTimeoutMs === undefined ? {} : { replyTimeoutMs }),
      onClose: (error) => this.#onChannelClosed(error),
    });
  }

  /**
   * Connects to the back-end listening on the Unix socket `path` and
   * negotiates. On any failure the connection is closed and the promise
   * rejects (`VIRTIO_ERR_VHOST_USER_INCOMPATIBLE` when the back-end lacks a
   * required feature, `..._PROTOCOL` for a malformed reply, `..._REFUSED`
   * for a failure status, `..._DISCONNECTED` when it hangs up, a
   * `NativeError` when nobody listens).
   */
  static async connect(
    path: string,
    options: VhostUserFrontendOptions,
  ): Promise<VhostUserFrontend> {
    checkOptions(options);
    return VhostUserFrontend.open(new NativeSocket(connectUnix(path)), options);
  }

  /**
   * Like {@link connect} over an already connected socket (owned from now on),
   * e.g. one end of a socketpair.
   */
  static async open(
    socket: VhostUserSocket,
    options: VhostUserFrontendOptions,
    fds: FdCloser = { close: closeQuietly },
  ): Promise<VhostUserFrontend> {
    try {
      checkOptions(options);
    } catch (e) {
      socket.close();
      throw e;
    }
    const fe = new VhostUserFrontend(socket, fds, options.replyTimeoutMs);
    try {
      fe.#n = await negotiate(fe.#channel, options);
    } catch (e) {
      fe.#channel.close(e instanceof VirtioError ? e : undefined);
      throw e;
    }
    return fe;
  }

  /** Virtio features the back-end offered (GET_FEATURES). */
  get deviceFeatures(): bigint {
    return this.#n.deviceFeatures;
  }

  /** Virtio features acknowledged with SET_FEATURES (bit 30 included). */
  get features(): bigint {
    return this.#n.features;
  }

  /** Protocol features the back-end offered. */
  get deviceProtocolFeatures(): bigint {
    return this.#n.deviceProtocolFeatures;
  }

  /** Protocol features acknowledged with SET_PROTOCOL_FEATURES. */
  get protocolFeatures(): bigint {
    return this.#n.protocolFeatures;
  }

  /** Rings the back-end supports (GET_QUEUE_NUM with MQ, else 1), at most 256. */
  get maxQueues(): number {
    return this.#n.maxQueues;
  }

  /** Memory regions the back-end accepts (GET_MAX_MEM_SLOTS, else 8). */
  get maxMemSlots(): number {
    return this.#n.maxMemSlots;
  }

  /** Config space read during the handshake (`configSize` bytes from offset 0; a copy). */
  get config(): Uint8Array {
    return this.#n.config.slice();
  }

  /** Resolves with the reason once the connection has closed (for whatever cause). */
  get closed(): Promise<VirtioError> {
    return this.#closed;
  }

  /** Why the connection closed, or undefined while it is open. */
  get error(): VirtioError | undefined {
    return this.#channel.error;
  }

  /** True if protocol feature `bit` (a {@link PF} value) was negotiated. */
  hasProtocolFeature(bitNumber: number): boolean {
    return (this.#n.protocolFeatures & (1n << BigInt(bitNumber))) !== 0n;
  }

  /**
   * Reads `size` bytes of config space at `offset` (GET_CONFIG). The reply
   * must echo offset, size and flags and hold exactly `size` bytes.
   */
  getConfig(offset: number, size: number): Promise<Uint8Array> {
    return readConfig(this.#channel, offset, size);
  }

  /**
   * Asks the back-end for its inflight tracking buffer for `numQueues` rings
   * of `queueSize` entries (GET_INFLIGHT_FD; INFLIGHT_SHMFD negotiated). The
   * fd is the caller's: keep it, and hand buffer and fd to a back-end that
   * replaces this one ({@link setInflight}) so it resubmits what was in flight.
   */
  getInflight(numQueues: number, queueSize: number): Promise<InflightReply> {
    this.#checkInflight(numQueues, queueSize);
    const d = { mmapSize: 0n, mmapOffset: 0n, numQueues, queueSize };
    return this.#channel.request(R.GET_INFLIGHT_FD, encodeInflight(d), {
      kind: "inflight",
      numQueues,
      queueSize,
    });
  }

  /** Hands the inflight buffer to the back-end (SET_INFLIGHT_FD) before its rings start; the caller keeps `fd`. */
  async setInflight(description: InflightDescription, fd: number): Promise<void> {
    this.#checkInflight(description.numQueues, description.queueSize);
    await this.#channel.request(R.SET_INFLIGHT_FD, encodeInflight(description), undefined, [fd]);
  }

  #checkInflight(numQueues: number, queueSize: number): void {
    if (!this.hasProtocolFeature(PF.INFLIGHT_SHMFD))
      throw new TypeError("the back-end did not negotiate INFLIGHT_SHMFD");
    if (!Number.isInteger(numQueues) || numQueues < 1 || numQueues > this.maxQueues)
      throw new RangeError(`numQueues must be in 1..${this.maxQueues}, got ${numQueues}`);
    const problem = ringSizeProblem(queueSize, this.features);
    if (problem !== null) throw new RangeError(`queueSize: ${problem}`);
  }

  /**
   * Shares a memory region with the back-end: ADD_MEM_REG with its fd, or,
   * without CONFIGURE_MEM_SLOTS, SET_MEM_TABLE with every region shared so
   * far. The caller keeps owning the region and its fd, and must not unmap
   * it before the connection closed.
   */
  async addMemory(mem: FrontendMemoryRegion): Promise<void> {
    if (this.#regions.length >= this.maxMemSlots)
      throw new RangeError(`the back-end accepts at most ${this.maxMemSlots} memory regions`);
    if (this.hasProtocolFeature(PF.CONFIGURE_MEM_SLOTS)) {
      await this.#channel.request(R.ADD_MEM_REG, encodeSingleMemRegion(mem.region), undefined, [
        mem.fd,
      ]);
      this.#regions.push(mem);
      return;
    }
    const table = [...this.#regions, mem];
    await this.#channel.request(
      R.SET_MEM_TABLE,
      encodeMemoryTable(table.map((m) => m.region)),
      undefined,
      table.map((m) => m.fd),
    );
    this.#regions.push(mem);
  }

  /**
   * Withdraws a region shared with {@link addMemory} (REM_MEM_REG, or
   * SET_MEM_TABLE with the others). Stop the rings that live in it first.
   */
  async removeMemory(mem: FrontendMemoryRegion): Promise<void> {
    const i = this.#regions.indexOf(mem);
    if (i < 0) throw new RangeError("this memory region was not added");
    if (this.hasProtocolFeature(PF.CONFIGURE_MEM_SLOTS)) {
      await this.#channel.request(R.REM_MEM_REG, encodeSingleMemRegion(mem.region));
    } else {
      const rest = this.#regions.filter((m) => m !== mem);
      if (rest.length === 0)
        throw new RangeError("without CONFIGURE_MEM_SLOTS the last region cannot be removed");
      await this.#channel.request(
        R.SET_MEM_TABLE,
        encodeMemoryTable(rest.map((m) => m.region)),
        undefined,
        rest.map((m) => m.fd),
      );
    }
    this.#regions.splice(this.#regions.indexOf(mem), 1);
  }

  /**
   * Starts ring `index` (SET_VRING_NUM, SET_VRING_BASE, SET_VRING_ADDR,
   * SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ENABLE 1) in the layout the
   * negotiated features select (packed with VIRTIO_F_RING_PACKED: its base
   * defaults to a fresh packed ring's, its size need not be a power of
   * two). The ring must be initialised in shared memory (`openDriverRing`
   * does it).
   *
   * @throws {RangeError} for an index beyond {@link maxQueues}, a ring
   *   already started, or a size the layout does not allow.
   */
  async startRing(index: number, o: StartRingOptions): Promise<FrontendRing> {
    if (!Number.isInteger(index) || index < 0 || index >= this.maxQueues)
      throw new RangeError(`ring index ${index} is outside 0..${this.maxQueues - 1}`);
    if (this.#rings.has(index)) throw new RangeError(`ring ${index} is already started`);
    if (this.#channel.error !== undefined) throw this.#channel.error;
    const problem = ringSizeProblem(o.size, this.features);
    if (problem !== null) throw new RangeError(problem);
    const ring = createRing(index, o.onCall);
    this.#rings.set(index, ring);
    try {
      await sendRingStart(this.#channel, ring, ringLayoutOf(this.features), o);
    } catch (e) {
      this.#rings.delete(index);
      ring.release();
      throw e;
    }
    return ring;
  }

  /**
   * Stops ring `index` (GET_VRING_BASE: "stop the ring") and releases its
   * eventfds. Resolves with where the back-end reports it would resume,
   * decoded for the ring's layout (split: the next avail index; packed: both
   * positions and wrap counters). Requests still in flight may complete no
   * more.
   */
  async stopRing(index: number): Promise<StoppedRing> {
    const ring = this.#rings.get(index);
    if (ring === undefined) throw new RangeError(`ring ${index} is not started`);
    try {
      return decodeStoppedRing(
        ringLayoutOf(this.features),
        await sendRingStop(this.#channel, index),
      );
    } finally {
      this.#rings.delete(index);
      ring.release();
    }
  }

  /**
   * Stops every started ring (GET_VRING_BASE) and closes the connection
   * (idempotent). Memory regions stay the caller's to close afterwards.
   * Never rejects: a failing stop still closes.
   */
  async close(): Promise<void> {
    if (this.#closing) {
      await this.#closed;
      return;
    }
    this.#closing = true;
    for (const index of [...this.#rings.keys()]) {
      if (this.#channel.error !== undefined) break;
      try {
        await this.stopRing(index);
      } catch {
        // The channel error (if any) is reported by `closed`.
      }
    }
    this.#channel.close();
    await this.#closed;
  }

  /**
   * Closes the connection at once, without stopping the rings first (the
   * back-end sees end of file and drops them). Idempotent. {@link closed}
   * resolves with `VIRTIO_ERR_VHOST_USER_DISCONNECTED`.
   */
  destroy(): void {
    this.#closing = true;
    this.#channel.close();
  }

  #onChannelClosed(error: VirtioError): void {
    for (const ring of this.#rings.values()) ring.release();
    this.#rings.clear();
    this.#regions.length = 0;
    this.#resolveClosed(error);
  }
}

/**
 * vhost-user front-end: the driver side of the protocol, so a program can use
 * any vhost-user back-end (qemu-storage-daemon, this project's daemon, ...)
 * directly, the way libblkio does. qemu/qemu docs/interop/vhost-user.rst
 * "Communication", "Starting and stopping rings", "Memory access", "REPLY_ACK",
 * "Front-end message types"; docs/vhost-user.md
 *
 * Connection and negotiation follow libblkio's order: SET_OWNER,
 * GET_FEATURES (bit 30 VHOST_USER_F_PROTOCOL_FEATURES required),
 * SET_FEATURES, GET_PROTOCOL_FEATURES (REPLY_ACK and CONFIG required;
 * CONFIGURE_MEM_SLOTS and MQ kept when offered), SET_PROTOCOL_FEATURES, then
 * NEED_REPLY on every request, GET_QUEUE_NUM (with MQ), GET_MAX_MEM_SLOTS
 * (with CONFIGURE_MEM_SLOTS), GET_CONFIG. Memory is shared with ADD_MEM_REG,
 * or SET_MEM_TABLE when CONFIGURE_MEM_SLOTS is absent. A ring starts with
 * SET_VRING_NUM, SET_VRING_BASE, SET_VRING_ADDR, SET_VRING_KICK,
 * SET_VRING_CALL, SET_VRING_ENABLE(1) and stops with GET_VRING_BASE.
 *
 * Notifications: a kick writes 1 to the ring's kick eventfd; the call
 * eventfd is watched on the calling thread's event loop, read (reset) and
 * reported to the ring's `onCall`.
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
import { ErrorCode, VirtioError } from "../errors.ts";
import {
  close as closeFd,
  connectUnix,
  eventfd,
  eventfdRead,
  eventfdWrite,
  PollEvent,
  watch,
  type FdWatch,
} from "../native/index.ts";
import { VHOST_USER_F_PROTOCOL_FEATURES } from "../spec/virtio.ts";
import { isValidQueueSize } from "../spec/virtqueue.ts";
import {
  VHOST_MEMORY_BASELINE_NREGIONS,
  VHOST_USER_MAX_CONFIG_SIZE,
  VHOST_USER_VRING_IDX_MASK,
  VhostUserProtocolFeature as PF,
  VhostUserRequest as R,
} from "../spec/vhost-user.ts";
import {
  encodeConfig,
  encodeMemoryTable,
  encodeSingleMemRegion,
  encodeU64,
  encodeVringAddr,
  encodeVringFile,
  encodeVringState,
  type MemRegion,
} from "./codec.ts";
import { ControlChannel } from "./frontend-channel.ts";
import type { FdCloser, VhostUserSocket } from "./host.ts";
import { NativeSocket } from "./native-host.ts";

const bit = (n: number): bigint => 1n << BigInt(n);

/** Protocol features the front-end cannot work without. */
export const FRONTEND_REQUIRED_PROTOCOL_FEATURES = bit(PF.REPLY_ACK) | bit(PF.CONFIG);
/** Protocol features the front-end uses when offered (everything else is declined). */
export const FRONTEND_PROTOCOL_FEATURES =
  FRONTEND_REQUIRED_PROTOCOL_FEATURES | bit(PF.CONFIGURE_MEM_SLOTS) | bit(PF.MQ);

/** Options of {@link VhostUserFrontend.connect}. */
export interface VhostUserFrontendOptions {
  /**
   * Virtio feature bits the driver can use: a mask (the front-end
   * acknowledges its intersection with what the back-end offers), or a
   * function from the offered bits to the accepted ones (it may throw to
   * refuse the device; the connection then closes). Bit 30
   * (VHOST_USER_F_PROTOCOL_FEATURES) is added either way.
   */
  readonly features: bigint | ((offered: bigint) => bigint);
  /** Bytes of config space to read during the handshake (0..256, default 0: none). */
  readonly configSize?: number;
  /**
   * Milliseconds to wait for each reply before the back-end counts as hung
   * and the connection closes (default 30 000; 0 waits forever).
   */
  readonly replyTimeoutMs?: number;
}

/** Where a ring lives in guest memory (guest-physical addresses, also sent as user addresses). */
export interface FrontendRingAddresses {
  /** Queue size (power of two, 1..32768). */
  readonly size: number;
  readonly descAddr: number;
  readonly availAddr: number;
  readonly usedAddr: number;
}

/** Options of {@link VhostUserFrontend.startRing}. */
export interface StartRingOptions extends FrontendRingAddresses {
  /** Avail index the back-end starts from (SET_VRING_BASE; default 0). */
  readonly base?: number;
  /**
   * Called on this thread's loop after the back-end signalled the call
   * eventfd (the counter has been reset): drain the used ring.
   */
  readonly onCall: () => void;
}

/** A started ring: its notification side. */
export interface FrontendRing {
  readonly index: number;
  /** Signals the kick eventfd (an available-buffer notification). No-op once stopped. */
  kick(): void;
  /** True once the ring was stopped or the connection closed. */
  readonly stopped: boolean;
}

/** Memory shared with the back-end: one region and its fd (see {@link SharedGuestMemory}). */
export interface FrontendMemoryRegion {
  readonly region: MemRegion;
  readonly fd: number;
}

const NO_PAYLOAD = new Uint8Array(0);
const U64 = { kind: "u64" } as const;

function incompatible(
  message: string,
  details: Record<string, number | string | bigint | boolean> = {},
): VirtioError {
  return new VirtioError(ErrorCode.VHOST_USER_INCOMPATIBLE, message, details);
}

class Ring implements FrontendRing {
  readonly index: number;
  readonly kickFd: number;
  readonly callFd: number;
  #watch: FdWatch | undefined;
  #stopped = false;

  constructor(index: number, kickFd: number, callFd: number, onCall: () => void) {
    this.index = index;
    this.kickFd = kickFd;
    this.callFd = callFd;
    this.#watch = watch(callFd, PollEvent.READABLE, (error) => {
      if (error !== null) {
        // A poll error on our own eventfd: stop rather than spin.
        this.#watch?.stop();
        return;
      }
      // "The 8-value itself has no meaning and should not be interpreted": read to reset, then drain.
      if (eventfdRead(callFd) !== null && !this.#stopped) onCall();
    });
  }

  get stopped(): boolean {
    return this.#stopped;
  }

  kick(): void {
    // false (counter at its maximum) means a kick is already pending.
    if (!this.#stopped) eventfdWrite(this.kickFd, 1);
  }

  /** Stops the call watch and closes both eventfds (idempotent). */
  release(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#watch?.stop();
    this.#watch = undefined;
    closeFd(this.kickFd);
    closeFd(this.callFd);
  }
}

/** A ring with fresh kick and call eventfds (nothing stays open on failure). */
function createRing(index: number, onCall: () => void): Ring {
  const fds: number[] = [];
  try {
    fds.push(eventfd());
    fds.push(eventfd());
    return new Ring(index, fds[0]!, fds[1]!, onCall);
  } catch (e) {
    fds.forEach(closeQuietly);
    throw e;
  }
}

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

  #deviceFeatures = 0n;
  #features = 0n;
  #deviceProtocolFeatures = 0n;
  #protocolFeatures = 0n;
  #maxQueues = 1;
  #maxMemSlots = VHOST_MEMORY_BASELINE_NREGIONS;
  #config: Uint8Array = NO_PAYLOAD;

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
      await fe.#negotiate(options);
    } catch (e) {
      fe.#channel.close(e instanceof VirtioError ? e : undefined);
      throw e;
    }
    return fe;
  }

  /** Virtio features the back-end offered (GET_FEATURES). */
  get deviceFeatures(): bigint {
    return this.#deviceFeatures;
  }

  /** Virtio features acknowledged with SET_FEATURES (bit 30 included). */
  get features(): bigint {
    return this.#features;
  }

  /** Protocol features the back-end offered. */
  get deviceProtocolFeatures(): bigint {
    return this.#deviceProtocolFeatures;
  }

  /** Protocol features acknowledged with SET_PROTOCOL_FEATURES. */
  get protocolFeatures(): bigint {
    return this.#protocolFeatures;
  }

  /** Rings the back-end supports (GET_QUEUE_NUM with MQ, else 1), at most 256. */
  get maxQueues(): number {
    return this.#maxQueues;
  }

  /** Memory regions the back-end accepts (GET_MAX_MEM_SLOTS, else 8). */
  get maxMemSlots(): number {
    return this.#maxMemSlots;
  }

  /** Config space read during the handshake (`configSize` bytes from offset 0; a copy). */
  get config(): Uint8Array {
    return this.#config.slice();
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
    return (this.#protocolFeatures & bit(bitNumber)) !== 0n;
  }

  async #negotiate(o: VhostUserFrontendOptions): Promise<void> {
    const ch = this.#channel;
    await ch.request(R.SET_OWNER, NO_PAYLOAD);
    this.#deviceFeatures = await ch.request(R.GET_FEATURES, NO_PAYLOAD, U64);
    if ((this.#deviceFeatures & bit(VHOST_USER_F_PROTOCOL_FEATURES)) === 0n)
      throw incompatible("the back-end does not offer VHOST_USER_F_PROTOCOL_FEATURES (bit 30)", {
        features: this.#deviceFeatures,
      });
    const wanted = typeof o.features === "bigint" ? o.features : o.features(this.#deviceFeatures);
    if (typeof wanted !== "bigint" || wanted < 0n)
      throw new TypeError("the feature selector must return a non-negative bigint");
    this.#features = this.#deviceFeatures & (wanted | bit(VHOST_USER_F_PROTOCOL_FEATURES));
    await ch.request(R.SET_FEATURES, encodeU64(this.#features));
    this.#deviceProtocolFeatures = await ch.request(R.GET_PROTOCOL_FEATURES, NO_PAYLOAD, U64);
    const missing = FRONTEND_REQUIRED_PROTOCOL_FEATURES & ~this.#deviceProtocolFeatures;
    if (missing !== 0n)
      throw incompatible(
        `the back-end lacks protocol features 0x${missing.toString(16)} (REPLY_ACK and CONFIG are required)`,
        { protocolFeatures: this.#deviceProtocolFeatures },
      );
    this.#protocolFeatures = this.#deviceProtocolFeatures & FRONTEND_PROTOCOL_FEATURES;
    await ch.request(R.SET_PROTOCOL_FEATURES, encodeU64(this.#protocolFeatures));
    // From here on every request asks for a reply (REPLY_ACK), as libblkio does.
    ch.needReply = true;
    if (this.hasProtocolFeature(PF.MQ)) {
      const n = await ch.request(R.GET_QUEUE_NUM, NO_PAYLOAD, U64);
      if (n === 0n) throw incompatible("the back-end supports 0 queues");
      // A vring index is 8 bits in SET_VRING_KICK/CALL/ERR: more rings cannot be addressed.
      this.#maxQueues = n > 256n ? 256 : Number(n);
    }
    if (this.hasProtocolFeature(PF.CONFIGURE_MEM_SLOTS)) {
      const n = await ch.request(R.GET_MAX_MEM_SLOTS, NO_PAYLOAD, U64);
      if (n === 0n) throw incompatible("the back-end accepts 0 memory slots");
      this.#maxMemSlots = n > 0xffffn ? 0xffff : Number(n);
    }
    if (o.configSize !== undefined && o.configSize > 0)
      this.#config = await this.getConfig(0, o.configSize);
  }

  /**
   * Reads `size` bytes of config space at `offset` (GET_CONFIG). The reply
   * must echo offset, size and flags and hold exactly `size` bytes.
   */
  getConfig(offset: number, size: number): Promise<Uint8Array> {
    if (!Number.isInteger(size) || size < 1 || size > VHOST_USER_MAX_CONFIG_SIZE)
      throw new RangeError(`config size must be in 1..${VHOST_USER_MAX_CONFIG_SIZE}, got ${size}`);
    if (!Number.isInteger(offset) || offset < 0 || offset > 0xffff_ffff)
      throw new RangeError(`config offset must be a u32, got ${offset}`);
    return this.#channel.request(
      R.GET_CONFIG,
      encodeConfig({ offset, flags: 0, data: new Uint8Array(size) }),
      { kind: "config", offset, size, flags: 0 },
    );
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
   * SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ENABLE 1). The ring must be
   * initialised in shared memory (a DriverQueue's constructor does it).
   *
   * @throws {RangeError} for an index beyond {@link maxQueues} or a ring already started.
   */
  async startRing(index: number, o: StartRingOptions): Promise<FrontendRing> {
    if (!Number.isInteger(index) || index < 0 || index >= this.maxQueues)
      throw new RangeError(`ring index ${index} is outside 0..${this.maxQueues - 1}`);
    if (this.#rings.has(index)) throw new RangeError(`ring ${index} is already started`);
    if (this.#channel.error !== undefined) throw this.#channel.error;
    if (!isValidQueueSize(o.size))
      throw new RangeError(`queue size ${o.size} is not a power of two in 1..32768`);
    const ring = createRing(index, o.onCall);
    this.#rings.set(index, ring);
    const ch = this.#channel;
    try {
      await ch.request(R.SET_VRING_NUM, encodeVringState({ index, num: o.size }));
      await ch.request(R.SET_VRING_BASE, encodeVringState({ index, num: o.base ?? 0 }));
      // "A vring address description": the payload order is desc, used, avail, log.
      await ch.request(
        R.SET_VRING_ADDR,
        encodeVringAddr({
          index,
          flags: 0,
          desc: BigInt(o.descAddr),
          used: BigInt(o.usedAddr),
          avail: BigInt(o.availAddr),
          log: 0n,
        }),
      );
      const file = encodeVringFile({ index: index & VHOST_USER_VRING_IDX_MASK, noFd: false });
      await ch.request(R.SET_VRING_KICK, file, undefined, [ring.kickFd]);
      await ch.request(R.SET_VRING_CALL, file, undefined, [ring.callFd]);
      // With VHOST_USER_F_PROTOCOL_FEATURES negotiated "the ring starts directly in the disabled state".
      await ch.request(R.SET_VRING_ENABLE, encodeVringState({ index, num: 1 }));
    } catch (e) {
      this.#rings.delete(index);
      ring.release();
      throw e;
    }
    return ring;
  }

  /**
   * Stops ring `index` (GET_VRING_BASE: "stop the ring") and releases its
   * eventfds. Resolves with the avail index the back-end reports: where it
   * would resume. Requests still in flight may complete no more.
   */
  async stopRing(index: number): Promise<number> {
    const ring = this.#rings.get(index);
    if (ring === undefined) throw new RangeError(`ring ${index} is not started`);
    try {
      const state = await this.#channel.request(
        R.GET_VRING_BASE,
        encodeVringState({ index, num: 0 }),
        { kind: "vring-state", index },
      );
      return state.num;
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

function checkOptions(o: VhostUserFrontendOptions): void {
  if (typeof o.features === "function") return checkConfigSize(o);
  if (typeof o.features !== "bigint" || o.features < 0n)
    throw new TypeError("options.features must be a non-negative bigint or a function");
  checkConfigSize(o);
}

function checkConfigSize(o: VhostUserFrontendOptions): void {
  const c = o.configSize ?? 0;
  if (!Number.isInteger(c) || c < 0 || c > VHOST_USER_MAX_CONFIG_SIZE)
    throw new RangeError(`configSize must be in 0..${VHOST_USER_MAX_CONFIG_SIZE}, got ${c}`);
}

function closeQuietly(fd: number): void {
  try {
    closeFd(fd);
  } catch {
    // Best effort: the fd is gone either way.
  }
}

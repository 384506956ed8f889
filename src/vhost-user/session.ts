/**
 * The back-end state of one vhost-user connection and the ring state
 * machine. qemu/qemu docs/interop/vhost-user.rst "Ring states": rings start
 * stopped; a ring is *started* by its kick fd and stopped by
 * VHOST_USER_GET_VRING_BASE; independently it is *enabled* by
 * SET_VRING_ENABLE ("If VHOST_USER_F_PROTOCOL_FEATURES has not been
 * negotiated, the ring starts directly in the enabled state").
 *
 * A ring *runs* (its queue is served by the dataplane) while it is started,
 * enabled, and the device is not broken. Any change of a running ring's
 * size, addresses, base or kick fd, and any change of the memory table,
 * stops it first (waiting for its in-flight requests) and restarts it with
 * the index where it stopped; the used index is read back from guest memory
 * at every start. SET_VRING_ENABLE(0) only stops the ring: it is not a reset
 * (QEMU 7.2 sends it before GET_VRING_BASE).
 *
 * Stops started by SET_VRING_ENABLE(0) run in the background so that the
 * rings of a device drain in parallel; every later message about that ring
 * waits for the stop first ({@link VhostUserSession.settle}).
 *
 * @module
 */
import { ErrorCode, VirtioError, isVirtioError } from "../errors.ts";
import {
  VHOST_USER_F_PROTOCOL_FEATURES,
  VIRTIO_F_VERSION_1,
  featureBit,
  hasFeature,
} from "../spec/virtio.ts";
import { ringPartBytes, ringSizeProblem } from "../ring/ring-layout.ts";
import { VhostUserProtocolFeature as PF } from "../spec/vhost-user.ts";
import type { VhostUserBackend } from "./backend.ts";
import type { InflightShm, VringDataplane, VringStart } from "./dataplane.ts";
import type { EventFds } from "./host.ts";
import { MemoryTable } from "./memory-table.ts";
import { VringState } from "./vring-state.ts";

export { VringState } from "./vring-state.ts";

/** Options of {@link VhostUserSession}. */
export interface VhostUserSessionOptions {
  readonly backend: VhostUserBackend;
  readonly dataplane: VringDataplane;
  /** Closes fds and signals error eventfds. */
  readonly fds: Pick<EventFds, "close" | "signal">;
  /** GET_MAX_MEM_SLOTS answer and memory table limit. */
  readonly maxMemSlots: number;
  /** One log line per event worth a human's attention. */
  readonly log: (line: string) => void;
  /** Runs `task` after the message being handled (serialised with messages). */
  readonly schedule: (task: () => Promise<void>) => void;
  /**
   * Creates a zeroed shared-memory fd of `size` bytes that cannot change
   * size (a sealed memfd), for GET_INFLIGHT_FD. Absent: INFLIGHT_SHMFD is
   * not offered.
   */
  readonly allocateShared?: (size: number) => number;
}

const hex = (v: number | bigint): string => `0x${v.toString(16)}`;
const asError = (e: unknown): Error => (e instanceof Error ? e : new Error(String(e)));

/** Back-end state of one connection. Handlers (./handlers.ts) drive it. */
export class VhostUserSession {
  readonly backend: VhostUserBackend;
  readonly dataplane: VringDataplane;
  readonly memory: MemoryTable;
  readonly maxMemSlots: number;
  readonly rings: readonly VringState[];
  readonly log: (line: string) => void;
  readonly #fds: Pick<EventFds, "close" | "signal">;
  readonly #schedule: (task: () => Promise<void>) => void;
  /** SET_FEATURES. */
  features = 0n;
  /** SET_PROTOCOL_FEATURES. */
  protocolFeatures = 0n;
  /** SET_OWNER was received. */
  owner = false;
  /** A ring violation stopped every ring; cleared when all were stopped by the front-end. */
  broken: VirtioError | null = null;
  /** The inflight tracking buffer's fd (SET_INFLIGHT_FD), or null. */
  inflightFd: number | null = null;
  readonly #allocateShared: ((size: number) => number) | undefined;

  constructor(options: VhostUserSessionOptions) {
    const n = options.backend.numQueues;
    if (!Number.isInteger(n) || n < 1 || n > 256)
      throw new RangeError(`numQueues must be an integer in 1..256, got ${n}`);
    this.backend = options.backend;
    this.dataplane = options.dataplane;
    this.maxMemSlots = options.maxMemSlots;
    this.memory = new MemoryTable(options.maxMemSlots);
    this.rings = Array.from({ length: n }, (_, i) => new VringState(i));
    this.log = options.log;
    this.#fds = options.fds;
    this.#schedule = options.schedule;
    this.#allocateShared = options.allocateShared;
  }

  /** Virtio features offered in GET_FEATURES. */
  get offeredFeatures(): bigint {
    return (
      this.backend.features |
      featureBit(VIRTIO_F_VERSION_1) |
      featureBit(VHOST_USER_F_PROTOCOL_FEATURES)
    );
  }

  /** Protocol features offered: exactly what this back-end implements. */
  get offeredProtocolFeatures(): bigint {
    let f =
      featureBit(PF.MQ) |
      featureBit(PF.REPLY_ACK) |
      featureBit(PF.CONFIGURE_MEM_SLOTS) |
      featureBit(PF.RESET_DEVICE);
    if (this.backend.config !== undefined) f |= featureBit(PF.CONFIG);
    if (this.#allocateShared !== undefined && this.dataplane.setInflight !== undefined)
      f |= featureBit(PF.INFLIGHT_SHMFD);
    return f;
  }

  /** True once the front-end acked REPLY_ACK (NEED_REPLY is honoured from then on). */
  get replyAck(): boolean {
    return hasFeature(this.protocolFeatures, PF.REPLY_ACK);
  }

  /** True once VHOST_USER_F_PROTOCOL_FEATURES was set with SET_FEATURES. */
  get protocolFeaturesNegotiated(): boolean {
    return hasFeature(this.features, VHOST_USER_F_PROTOCOL_FEATURES);
  }

  /** The ring with this index. @throws {VirtioError} for an index ≥ the queue count. */
  ring(index: number): VringState {
    const r = this.rings[index];
    if (r === undefined) {
      throw new VirtioError(
        ErrorCode.VHOST_USER_PROTOCOL,
        `ring index ${index} is out of range (${this.rings.length} queues)`,
        { index, queues: this.rings.length },
      );
    }
    return r;
  }

  /** Waits for a background stop of `ring`; rethrows its failure. */
  async settle(ring: VringState): Promise<void> {
    while (ring.stopping !== null) await ring.stopping;
    if (ring.stopError !== undefined) {
      const e = ring.stopError;
      ring.stopError = undefined;
      throw e;
    }
  }

  /** Stops `ring` if it runs and waits until it has stopped. */
  async stop(ring: VringState): Promise<void> {
    await this.settle(ring);
    if (ring.running) this.#beginStop(ring);
    await this.settle(ring);
  }

  /** Stops every running ring (memory table changes, reset, teardown). */
  async stopAll(): Promise<void> {
    for (const r of this.rings) if (r.running) this.#beginStop(r);
    for (const r of this.rings) await this.settle(r);
  }

  /** Starts or stops `ring` to match its state. Stops are not awaited. */
  async reconcile(ring: VringState): Promise<void> {
    const want =
      ring.started &&
      ring.enabled &&
      this.broken === null &&
      !ring.startFailed &&
      ring.kickFd !== null;
    if (want && !ring.running && ring.stopping === null) await this.#start(ring);
    else if (!want && ring.running) this.#beginStop(ring);
  }

  /** {@link reconcile} for every ring. */
  async reconcileAll(): Promise<void> {
    for (const r of this.rings) {
      await this.settle(r);
      await this.reconcile(r);
    }
  }

  /**
   * Checks that a ring address from SET_VRING_ADDR lies in a region
   * (front-end virtual address space). The whole ring is checked at start.
   */
  checkRingAddress(ring: VringState, what: string, uva: bigint, len: number): void {
    if (this.memory.uvaToGpa(uva, len) === undefined) throw this.#unmapped(ring, what, uva, len);
  }

  /** Replaces an fd slot's value, closing the old fd. */
  replaceFd(old: number | null, fd: number | null): number | null {
    if (old !== null && old !== fd) this.closeFd(old);
    return fd;
  }

  /** Closes an fd the session owns (best effort). */
  closeFd(fd: number): void {
    try {
      this.#fds.close(fd);
    } catch {
      // Already gone: nothing more to release.
    }
  }

  /**
   * A zeroed shared buffer for GET_INFLIGHT_FD.
   *
   * @throws {VirtioError} `VHOST_USER_BACKEND` if it cannot be created.
   */
  allocateInflight(size: number): number {
    try {
      return this.#allocateShared!(size);
    } catch (e) {
      throw new VirtioError(
        ErrorCode.VHOST_USER_BACKEND,
        `cannot create the inflight buffer of ${size} bytes: ${asError(e).message}`,
        { size },
      );
    }
  }

  /** Maps the inflight buffer (SET_INFLIGHT_FD; no ring runs); the session owns `fd` from now on. */
  async setInflight(inflight: InflightShm): Promise<void> {
    try {
      await this.dataplane.setInflight!(inflight);
    } catch (e) {
      this.closeFd(inflight.fd);
      throw e;
    }
    this.inflightFd = this.replaceFd(this.inflightFd, inflight.fd);
  }

  /** Forgets the inflight buffer (RESET_DEVICE: the next start gets a fresh one). */
  async dropInflight(): Promise<void> {
    if (this.inflightFd === null) return;
    await this.dataplane.setInflight?.(null);
    this.inflightFd = this.replaceFd(this.inflightFd, null);
  }

  /** Forgets a ring's configuration (RESET_DEVICE); the ring must be stopped. */
  resetRing(ring: VringState): void {
    ring.kickFd = this.replaceFd(ring.kickFd, null);
    ring.num = 0;
    ring.base = 0;
    ring.addr = undefined;
    ring.started = false;
    ring.enabled = false;
    ring.startFailed = false;
  }

  /** Stops everything and releases every fd and mapping (connection teardown). */
  async dispose(): Promise<void> {
    let first: Error | undefined;
    const keep = (e: unknown): void => {
      first ??= asError(e);
    };
    for (const r of this.rings) await this.settle(r).catch(keep);
    await this.stopAll().catch(keep);
    await this.dataplane.dispose().catch(keep);
    for (const r of this.rings) {
      r.kickFd = this.replaceFd(r.kickFd, null);
      r.callFd = this.replaceFd(r.callFd, null);
      r.errFd = this.replaceFd(r.errFd, null);
    }
    this.inflightFd = this.replaceFd(this.inflightFd, null);
    this.memory.clear();
    if (first !== undefined) throw first;
  }

  #beginStop(ring: VringState): void {
    ring.running = false;
    const p = this.dataplane.stopRing(ring.index).then(
      (base) => {
        ring.base = base;
      },
      (e: unknown) => {
        ring.stopError = asError(e);
      },
    );
    const tracked: Promise<void> = p.then(() => {
      if (ring.stopping === tracked) ring.stopping = null;
    });
    ring.stopping = tracked;
  }

  async #start(ring: VringState): Promise<void> {
    const start = this.#ringStart(ring);
    if (start === undefined) return;
    try {
      ring.running = true;
      // Every start follows a SET_FEATURES; all rings of a device share the features.
      this.backend.negotiate?.(this.features);
      await this.dataplane.startRing(ring.index, start, {
        broken: (err) => this.#onBroken(ring, err),
      });
    } catch (e) {
      ring.running = false;
      if (!isVirtioError(e, ErrorCode.QUEUE_CONFIG)) throw e;
      this.#refuseStart(ring, e.message);
    }
  }

  /** The ring's start parameters, or undefined if its configuration is refused. */
  #ringStart(ring: VringState): VringStart | undefined {
    const n = ring.num;
    const problem = ringSizeProblem(n, this.features);
    if (problem !== null) {
      this.#refuseStart(ring, problem);
      return undefined;
    }
    const addr = ring.addr;
    if (addr === undefined) {
      throw new VirtioError(
        ErrorCode.VHOST_USER_PROTOCOL,
        `ring ${ring.index} was started without SET_VRING_ADDR`,
        { index: ring.index },
      );
    }
    const bytes = ringPartBytes(n, this.features);
    return {
      size: n,
      descAddr: this.#translate(ring, "descriptor table", addr.desc, bytes.desc),
      availAddr: this.#translate(ring, "available ring", addr.avail, bytes.avail),
      usedAddr: this.#translate(ring, "used ring", addr.used, bytes.used),
      base: ring.base,
      features: this.features,
      kickFd: ring.kickFd!,
      callFd: ring.callFd,
    };
  }

  #translate(ring: VringState, what: string, uva: bigint, len: number): number {
    const gpa = this.memory.uvaToGpa(uva, len);
    if (gpa === undefined) throw this.#unmapped(ring, what, uva, len);
    return gpa;
  }

  #unmapped(ring: VringState, what: string, uva: bigint, len: number): VirtioError {
    const regions = this.memory.regions.length;
    const hint =
      regions === 0
        ? "no memory region was shared: the front-end must use shared memory (e.g. QEMU -object memory-backend-memfd,share=on)"
        : `it is not inside any of the ${regions} memory regions`;
    return new VirtioError(
      ErrorCode.VHOST_USER_PROTOCOL,
      `ring ${ring.index}: ${what} at front-end address ${hex(uva)} (+${len}): ${hint}`,
      { index: ring.index, uva, len },
    );
  }

  /** CONFORMANCE: "rejected when the queue is configured: the queue does not start". */
  #refuseStart(ring: VringState, why: string): void {
    ring.startFailed = true;
    this.log(`vhost-user: ${this.backend.name}: ring ${ring.index} does not start: ${why}`);
    if (ring.errFd !== null) this.#fds.signal(ring.errFd);
  }

  #onBroken(ring: VringState, err: VirtioError): void {
    if (ring.errFd !== null) this.#fds.signal(ring.errFd);
    if (this.broken !== null) return;
    this.broken = err;
    if (err.code === ErrorCode.MEM_FAULT) {
      // The front-end pulled its memory away: the connection closes, its one line naming the ring.
      const e = new VirtioError(err.code, `ring ${ring.index}: ${err.message}`, err.details);
      return this.#schedule(() => Promise.reject(e));
    }
    this.log(
      `vhost-user: ${this.backend.name}: ring ${ring.index} broken: ${err.code}: ${err.message}`,
    );
    // Not from inside the device's call stack: stop every ring after the current message.
    this.#schedule(() => this.stopAll());
  }
}

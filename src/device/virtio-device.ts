/**
 * The transport-neutral device framework: the device as the driver sees it
 * through a transport — status, feature, configuration space and queue
 * registers, and the notifications. VIRTIO 1.2 §2.1 (status), §2.2
 * (features), §2.5 (configuration space), §3.1 (device initialization).
 *
 * A transport (in-process registers, virtio-mmio, vhost-user) turns what the
 * driver does into calls on {@link VirtioDevice}; the device type behind it
 * is a {@link VirtioDeviceBackend}. Everything the driver passes in is
 * untrusted: invalid values and out-of-state writes are ignored and logged,
 * never thrown (status policy: ./status.ts).
 *
 * Lifecycle:
 *
 * 1. ACKNOWLEDGE, DRIVER; the driver reads device features and writes its own.
 * 2. FEATURES_OK: accepted only for a subset of the offered bits that
 *    includes VIRTIO_F_VERSION_1 and passes the backend's
 *    `validateFeatures`; the set is then frozen.
 * 3. Queue setup (only with FEATURES_OK set and DRIVER_OK / FAILED clear):
 *    size ≤ the queue's maximum, three addresses, then ready = 1. Setting
 *    ready validates the ring; an invalid ring stays not ready
 *    (./queue-setup.ts).
 * 4. DRIVER_OK: the backend is activated with the ready queues.
 *
 * Legacy interface (§4.1.4.10, §4.2.4): {@link VirtioDevice.beginLegacy}
 * (./lifecycle.ts has the rules).
 *
 * This module checks that the device status allows each write; what a
 * status write sets in motion — activation, the *broken* state, the
 * asynchronous reset — is ./lifecycle.ts.
 *
 * @module
 */
import type { VirtioError } from "../errors.ts";
import type { GuestMemory } from "../memory/guest-memory.ts";
import type { DeviceRing } from "../ring/device-ring.ts";
import {
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FAILED,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_F_VERSION_1,
  featureBit,
} from "../spec/virtio.ts";
import { isValidQueueSize } from "../spec/virtqueue.ts";
import type { VirtioDeviceBackend } from "./backend.ts";
import { ConfigSpace } from "./config-space.ts";
import { FeatureNegotiation } from "./features.ts";
import { DeviceLifecycle, type DeviceNotifier, type DeviceStats } from "./lifecycle.ts";
import { QueueTable } from "./queue-setup.ts";
import { hasStatus } from "./status.ts";

export type { DeviceNotifier, DeviceStats } from "./lifecycle.ts";

/** Options of {@link VirtioDevice}. */
export interface VirtioDeviceOptions {
  /** Guest memory (may also be given later with {@link VirtioDevice.setMemory}). */
  readonly memory?: GuestMemory;
  /** The transport's notifier (may also be given later with {@link VirtioDevice.setNotifier}). */
  readonly notifier?: DeviceNotifier;
  /** Where log lines go (default: console.warn). */
  readonly log?: (line: string) => void;
}

const VERSION_1 = featureBit(VIRTIO_F_VERSION_1);

/**
 * One virtio device as the driver sees it through a transport.
 *
 * @example
 * ```ts
 * const dev = new VirtioDevice(myBackend, { memory, notifier });
 * // the transport forwards driver accesses:
 * await dev.writeStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE);
 * dev.readDeviceFeatures();
 * ```
 */
export class VirtioDevice {
  readonly backend: VirtioDeviceBackend;
  readonly stats: DeviceStats = {
    notificationsSent: 0,
    notificationsSuppressed: 0,
    configNotifications: 0,
    kicks: 0,
    kicksIgnored: 0,
  };
  readonly #features: FeatureNegotiation;
  readonly #config: ConfigSpace;
  readonly #log: (line: string) => void;
  readonly #queues: QueueTable;
  readonly #life: DeviceLifecycle;

  /**
   * @throws {RangeError} for an inconsistent backend (no queues, a bad
   *   maximum queue size, offered features not a 64-bit bigint).
   */
  constructor(backend: VirtioDeviceBackend, options: VirtioDeviceOptions = {}) {
    const n = backend.queueMaxSizes.length;
    if (n < 1 || n > 65535) throw new RangeError(`a device needs 1..65535 queues, got ${n}`);
    for (const max of backend.queueMaxSizes) {
      if (!isValidQueueSize(max))
        throw new RangeError(`queue maximum size ${max} is not a power of two in 1..32768`);
    }
    this.backend = backend;
    // §6.1 "A device MUST offer VIRTIO_F_VERSION_1."
    this.#features = new FeatureNegotiation(backend.features | VERSION_1);
    this.#config = backend.config ?? new ConfigSpace(0);
    this.#config.setChangeListener(() => this.#life.configChanged());
    this.#log = options.log ?? ((line) => console.warn(line));
    const log = (line: string): void => this.#log(`${this.#name()}: ${line}`);
    this.#queues = new QueueTable(backend.queueMaxSizes, log);
    this.#life = new DeviceLifecycle(
      { backend, features: this.#features, queues: this.#queues, stats: this.stats, log },
      options.memory ?? null,
      options.notifier ?? null,
    );
  }

  // ---- wiring ----

  /** Sets the guest memory the queues live in (before queues are made ready). */
  setMemory(memory: GuestMemory): void {
    this.#life.memory = memory;
  }

  /** Sets how notifications reach the driver. */
  setNotifier(notifier: DeviceNotifier): void {
    this.#life.notifier = notifier;
  }

  // ---- device identity ----

  /** §5 device id. */
  get deviceId(): number {
    return this.backend.deviceId;
  }

  /** Number of queues. */
  get numQueues(): number {
    return this.#queues.count;
  }

  /** Maximum size of queue `index` (0 for an index that does not exist). */
  queueMaxSize(index: number): number {
    return this.#queues.maxSize(index);
  }

  // ---- status (§2.1) ----

  /** The device status byte as the driver reads it (the old value while a reset is in progress). */
  readStatus(): number {
    return this.#life.status;
  }

  /** True while a reset is in progress (status not yet 0). */
  get resetting(): boolean {
    return this.#life.resetting;
  }

  /** True while the device serves its queues: DRIVER_OK done, not broken, not resetting. */
  get live(): boolean {
    return this.#life.live;
  }

  /** The error that broke the device, or null. */
  get broken(): VirtioError | null {
    return this.#life.broken;
  }

  /** The negotiated feature bits (0n before FEATURES_OK). */
  get features(): bigint {
    return this.#features.frozen ? this.#features.negotiated : 0n;
  }

  /** The queues handed to the backend (null: not ready). Empty of meaning before DRIVER_OK. */
  get queues(): readonly (DeviceRing | null)[] {
    return this.#queues.rings;
  }

  /**
   * A driver write to the status field. Resolves when the write has taken
   * effect: for 0 when the reset is complete (status reads 0), for DRIVER_OK
   * when activation settled. Never rejects.
   */
  writeStatus(value: number): Promise<void> {
    return this.#life.writeStatus(value);
  }

  /** A legacy driver from now to the next reset (false while resetting or after FEATURES_OK: ignore the write). */
  beginLegacy(): boolean {
    const ok = this.#life.beginLegacy();
    if (!ok)
      this.#log(`${this.#name()}: legacy access refused in status 0x${hex(this.readStatus())}`);
    return ok;
  }

  /** True while a legacy driver drives the device (see {@link beginLegacy}). */
  get legacy(): boolean {
    return this.#life.legacy;
  }

  // ---- features (§2.2) ----

  /** The offered feature bits (VIRTIO_F_VERSION_1 included). */
  readDeviceFeatures(): bigint {
    return this.#features.offered;
  }

  /** 32 bits of the offered features (`select` 0 low, 1 high, else 0). */
  readDeviceFeaturesWord(select: number): number {
    return this.#features.deviceFeaturesWord(select);
  }

  /**
   * The driver writes the features it accepts. Only while DRIVER is set and
   * FEATURES_OK / FAILED are clear; otherwise ignored. Returns whether it
   * was taken.
   */
  writeDriverFeatures(value: bigint): boolean {
    if (!this.#featuresWritable()) return false;
    return this.#features.setDriverFeatures(typeof value === "bigint" ? value : 0n);
  }

  /** 32-bit form of {@link writeDriverFeatures} (`select` 0 low, 1 high). */
  writeDriverFeaturesWord(select: number, value: number): boolean {
    if (!this.#featuresWritable()) return false;
    return this.#features.setDriverFeaturesWord(select, value);
  }

  /** What the driver wrote (unoffered bits included). */
  readDriverFeatures(): bigint {
    return this.#features.driverFeatures;
  }

  #featuresWritable(): boolean {
    const s = this.#life.status;
    const ok =
      !this.#life.resetting &&
      hasStatus(s, VIRTIO_CONFIG_S_DRIVER) &&
      (s & (VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK | VIRTIO_CONFIG_S_FAILED)) ===
        0;
    if (!ok) this.#log(`${this.#name()}: driver features write ignored in status 0x${hex(s)}`);
    return ok;
  }

  // ---- configuration space (§2.5) ----

  /** §2.5 config_generation. */
  get configGeneration(): number {
    return this.#config.generation;
  }

  /** Size of the configuration space in bytes. */
  get configSize(): number {
    return this.#config.size;
  }

  /** The device's configuration space (for the device type: `update` bumps the generation and notifies). */
  get config(): ConfigSpace {
    return this.#config;
  }

  /** Driver read (allowed in any state; out-of-range bytes read 0xff). */
  readConfig(offset: number, dst: Uint8Array): void {
    this.#config.driverRead(offset, dst);
  }

  /**
   * Driver write: only with DRIVER set and FAILED clear, and only the bytes
   * the backend's `writeConfig` hook takes; returns the bytes handed to it.
   */
  writeConfig(offset: number, src: Uint8Array): number {
    const s = this.#life.status;
    if (
      this.#life.resetting ||
      !hasStatus(s, VIRTIO_CONFIG_S_DRIVER) ||
      (s & VIRTIO_CONFIG_S_FAILED) !== 0
    ) {
      this.#log(`${this.#name()}: config write ignored in status 0x${hex(s)}`);
      return 0;
    }
    const hook = this.backend.writeConfig?.bind(this.backend);
    return this.#config.driverWrite(offset, src, hook);
  }

  // ---- queues ----

  /** The size the driver set for queue `index` (its maximum by default; 0 if no such queue). */
  queueSize(index: number): number {
    return this.#queues.size(index);
  }

  /** True if queue `index` was made ready. */
  queueReady(index: number): boolean {
    return this.#queues.ready(index);
  }

  /**
   * The driver sets the size of queue `index` (≤ its maximum; a power of two
   * unless VIRTIO_F_RING_PACKED was negotiated). Returns whether it was taken.
   */
  setQueueSize(index: number, size: number): boolean {
    return (
      this.#queueWritable(index, "size") &&
      this.#queues.setSize(index, size, this.#features.negotiated)
    );
  }

  /** The driver sets the guest-physical addresses of queue `index`'s three parts. */
  setQueueAddresses(index: number, descAddr: number, availAddr: number, usedAddr: number): boolean {
    return (
      this.#queueWritable(index, "addresses") &&
      this.#queues.setAddresses(index, descAddr, availAddr, usedAddr)
    );
  }

  /**
   * The driver makes queue `index` ready (or not). Ready validates the ring;
   * an invalid one stays not ready. Returns the resulting ready state.
   */
  setQueueReady(index: number, ready: boolean): boolean {
    if (!this.#queueWritable(index, "ready")) return this.queueReady(index);
    const life = this.#life;
    const epoch = life.epoch;
    return this.#queues.setReady(index, ready, life.memory, this.#features.negotiated, (err) => {
      if (epoch === life.epoch) this.markBroken(err, index);
    });
  }

  /** Queue setup needs FEATURES_OK (legacy: DRIVER; features become final) and DRIVER_OK / FAILED clear. */
  #queueWritable(index: number, what: string): boolean {
    if (!this.#queues.has(index)) {
      this.#log(`${this.#name()}: queue ${index} ${what} ignored: no such queue`);
      return false;
    }
    const s = this.#life.status;
    const needed = this.#life.legacy ? VIRTIO_CONFIG_S_DRIVER : VIRTIO_CONFIG_S_FEATURES_OK;
    if (
      this.#life.resetting ||
      !hasStatus(s, needed) ||
      (s & (VIRTIO_CONFIG_S_DRIVER_OK | VIRTIO_CONFIG_S_FAILED)) !== 0
    ) {
      this.#log(`${this.#name()}: queue ${index} ${what} ignored in status 0x${hex(s)}`);
      return false;
    }
    this.#life.freezeLegacyFeatures();
    return true;
  }

  // ---- data path ----

  /**
   * An available-buffer notification (kick) for queue `index`: handed to the
   * backend when the device is live (DRIVER_OK, not broken, not resetting,
   * queue ready); otherwise ignored (§2.7.10: spurious notifications are
   * harmless).
   */
  queueNotify(index: number): void {
    this.#life.queueNotify(index);
  }

  /**
   * Publishes queue `index`'s used entries and sends a used-buffer
   * notification if the ring says the driver wants one. Returns true if one
   * was sent.
   */
  signalUsed(index: number): boolean {
    return this.#life.signalUsed(index);
  }

  // ---- broken (docs/conformance.md "Ring violations") ----

  /**
   * Makes the device broken (sticky until reset): every queue stops and
   * writes nothing more; DEVICE_NEEDS_RESET is set if VERSION_1 was
   * negotiated; a configuration change notification goes out if DRIVER_OK is
   * set (§2.1.2: "If DEVICE_NEEDS_RESET is set ... the device MUST send a
   * device configuration change notification to the driver" when DRIVER_OK);
   * one log line. Later calls are ignored.
   *
   * @param queueIndex the queue that reported it, for the log line.
   */
  markBroken(err: VirtioError, queueIndex?: number): void {
    this.#life.markBroken(err, queueIndex);
  }

  // ---- reset (§2.4) ----

  /**
   * Resets the device (what a status write of 0 does): ignores kicks from
   * now on, lets the backend quiesce (finish in-flight requests into the used
   * rings), detaches the queues so nothing more reaches guest memory, clears
   * status, features, queue setup and the broken state. Resolves when the
   * status reads 0. Concurrent calls share one reset.
   */
  reset(): Promise<void> {
    return this.#life.reset();
  }

  #name(): string {
    return this.backend.name;
  }
}

function hex(v: number): string {
  return (v >>> 0).toString(16).padStart(2, "0");
}

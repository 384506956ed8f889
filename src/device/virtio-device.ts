/**
 * The transport-neutral device framework: status, feature negotiation,
 * configuration space, queue setup, activation, reset and the sticky
 * *broken* state. VIRTIO 1.2 §2.1 (status), §2.2 (features), §2.4 (reset),
 * §2.5 (configuration space), §3.1 (device initialization).
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
 *    includes VIRTIO_F_VERSION_1 (this framework serves modern devices only)
 *    and passes the backend's `validateFeatures`; the set is then frozen.
 * 3. Queue setup (only with FEATURES_OK set and DRIVER_OK / FAILED clear):
 *    size ≤ the queue's maximum, three addresses, then ready = 1. Setting
 *    ready validates the ring (size a power of two, parts aligned and inside
 *    one guest memory region); an invalid ring stays not ready (CONFORMANCE:
 *    "rejected when the queue is configured: the queue does not start").
 * 4. DRIVER_OK: the backend is activated with the ready queues.
 *
 * Reset (status ← 0) is asynchronous: kicks are ignored from then on, the
 * backend quiesces (stops popping, completes in-flight requests into the used
 * rings), the queues are detached (marked broken, so nothing more is ever
 * written to guest memory through them), and only then does the status read
 * 0 (§2.4.2: the driver considers the reset complete when it reads 0).
 *
 * Broken: a ring violation reported by a queue, or `markBroken` from the
 * device type, stops every queue (they write nothing more), sets
 * DEVICE_NEEDS_RESET (VERSION_1 negotiated) and sends a configuration change
 * notification if DRIVER_OK is set (§2.1.2), and logs one line. Only reset
 * clears it.
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../errors.ts";
import type { GuestMemory } from "../memory/guest-memory.ts";
import type { DeviceQueue } from "../ring/device-queue.ts";
import { openRing } from "../ring/open-ring.ts";
import {
  VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FAILED,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_F_VERSION_1,
  featureBit,
} from "../spec/virtio.ts";
import {
  VIRTQ_AVAIL_ALIGN,
  VIRTQ_DESC_ALIGN,
  VIRTQ_USED_ALIGN,
  availRingSize,
  descTableSize,
  isValidQueueSize,
  usedRingSize,
} from "../spec/virtqueue.ts";
import type { ActivationContext, VirtioDeviceBackend } from "./backend.ts";
import { ConfigSpace } from "./config-space.ts";
import { FeatureNegotiation } from "./features.ts";
import { hasStatus, planStatusWrite } from "./status.ts";

/** How the device reaches the driver; the transport implements it. */
export interface DeviceNotifier {
  /** Used-buffer notification for queue `index` (an interrupt / call). */
  notifyQueue(index: number): void;
  /** Configuration change notification (§2.5; also sent for DEVICE_NEEDS_RESET). */
  notifyConfig(): void;
}

/** Options of {@link VirtioDevice}. */
export interface VirtioDeviceOptions {
  /** Guest memory (may also be given later with {@link VirtioDevice.setMemory}). */
  readonly memory?: GuestMemory;
  /** The transport's notifier (may also be given later with {@link VirtioDevice.setNotifier}). */
  readonly notifier?: DeviceNotifier;
  /** Where log lines go (default: console.warn). */
  readonly log?: (line: string) => void;
}

/** Per-queue setup as the driver wrote it. */
interface QueueSetup {
  size: number;
  descAddr: number;
  availAddr: number;
  usedAddr: number;
  ready: boolean;
}

/** Counters for observability (demo, tests). */
export interface DeviceStats {
  /** Used-buffer notifications sent through the notifier. */
  notificationsSent: number;
  /** signalUsed calls where the ring said no notification was needed. */
  notificationsSuppressed: number;
  /** Configuration change notifications sent. */
  configNotifications: number;
  /** Kicks handed to the backend. */
  kicks: number;
  /** Kicks ignored (not DRIVER_OK, broken, resetting, unknown queue). */
  kicksIgnored: number;
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
  readonly #setup: QueueSetup[];
  #memory: GuestMemory | null;
  #notifier: DeviceNotifier | null;
  #status = 0;
  #broken: VirtioError | null = null;
  /** Ready queues (validated at ready time), by index. */
  #queues: (DeviceQueue | null)[];
  #activated = false;
  #resetting: Promise<void> | null = null;
  /** Bumped by every reset: callbacks from an older activation are ignored. */
  #epoch = 0;

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
    this.#config.setChangeListener(() => this.#configChanged());
    this.#log = options.log ?? ((line) => console.warn(line));
    this.#memory = options.memory ?? null;
    this.#notifier = options.notifier ?? null;
    this.#setup = backend.queueMaxSizes.map((max) => freshSetup(max));
    this.#queues = this.#setup.map(() => null);
  }

  // ---- wiring ----

  /** Sets the guest memory the queues live in (before queues are made ready). */
  setMemory(memory: GuestMemory): void {
    this.#memory = memory;
  }

  /** Sets how notifications reach the driver. */
  setNotifier(notifier: DeviceNotifier): void {
    this.#notifier = notifier;
  }

  // ---- device identity ----

  /** §5 device id. */
  get deviceId(): number {
    return this.backend.deviceId;
  }

  /** Number of queues. */
  get numQueues(): number {
    return this.#setup.length;
  }

  /** Maximum size of queue `index` (0 for an index that does not exist). */
  queueMaxSize(index: number): number {
    return this.backend.queueMaxSizes[index] ?? 0;
  }

  // ---- status (§2.1) ----

  /** The device status byte as the driver reads it (the old value while a reset is in progress). */
  readStatus(): number {
    return this.#status;
  }

  /** True while a reset is in progress (status not yet 0). */
  get resetting(): boolean {
    return this.#resetting !== null;
  }

  /** True while the device serves its queues: DRIVER_OK done, not broken, not resetting. */
  get live(): boolean {
    return this.#activated && this.#broken === null && this.#resetting === null;
  }

  /** The error that broke the device, or null. */
  get broken(): VirtioError | null {
    return this.#broken;
  }

  /** The negotiated feature bits (0n before FEATURES_OK). */
  get features(): bigint {
    return this.#features.frozen ? this.#features.negotiated : 0n;
  }

  /** The queues handed to the backend (null: not ready). Empty of meaning before DRIVER_OK. */
  get queues(): readonly (DeviceQueue | null)[] {
    return this.#queues;
  }

  /**
   * A driver write to the status field. Resolves when the write has taken
   * effect: for 0 when the reset is complete (status reads 0), for DRIVER_OK
   * when activation settled. Never rejects.
   */
  async writeStatus(value: number): Promise<void> {
    if (this.#resetting !== null) {
      if ((value & 0xff) === 0) return this.#resetting;
      this.#log(`${this.#name()}: status write 0x${hex(value)} ignored: reset in progress`);
      return;
    }
    const plan = planStatusWrite(this.#status, value);
    switch (plan.kind) {
      case "reset":
        return this.reset();
      case "fail":
        this.#status = plan.status;
        return;
      case "ignore":
        this.#log(`${this.#name()}: status write ignored: ${plan.reason}`);
        return;
      case "advance":
        return this.#advance(plan.steps, plan.addsFeaturesOk, plan.addsDriverOk);
    }
  }

  async #advance(steps: number, addsFeaturesOk: boolean, addsDriverOk: boolean): Promise<void> {
    let target = steps;
    if (addsFeaturesOk && !this.#featuresAcceptable()) {
      // §2.2.2: the device "MUST fail to set the FEATURES_OK device status bit" for a subset it can't accept.
      target &= ~(VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
      addsDriverOk = false;
    } else if (addsFeaturesOk) {
      this.#features.freeze();
    }
    this.#status = target | (this.#status & VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET);
    if (addsDriverOk) await this.#activate();
  }

  #featuresAcceptable(): boolean {
    const f = this.#features;
    if (!f.acceptable()) {
      this.#log(
        `${this.#name()}: FEATURES_OK refused: driver accepted unoffered bits 0x${f.unoffered.toString(16)}`,
      );
      return false;
    }
    if (!f.has(VIRTIO_F_VERSION_1)) {
      this.#log(`${this.#name()}: FEATURES_OK refused: VIRTIO_F_VERSION_1 not accepted`);
      return false;
    }
    if (
      this.backend.validateFeatures !== undefined &&
      !this.backend.validateFeatures(f.negotiated)
    ) {
      this.#log(`${this.#name()}: FEATURES_OK refused by the device`);
      return false;
    }
    return true;
  }

  async #activate(): Promise<void> {
    const memory = this.#memory;
    if (memory === null) {
      this.markBroken(new VirtioError(ErrorCode.QUEUE_NOT_READY, "DRIVER_OK without guest memory"));
      return;
    }
    this.#activated = true;
    const epoch = this.#epoch;
    const ctx: ActivationContext = {
      memory,
      features: this.#features.negotiated,
      queues: this.#queues,
      signalUsed: (i) => (epoch === this.#epoch ? this.signalUsed(i) : false),
      markBroken: (err) => {
        if (epoch === this.#epoch) this.markBroken(err);
      },
    };
    try {
      await this.backend.activate(ctx);
    } catch (e) {
      if (epoch !== this.#epoch) return;
      const err = isVirtio(e)
        ? e
        : new VirtioError(ErrorCode.DEVICE_BROKEN, `activation failed: ${String(e)}`);
      this.markBroken(err);
    }
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
    const s = this.#status;
    const ok =
      this.#resetting === null &&
      hasStatus(s, VIRTIO_CONFIG_S_DRIVER) &&
      (s & (VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_FAILED)) === 0;
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
    const s = this.#status;
    if (
      this.#resetting !== null ||
      !hasStatus(s, VIRTIO_CONFIG_S_DRIVER) ||
      (s & VIRTIO_CONFIG_S_FAILED) !== 0
    ) {
      this.#log(`${this.#name()}: config write ignored in status 0x${hex(s)}`);
      return 0;
    }
    const hook = this.backend.writeConfig?.bind(this.backend);
    return this.#config.driverWrite(offset, src, hook);
  }

  #configChanged(): void {
    if ((this.#status & VIRTIO_CONFIG_S_DRIVER_OK) === 0 || this.#resetting !== null) return;
    this.stats.configNotifications++;
    this.#notifier?.notifyConfig();
  }

  // ---- queues ----

  /** The size the driver set for queue `index` (its maximum by default; 0 if no such queue). */
  queueSize(index: number): number {
    return this.#setup[index]?.size ?? 0;
  }

  /** True if queue `index` was made ready. */
  queueReady(index: number): boolean {
    return this.#setup[index]?.ready ?? false;
  }

  /** The driver sets the size of queue `index` (≤ its maximum, power of two). Returns whether it was taken. */
  setQueueSize(index: number, size: number): boolean {
    const q = this.#editableQueue(index, "size");
    if (q === null) return false;
    const max = this.queueMaxSize(index);
    if (!isValidQueueSize(size) || size > max) {
      this.#log(
        `${this.#name()}: queue ${index} size ${size} ignored: not a power of two in 1..${max}`,
      );
      return false;
    }
    q.size = size;
    return true;
  }

  /** The driver sets the guest-physical addresses of queue `index`'s three parts. */
  setQueueAddresses(index: number, descAddr: number, availAddr: number, usedAddr: number): boolean {
    const q = this.#editableQueue(index, "addresses");
    if (q === null) return false;
    q.descAddr = descAddr;
    q.availAddr = availAddr;
    q.usedAddr = usedAddr;
    return true;
  }

  /**
   * The driver makes queue `index` ready (or not). Ready validates the ring;
   * an invalid one stays not ready. Returns the resulting ready state.
   */
  setQueueReady(index: number, ready: boolean): boolean {
    const q = this.#editableQueue(index, "ready", true);
    if (q === null) return this.queueReady(index);
    if (!ready) {
      q.ready = false;
      this.#queues[index] = null;
      return false;
    }
    if (q.ready) return true;
    const dq = this.#buildQueue(index, q);
    if (dq === null) return false;
    q.ready = true;
    this.#queues[index] = dq;
    return true;
  }

  /** Queue setup is writable only with FEATURES_OK set and DRIVER_OK / FAILED clear. */
  #editableQueue(index: number, what: string, readyWrite = false): QueueSetup | null {
    const q = this.#setup[index];
    if (q === undefined) {
      this.#log(`${this.#name()}: queue ${index} ${what} ignored: no such queue`);
      return null;
    }
    const s = this.#status;
    if (
      this.#resetting !== null ||
      !hasStatus(s, VIRTIO_CONFIG_S_FEATURES_OK) ||
      (s & (VIRTIO_CONFIG_S_DRIVER_OK | VIRTIO_CONFIG_S_FAILED)) !== 0
    ) {
      this.#log(`${this.#name()}: queue ${index} ${what} ignored in status 0x${hex(s)}`);
      return null;
    }
    // virtio-mmio: the driver MUST NOT change a queue's size or addresses while it is ready.
    if (q.ready && !readyWrite) {
      this.#log(`${this.#name()}: queue ${index} ${what} ignored: queue is ready`);
      return null;
    }
    return q;
  }

  #buildQueue(index: number, q: QueueSetup): DeviceQueue | null {
    const memory = this.#memory;
    const problem = memory === null ? "no guest memory" : ringProblem(memory, q);
    if (problem !== null) {
      this.#log(`${this.#name()}: queue ${index} not started: ${problem}`);
      return null;
    }
    const epoch = this.#epoch;
    try {
      const start = { ...q, features: this.#features.negotiated, nextAvail: 0 };
      return openRing(memory!, start, (err) => {
        if (epoch === this.#epoch) this.markBroken(err, index);
      });
    } catch (e) {
      this.#log(`${this.#name()}: queue ${index} not started: ${String(e)}`);
      return null;
    }
  }

  // ---- data path ----

  /**
   * An available-buffer notification (kick) for queue `index`: handed to the
   * backend when the device is live (DRIVER_OK, not broken, not resetting,
   * queue ready); otherwise ignored (§2.7.10: spurious notifications are
   * harmless).
   */
  queueNotify(index: number): void {
    if (!this.live || (this.#queues[index] ?? null) === null) {
      this.stats.kicksIgnored++;
      return;
    }
    this.stats.kicks++;
    this.backend.queueNotify?.(index);
  }

  /**
   * Publishes queue `index`'s used entries and sends a used-buffer
   * notification if the ring says the driver wants one. Returns true if one
   * was sent.
   */
  signalUsed(index: number): boolean {
    const q = this.#queues[index];
    if (q === undefined || q === null || this.#broken !== null) return false;
    q.publishUsed();
    if (!q.needsNotification()) {
      this.stats.notificationsSuppressed++;
      return false;
    }
    this.stats.notificationsSent++;
    this.#notifier?.notifyQueue(index);
    return true;
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
    if (this.#broken !== null) return;
    this.#broken = err;
    const where = queueIndex === undefined ? "" : ` (queue ${queueIndex})`;
    this.#log(
      `${this.#name()}: device broken${where}: ${err.code}: ${err.message}${formatDetails(err)}`,
    );
    for (const q of this.#queues) q?.markBroken(err);
    if (this.#features.frozen && this.#features.has(VIRTIO_F_VERSION_1))
      this.#status |= VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET;
    if ((this.#status & VIRTIO_CONFIG_S_DRIVER_OK) !== 0) {
      this.stats.configNotifications++;
      this.#notifier?.notifyConfig();
    }
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
    if (this.#resetting !== null) return this.#resetting;
    const p = this.#doReset().finally(() => {
      this.#resetting = null;
    });
    this.#resetting = p;
    return p;
  }

  async #doReset(): Promise<void> {
    if (this.#activated) {
      try {
        await this.backend.quiesce?.();
      } catch (e) {
        this.#log(`${this.#name()}: quiesce failed during reset: ${String(e)}`);
      }
    }
    this.#epoch++;
    try {
      this.backend.reset?.();
    } catch (e) {
      this.#log(`${this.#name()}: backend reset failed: ${String(e)}`);
    }
    const detached = new VirtioError(ErrorCode.DEVICE_RESET, "device was reset");
    for (const q of this.#queues) q?.markBroken(detached);
    this.#queues = this.#setup.map(() => null);
    this.#setup.forEach((q, i) => Object.assign(q, freshSetup(this.queueMaxSize(i))));
    this.#features.reset();
    this.#broken = null;
    this.#activated = false;
    // §2.4.2: the driver considers the reset complete once it reads 0: this is the last step.
    this.#status = 0;
  }

  #name(): string {
    return this.backend.name;
  }
}

function freshSetup(max: number): QueueSetup {
  return { size: max, descAddr: 0, availAddr: 0, usedAddr: 0, ready: false };
}

/** Why a ring cannot start, or null if it can (docs/conformance.md queue configuration row). */
function ringProblem(memory: GuestMemory, q: QueueSetup): string | null {
  const parts: [string, number, number, number][] = [
    ["descriptor table", q.descAddr, descTableSize(q.size), VIRTQ_DESC_ALIGN],
    ["available ring", q.availAddr, availRingSize(q.size), VIRTQ_AVAIL_ALIGN],
    ["used ring", q.usedAddr, usedRingSize(q.size), VIRTQ_USED_ALIGN],
  ];
  for (const [name, addr, len, align] of parts) {
    if (!Number.isSafeInteger(addr) || addr % align !== 0)
      return `${name} address ${addr} is not ${align}-aligned`;
    if (!memory.isInOneRegion(addr, len))
      return `${name} [0x${addr.toString(16)}, +${len}) is not inside one guest memory region`;
  }
  return null;
}

function isVirtio(e: unknown): e is VirtioError {
  return e instanceof VirtioError;
}

function hex(v: number): string {
  return (v >>> 0).toString(16).padStart(2, "0");
}

function formatDetails(err: VirtioError): string {
  const entries = Object.entries(err.details);
  if (entries.length === 0) return "";
  return ` {${entries.map(([k, v]) => `${k}=${String(v)}`).join(", ")}}`;
}

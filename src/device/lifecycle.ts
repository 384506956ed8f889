/**
 * What a device's status drives: the driver's features accepted or refused
 * at FEATURES_OK, the device type activated at DRIVER_OK, notifications to
 * the driver, the sticky *broken* state and the asynchronous reset. VIRTIO
 * 1.2 §2.1 (status; what a write means is ./status.ts), §2.1.2
 * (DEVICE_NEEDS_RESET), §2.2.2 (FEATURES_OK refused), §2.4 (reset), §3.1
 * (device initialization).
 *
 * FEATURES_OK is accepted only for a subset of the offered bits that
 * includes VIRTIO_F_VERSION_1 (a modern driver; legacy drivers below) and
 * passes the device type's `validateFeatures`; the set is then frozen.
 * DRIVER_OK activates the device type with the ready queues.
 *
 * Reset (status ← 0): kicks are ignored from then on, the device type
 * quiesces (stops popping, completes in-flight requests into the used
 * rings), the queues are detached (marked broken, so nothing more is ever
 * written to guest memory through them), and only then does the status
 * read 0 (§2.4.2: the driver considers the reset complete when it reads 0).
 * With requests in flight this is asynchronous; when the device type's
 * `quiesce` finishes at once (returns no promise) the reset is complete
 * before the status write returns.
 *
 * Legacy driver (set by the transport with `beginLegacy`, §4.1.4.10 /
 * §4.2.4, until the next reset): the driver sees feature bits 0–31 only
 * (VIRTIO_F_VERSION_1 is never negotiated) and never sets FEATURES_OK. Its
 * feature set is taken as it stands (unoffered bits dropped, with a log
 * line) at its first queue setup write or at DRIVER_OK, whichever comes
 * first, and the device type's `validateFeatures` is asked then; a refusal
 * leaves DRIVER_OK unset.
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
import {
  VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_F_VERSION_1,
} from "../spec/virtio.ts";
import type { ActivationContext, VirtioDeviceBackend } from "./backend.ts";
import type { FeatureNegotiation } from "./features.ts";
import type { QueueTable } from "./queue-setup.ts";
import { planStatusWrite } from "./status.ts";

/** How the device reaches the driver; the transport implements it. */
export interface DeviceNotifier {
  /** Used-buffer notification for queue `index` (an interrupt / call). */
  notifyQueue(index: number): void;
  /** Configuration change notification (§2.5; also sent for DEVICE_NEEDS_RESET). */
  notifyConfig(): void;
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

/** The parts of a device its lifecycle acts on. */
export interface LifecycleParts {
  readonly backend: VirtioDeviceBackend;
  readonly features: FeatureNegotiation;
  readonly queues: QueueTable;
  readonly stats: DeviceStats;
  /** Where log lines go (each already names the device). */
  readonly log: (line: string) => void;
}

/** The status byte of one device and everything it sets in motion. */
export class DeviceLifecycle {
  readonly #backend: VirtioDeviceBackend;
  readonly #features: FeatureNegotiation;
  readonly #queues: QueueTable;
  readonly #stats: DeviceStats;
  readonly #log: (line: string) => void;
  #memory: GuestMemory | null;
  #notifier: DeviceNotifier | null;
  #status = 0;
  #broken: VirtioError | null = null;
  #activated = false;
  #resetting: Promise<void> | null = null;
  #legacy = false;
  /** The device type refused the legacy driver's final feature set. */
  #legacyRefused = false;
  /** Bumped by every reset: callbacks from an older activation are ignored. */
  #epoch = 0;

  constructor(parts: LifecycleParts, memory: GuestMemory | null, notifier: DeviceNotifier | null) {
    this.#backend = parts.backend;
    this.#features = parts.features;
    this.#queues = parts.queues;
    this.#stats = parts.stats;
    this.#log = parts.log;
    this.#memory = memory;
    this.#notifier = notifier;
  }

  /** Guest memory the queues live in (null until given). */
  get memory(): GuestMemory | null {
    return this.#memory;
  }

  set memory(memory: GuestMemory) {
    this.#memory = memory;
  }

  /** How notifications reach the driver. */
  set notifier(notifier: DeviceNotifier) {
    this.#notifier = notifier;
  }

  /** The status byte (the old value while a reset is in progress). */
  get status(): number {
    return this.#status;
  }

  /** True while a reset is in progress. */
  get resetting(): boolean {
    return this.#resetting !== null;
  }

  /** DRIVER_OK done, not broken, not resetting. */
  get live(): boolean {
    return this.#activated && this.#broken === null && this.#resetting === null;
  }

  /** The error that broke the device, or null. */
  get broken(): VirtioError | null {
    return this.#broken;
  }

  /** Changes with every reset: a ring opened in an older epoch reports to nobody. */
  get epoch(): number {
    return this.#epoch;
  }

  /** True while a legacy driver drives the device (until the next reset). */
  get legacy(): boolean {
    return this.#legacy;
  }

  /**
   * The driver uses the legacy interface from now on (until reset). Refused
   * (false) while a reset runs or once a modern driver set FEATURES_OK.
   */
  beginLegacy(): boolean {
    if (this.#legacy) return true;
    if (this.#resetting !== null || (this.#status & VIRTIO_CONFIG_S_FEATURES_OK) !== 0)
      return false;
    this.#legacy = true;
    return true;
  }

  /**
   * A legacy driver's feature set is final (first queue setup write, or
   * DRIVER_OK): unoffered bits are dropped (logged), the set is frozen.
   */
  freezeLegacyFeatures(): void {
    const f = this.#features;
    if (!this.#legacy || f.frozen) return;
    if (!f.acceptable())
      this.#log(`legacy driver accepted unoffered bits 0x${f.unoffered.toString(16)}: dropped`);
    // §4.1.4.10: "Transitional Devices MUST assume that Feature Bits 32 to 63 are not
    // acknowledged by Driver" (whatever reached them through another interface).
    f.setDriverFeatures(f.negotiated & 0xffff_ffffn);
    f.freeze();
    // The device type sees the final set now, as a modern one does at FEATURES_OK.
    const validate = this.#backend.validateFeatures?.bind(this.#backend);
    this.#legacyRefused = validate !== undefined && !validate(f.negotiated);
  }

  /** A driver write to the status field; see {@link VirtioDevice.writeStatus}. */
  async writeStatus(value: number): Promise<void> {
    if (this.#resetting !== null) {
      if ((value & 0xff) === 0) return this.#resetting;
      this.#log(`status write 0x${hex(value)} ignored: reset in progress`);
      return;
    }
    const plan = planStatusWrite(this.#status, value, this.#legacy);
    switch (plan.kind) {
      case "reset":
        return this.reset();
      case "fail":
        this.#status = plan.status;
        return;
      case "ignore":
        this.#log(`status write ignored: ${plan.reason}`);
        return;
      case "advance":
        return this.#advance(plan.steps, plan.addsFeaturesOk, plan.addsDriverOk);
    }
  }

  async #advance(steps: number, addsFeaturesOk: boolean, addsDriverOk: boolean): Promise<void> {
    let target = steps;
    if (addsDriverOk && this.#legacy && !this.#legacyFeaturesAcceptable()) {
      target &= ~VIRTIO_CONFIG_S_DRIVER_OK;
      addsDriverOk = false;
    } else if (addsFeaturesOk && !this.#featuresAcceptable()) {
      // §2.2.2: the device "MUST fail to set the FEATURES_OK device status bit" for a subset it can't accept.
      target &= ~(VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
      addsDriverOk = false;
    } else if (addsFeaturesOk) {
      this.#features.freeze();
    }
    this.#status = target | (this.#status & VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET);
    if (addsDriverOk) await this.#activate();
  }

  /** Legacy DRIVER_OK: the feature set becomes final and the device type may refuse it. */
  #legacyFeaturesAcceptable(): boolean {
    this.freezeLegacyFeatures();
    if (this.#legacyRefused)
      this.#log(`DRIVER_OK refused: the device refuses the legacy driver's features`);
    return !this.#legacyRefused;
  }

  #featuresAcceptable(): boolean {
    const f = this.#features;
    if (!f.acceptable()) {
      this.#log(
        `FEATURES_OK refused: driver accepted unoffered bits 0x${f.unoffered.toString(16)}`,
      );
      return false;
    }
    if (!f.has(VIRTIO_F_VERSION_1)) {
      this.#log(`FEATURES_OK refused: VIRTIO_F_VERSION_1 not accepted`);
      return false;
    }
    const backend = this.#backend;
    if (backend.validateFeatures !== undefined && !backend.validateFeatures(f.negotiated)) {
      this.#log(`FEATURES_OK refused by the device`);
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
      queues: this.#queues.rings,
      signalUsed: (i) => (epoch === this.#epoch ? this.signalUsed(i) : false),
      markBroken: (err) => {
        if (epoch === this.#epoch) this.markBroken(err);
      },
    };
    try {
      await this.#backend.activate(ctx);
    } catch (e) {
      if (epoch !== this.#epoch) return;
      const err = isVirtio(e)
        ? e
        : new VirtioError(ErrorCode.DEVICE_BROKEN, `activation failed: ${String(e)}`);
      this.markBroken(err);
    }
  }

  // ---- notifications (§2.3) ----

  /** A kick for queue `index`; see {@link VirtioDevice.queueNotify}. */
  queueNotify(index: number): void {
    if (!this.live || (this.#queues.rings[index] ?? null) === null) {
      this.#stats.kicksIgnored++;
      return;
    }
    this.#stats.kicks++;
    this.#backend.queueNotify?.(index);
  }

  /** Publishes and notifies for queue `index`; see {@link VirtioDevice.signalUsed}. */
  signalUsed(index: number): boolean {
    const q = this.#queues.rings[index];
    if (q === undefined || q === null || this.#broken !== null) return false;
    q.publishUsed();
    if (!q.needsNotification()) {
      this.#stats.notificationsSuppressed++;
      return false;
    }
    this.#stats.notificationsSent++;
    this.#notifier?.notifyQueue(index);
    return true;
  }

  /** The configuration space changed: notify the driver if DRIVER_OK is set and no reset runs (§2.5). */
  configChanged(): void {
    if ((this.#status & VIRTIO_CONFIG_S_DRIVER_OK) === 0 || this.#resetting !== null) return;
    this.#stats.configNotifications++;
    this.#notifier?.notifyConfig();
  }

  // ---- broken (docs/conformance.md "Ring violations") ----

  /** Makes the device broken; see {@link VirtioDevice.markBroken}. */
  markBroken(err: VirtioError, queueIndex?: number): void {
    if (this.#broken !== null) return;
    this.#broken = err;
    const where = queueIndex === undefined ? "" : ` (queue ${queueIndex})`;
    this.#log(`device broken${where}: ${err.code}: ${err.message}${formatDetails(err)}`);
    this.#queues.markBroken(err);
    if (this.#features.frozen && this.#features.has(VIRTIO_F_VERSION_1))
      this.#status |= VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET;
    if ((this.#status & VIRTIO_CONFIG_S_DRIVER_OK) !== 0) {
      this.#stats.configNotifications++;
      this.#notifier?.notifyConfig();
    }
  }

  // ---- reset (§2.4) ----

  /** Resets the device; see {@link VirtioDevice.reset}. Concurrent calls share one reset. */
  reset(): Promise<void> {
    if (this.#resetting !== null) return this.#resetting;
    const quiesced = this.#quiesce();
    if (quiesced === null) {
      // Nothing in flight: the reset is complete before the status write returns (Linux's
      // virtio-mmio and legacy virtio-pci drivers write 0 and go on without waiting for it).
      this.#finishReset();
      return Promise.resolve();
    }
    const p = quiesced
      .then(() => this.#finishReset())
      .finally(() => {
        this.#resetting = null;
      });
    this.#resetting = p;
    return p;
  }

  /** Lets an activated device type quiesce: null when it finished at once, else when it will. */
  #quiesce(): Promise<void> | null {
    if (!this.#activated) return null;
    const fail = (e: unknown): void => this.#log(`quiesce failed during reset: ${String(e)}`);
    try {
      const r = this.#backend.quiesce?.();
      if (r === undefined || typeof (r as { then?: unknown }).then !== "function") return null;
      return Promise.resolve(r).catch(fail);
    } catch (e) {
      fail(e);
      return null;
    }
  }

  #finishReset(): void {
    this.#epoch++;
    try {
      this.#backend.reset?.();
    } catch (e) {
      this.#log(`backend reset failed: ${String(e)}`);
    }
    this.#queues.reset(new VirtioError(ErrorCode.DEVICE_RESET, "device was reset"));
    this.#features.reset();
    this.#broken = null;
    this.#activated = false;
    this.#legacy = false;
    this.#legacyRefused = false;
    // §2.4.2: the driver considers the reset complete once it reads 0: this is the last step.
    this.#status = 0;
  }
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

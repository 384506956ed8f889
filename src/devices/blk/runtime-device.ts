/**
 * virtio-blk's dataplane half: what a dataplane runtime (a worker, or the
 * calling thread) holds for one blk device — the disk, the request policy
 * with the shared cache-mode word — and one {@link BlkQueueEngine} per
 * started queue. VIRTIO 1.2 §5.2 (Block Device), §5.2.6 (requests), §2.4
 * (reset: the engine completes what is in flight, then stops).
 *
 * @module
 */
import type {
  DataplaneDevice,
  DeviceOpener,
  DeviceSpec,
  QueueContext,
  QueueHandler,
} from "../../dataplane/device.ts";
import type { BlkBacking } from "./backing.ts";
import type { BackingOpener, BackingSpec } from "./backing-spec.ts";
import { DataplanePolicy } from "./cache-mode.ts";
import type { BlkDeviceOptions } from "./config.ts";
import { BlkDeviceCore } from "./core.ts";
import { EngineWatchdog } from "./engine-watchdog.ts";
import { BlkQueueEngine } from "./queue-engine.ts";

/** The device kind of virtio-blk specs. */
export const BLK_DEVICE_KIND = "virtio-blk";

/** The blk configuration a runtime rebuilds (capacity comes from the disk). */
export type BlkDataplaneConfig = Omit<BlkDeviceOptions, "capacityBytes">;

/** The engine limits of every queue of a device. */
export interface BlkEngineLimits {
  /** Requests in flight per queue (engine default when absent). */
  readonly maxInFlight?: number;
  /** Chains popped per run before yielding (engine default when absent). */
  readonly budget?: number;
  /** A request in flight this long is logged as stalled (default 30). */
  readonly stallSeconds?: number;
  /** Longest adaptive poll window in ns when a queue runs dry; 0 or absent: no polling. */
  readonly pollMaxNs?: number;
}

const LIMIT_KEYS = ["maxInFlight", "budget", "stallSeconds", "pollMaxNs"] as const;

/** The limits given in `o` (absent ones stay absent: the engine's defaults apply). */
export function engineLimits(o: BlkEngineLimits): BlkEngineLimits {
  const limits: Record<string, number> = {};
  for (const k of LIMIT_KEYS) if (o[k] !== undefined) limits[k] = o[k];
  return limits;
}

/** `o` without its engine limits. */
export function withoutLimits<T extends BlkEngineLimits>(o: T): Omit<T, keyof BlkEngineLimits> {
  const rest = { ...o } as Record<string, unknown>;
  for (const k of LIMIT_KEYS) delete rest[k];
  return rest as Omit<T, keyof BlkEngineLimits>;
}

/** How a runtime opens a blk device (plain data). */
export interface BlkDeviceSpec extends DeviceSpec, BlkEngineLimits {
  readonly kind: typeof BLK_DEVICE_KIND;
  readonly backing: BackingSpec;
  readonly config: BlkDataplaneConfig;
  /** The cache-mode word of the device's control side (./cache-mode.ts). */
  readonly cacheMode: SharedArrayBuffer;
}

/** What the control side learns when a runtime opened the disk. */
export interface BlkDeviceInfo {
  readonly size: number;
  readonly readOnly: boolean;
}

/** One blk device inside a runtime. */
export class BlkRuntimeDevice implements DataplaneDevice {
  readonly backing: BlkBacking;
  readonly #policy: DataplanePolicy;
  readonly #limits: BlkEngineLimits;
  readonly #engines = new Map<number, BlkQueueEngine>();
  readonly #watchdog: EngineWatchdog;

  constructor(backing: BlkBacking, policy: DataplanePolicy, limits: BlkEngineLimits = {}) {
    this.backing = backing;
    this.#policy = policy;
    this.#limits = limits;
    this.#watchdog = new EngineWatchdog(limits.stallSeconds);
  }

  /** The engine of a running queue (for stats and tests). */
  engine(index: number): BlkQueueEngine | undefined {
    const e = this.#engines.get(index);
    return e === undefined || e.stopped ? undefined : e;
  }

  startQueue(ctx: QueueContext): QueueHandler {
    // Every start follows feature negotiation; all queues of a device share the features.
    this.#policy.negotiate(ctx.features);
    const engine = new BlkQueueEngine({
      queue: ctx.queue,
      queueIndex: ctx.index,
      backing: this.backing,
      policy: this.#policy,
      ...engineLimits({
        maxInFlight: this.#limits.maxInFlight,
        budget: this.#limits.budget,
        pollMaxNs: this.#limits.pollMaxNs,
      }),
      signalUsed: () => void ctx.signalUsed(),
      onBroken: (err) => ctx.markBroken(err),
      memoryFault: () => ctx.memoryFault(),
      logger: ctx.logger,
      schedule: ctx.schedule,
    });
    this.#engines.set(ctx.index, engine);
    this.#watchdog.add(engine, ctx.index, ctx.logger);
    return engine;
  }

  /**
   * `resize` (bytes): the disk first, then the capacity the requests are
   * checked against. `flush`: makes every completed write stable (on stop).
   */
  async control(op: string, args: unknown): Promise<void> {
    if (op === "flush") return this.backing.flush();
    if (op !== "resize") throw new TypeError(`virtio-blk has no operation ${op}`);
    const bytes = args as number;
    if (this.backing.resize === undefined)
      throw new TypeError("this backing store cannot be resized");
    if (this.backing.size !== bytes) await this.backing.resize(bytes);
    this.#policy.resize(bytes);
  }

  async close(): Promise<void> {
    this.#watchdog.stop();
    await this.backing.close();
  }
}

/**
 * The runtime's opener of blk specs: opens the disk with `openBacking` and
 * rebuilds the request policy; the control side learns the disk's size.
 */
export function blkDeviceOpener(openBacking: BackingOpener): DeviceOpener {
  return async (s, ctx) => {
    const spec = s as BlkDeviceSpec;
    const logicalBlockSize = spec.config.logicalBlockSize ?? 512;
    const backing = await openBacking(spec.backing, { logicalBlockSize, logger: ctx.logger });
    try {
      const readOnly = spec.config.readOnly ?? backing.readOnly;
      if (backing.readOnly && !readOnly)
        throw new RangeError("a read-only backing store needs a read-only device");
      const policy = new DataplanePolicy(
        { ...spec.config, capacityBytes: backing.size, readOnly },
        spec.cacheMode,
      );
      const info: BlkDeviceInfo = { size: backing.size, readOnly };
      return { device: new BlkRuntimeDevice(backing, policy, engineLimits(spec)), info };
    } catch (e) {
      await backing.close().catch(() => {});
      throw e;
    }
  };
}

/**
 * A blk device over a backing store object, its queues on the calling
 * thread: the store and the device's configuration (capacity and RO come
 * from the store). Options of
 * {@link "virtio-ts/vhost-user"!VhostUserBlkBackend.withBacking | VhostUserBlkBackend.withBacking}.
 */
export interface BlkOnBackingOptions extends BlkDataplaneConfig, BlkEngineLimits {
  readonly backing: BlkBacking;
}

/**
 * A blk device over a backing store object, its queues on the calling
 * thread: the control core and the dataplane half, sharing the cache-mode
 * word (the capacity and RO come from the store).
 *
 * @throws {RangeError} for a bad configuration, or a read-only store under a writable device.
 */
export function blkOnBacking(o: BlkOnBackingOptions): {
  core: BlkDeviceCore;
  device: BlkRuntimeDevice;
} {
  const { backing, ...config } = withoutLimits(o);
  const readOnly = config.readOnly ?? backing.readOnly;
  if (backing.readOnly && !readOnly)
    throw new RangeError("a read-only backing store needs a read-only device");
  const options = { ...config, capacityBytes: backing.size, readOnly };
  const core = new BlkDeviceCore(options);
  const policy = new DataplanePolicy(options, core.cacheMode);
  return { core, device: new BlkRuntimeDevice(backing, policy, engineLimits(o)) };
}

/**
 * Test rig for virtio-blk through the in-process transport with the
 * dataplane: the device's control (VirtioDevice + BlkDataplaneDevice +
 * InprocDeviceTransport in async mode) on the test's main thread, the queues
 * on dataplane workers, the driver in its own worker (./blk-driver-worker.ts),
 * the disk image in a temporary directory; the rings split or packed (the
 * rig's `layout`). Every wait is bounded.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { VirtioDevice } from "../../src/device/virtio-device.ts";
import {
  BlkDataplaneDevice,
  type BackingSpec,
  type BlkDataplaneDeviceOptions,
} from "../../src/devices/blk/index.ts";
import { DATAPLANE_WORKER } from "../../src/devices/node-dataplane.ts";
import { inprocDataplaneBinding } from "../../src/transport/inproc/dataplane-binding.ts";
import type { LogFields, Logger } from "../../src/log.ts";
import { GuestMemory } from "../../src/memory/guest-memory.ts";
import type { RingLayoutKind } from "../../src/ring/ring-layout.ts";
import { splitOnly } from "../../src/testing/index.ts";
import {
  InprocDeviceTransport,
  createRegisters,
  nextMessage,
  stopInprocDevice,
  type InprocShared,
  type WorkerThread,
} from "../../src/transport/inproc/index.ts";
import { nodeThreadHost } from "../../src/dataplane/node-threads.ts";
import {
  GUEST_BYTES,
  ringSize,
  type DriverCommand,
  type DriverReply,
  type RawReq,
  type RawResult,
  type WorkloadOptions,
  type WorkloadReport,
} from "./blk-layout.ts";

/** worker_threads that can start .ts modules (tsx is a dev dependency). */
export const threads = nodeThreadHost({ loaderRegister: import.meta.resolve("tsx/esm/api") });

/** Bound on one driver command, in ms. */
const COMMAND_MS = 60_000;

/** Records every log line of the device (control thread and workers). */
export class RecordingLogger implements Logger {
  readonly errors: string[] = [];
  /** The structured fields of each error line, in the same order. */
  readonly errorFields: (LogFields | undefined)[] = [];
  readonly warnings: string[] = [];
  error(m: string, fields?: LogFields): void {
    this.errors.push(m);
    this.errorFields.push(fields);
  }
  warn(m: string): void {
    this.warnings.push(m);
  }
}

/** A fresh temporary directory, removed by `cleanup()`. */
export function tempDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), "virtio-ts-blk-int-"));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Writes an image file and returns its path. */
export function writeImage(dir: string, name: string, content: Uint8Array): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

/** Options of {@link InprocBlkRig.start}: the device's, minus what the rig supplies. */
export type RigOptions = Omit<
  BlkDataplaneDeviceOptions,
  "threads" | "workerModule" | "binding" | "backing"
> & {
  readonly backing: BackingSpec;
  readonly workerModule?: URL;
  /** The rings the driver sets up by default (default "packed": what accepting every offered feature gives). */
  readonly layout?: RingLayoutKind;
};

/** Result of a `run` command. */
export interface RunReport {
  readonly broken: boolean;
  readonly status: number;
  readonly results: readonly (RawResult | null)[];
  readonly outstanding: number;
}

/** One device and one driver, live. */
export class InprocBlkRig {
  readonly memory: GuestMemory;
  readonly shared: InprocShared;
  readonly blk: BlkDataplaneDevice;
  readonly device: VirtioDevice;
  readonly transport: InprocDeviceTransport;
  readonly log: RecordingLogger;
  readonly deviceLog: string[];
  /** The rings {@link init} and {@link blkInit} set up. */
  readonly layout: RingLayoutKind;
  readonly #loop: Promise<void>;
  readonly #driver: WorkerThread;

  private constructor(
    memory: GuestMemory,
    shared: InprocShared,
    blk: BlkDataplaneDevice,
    log: RecordingLogger,
    driver: WorkerThread,
    layout: RingLayoutKind,
  ) {
    this.layout = layout;
    this.memory = memory;
    this.shared = shared;
    this.blk = blk;
    this.log = log;
    this.deviceLog = [];
    this.device = new VirtioDevice(blk, { memory, log: (l) => this.deviceLog.push(l) });
    this.transport = new InprocDeviceTransport(shared.registers, this.device);
    // The control thread keeps its event loop free (async mode): worker reports arrive as messages.
    this.#loop = this.transport.run({ wait: "async", sleepSliceMs: 100 });
    this.#driver = driver;
  }

  /** Starts the device (its workers open the disk), the control loop and the driver worker. */
  static async start(rigOptions: RigOptions): Promise<InprocBlkRig> {
    const { layout = "packed", ...o } = rigOptions;
    const memory = GuestMemory.createShared([{ guestPhysAddr: 0, size: GUEST_BYTES }]);
    const numQueues = o.numQueues ?? 1;
    const shared: InprocShared = {
      registers: createRegisters(numQueues),
      memory: memory.toTransferable(),
    };
    const log = o.logger instanceof RecordingLogger ? o.logger : new RecordingLogger();
    const blk = await BlkDataplaneDevice.create({
      ...o,
      logger: log,
      threads,
      workerModule: o.workerModule ?? DATAPLANE_WORKER,
      binding: inprocDataplaneBinding(shared.registers),
      timeoutMs: 20_000,
    });
    const driver = threads.spawn(new URL("./blk-driver-worker.ts", import.meta.url), { shared });
    try {
      await nextMessage(driver, isReply, COMMAND_MS);
    } catch (e) {
      await driver.terminate();
      await blk.dispose();
      throw e;
    }
    return new InprocBlkRig(memory, shared, blk, log, driver, layout);
  }

  /** Sends a command to the driver worker and waits (bounded) for its answer. */
  async command<T>(c: DriverCommand): Promise<T> {
    const reply = nextMessage(this.#driver, isReply, COMMAND_MS);
    this.#driver.postMessage(c);
    const r = await reply;
    if (!r.ok) assert.fail(`driver: ${r.error}`);
    return r.value as T;
  }

  /** The queue size on this rig's rings where split rings have `n` ({@link ringSize}). */
  ringSize(n: number): number {
    return ringSize(this.layout, n);
  }

  /**
   * Negotiates `features` (default: all offered, less RING_PACKED on a split
   * rig), sets up the queues in the negotiated layout (default size
   * `ringSize(128)`) and sets DRIVER_OK.
   */
  init(
    o: { features?: bigint; queues?: number; queueSize?: number; indirect?: boolean } = {},
  ): Promise<{ features: bigint; status: number }> {
    const offered = this.device.readDeviceFeatures();
    return this.command({
      cmd: "init",
      features: o.features ?? (this.layout === "split" ? splitOnly(offered) : offered),
      queues: o.queues ?? this.device.numQueues,
      queueSize: o.queueSize ?? this.ringSize(128),
      indirect: o.indirect ?? true,
    });
  }

  /** Initializes the device with the BlkDriver on this rig's rings, `queueSize` entries each. */
  blkInit(queues: number, queueSize: number): Promise<number> {
    return this.command({ cmd: "blk-init", queues, queueSize, layout: this.layout });
  }

  run(reqs: readonly RawReq[], maxInFlight?: number): Promise<RunReport> {
    return this.command({
      cmd: "run",
      reqs,
      ...(maxInFlight === undefined ? {} : { maxInFlight }),
    });
  }

  /** Runs one request and returns its result (asserts it completed). */
  async one(req: RawReq): Promise<RawResult> {
    const r = await this.run([req]);
    assert.equal(r.broken, false, "device broken");
    return r.results[0]!;
  }

  workload(workload: WorkloadOptions): Promise<WorkloadReport> {
    return this.command({ cmd: "workload", workload });
  }

  /** Driver-side reset; returns the requests it failed. */
  reset(): Promise<number> {
    return this.command({ cmd: "reset" });
  }

  /** Ends everything (bounded). */
  async close(): Promise<void> {
    stopInprocDevice(this.shared.registers);
    await this.#driver.terminate();
    await this.#loop;
    await this.blk.dispose();
  }
}

function isReply(m: unknown): m is DriverReply {
  return typeof m === "object" && m !== null && "ok" in m;
}

/** Deterministic pseudo-random bytes. */
export function pattern(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}

/** DISCARD / WRITE_ZEROES segments. */
export function segments(
  segs: readonly { sector: number | bigint; num: number; flags?: number }[],
): Uint8Array {
  const b = new Uint8Array(16 * segs.length);
  const dv = new DataView(b.buffer);
  segs.forEach((s, i) => {
    dv.setBigUint64(16 * i, BigInt.asUintN(64, BigInt(s.sector)), true);
    dv.setUint32(16 * i + 8, s.num >>> 0, true);
    dv.setUint32(16 * i + 12, (s.flags ?? 0) >>> 0, true);
  });
  return b;
}

/** Waits (bounded) until `pred()` holds. */
export async function until(pred: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * Runs one driver/device session over the in-process transport from the
 * main thread: allocates guest memory and the register block, starts a
 * device worker and a driver worker (worker_threads), waits (bounded) for
 * the driver's report, stops the device and collects its report. Used by
 * the demo and the stress test.
 *
 * @module
 */
import { GuestMemory } from "../src/memory/guest-memory.ts";
import { vringLayout } from "../src/ring/layout.ts";
import {
  createRegisters,
  nextMessage,
  stopInprocDevice,
  type DeviceLoopOptions,
  type InprocShared,
  type WorkerThread,
} from "../src/transport/inproc/index.ts";
import { nodeThreadHost } from "../src/dataplane/node-threads.ts";
import { SlotPool, type PumpOptions } from "./checksum-driver.ts";
import type { DeviceWorkerDone, DeviceWorkerInit } from "./device-worker.ts";
import type { DriverWorkerDone, DriverWorkerError, DriverWorkerInit } from "./driver-worker.ts";

/** What to run. */
export interface SessionOptions {
  readonly features: bigint;
  readonly queueSize: number;
  readonly mode: "checksum" | "null";
  readonly deviceLoop: DeviceLoopOptions;
  readonly driverSpin: number;
  readonly runs: readonly PumpOptions[];
  /** Bound on the whole session in ms. */
  readonly timeoutMs: number;
}

/** Both sides' reports. */
export interface SessionReport {
  readonly driver: DriverWorkerDone;
  readonly device: DeviceWorkerDone;
}

const RING_BASE = 0x10000;

/** Starts worker_threads that may run .ts modules (development: tsx is a dev dependency). */
export const threadHost = nodeThreadHost({ loaderRegister: import.meta.resolve("tsx/esm/api") });

const isType =
  <T extends { type: string }>(type: string) =>
  (m: unknown): m is T =>
    typeof m === "object" && m !== null && (m as { type?: unknown }).type === type;

/** Runs one session; rejects on a driver error, a stall or the timeout. */
export async function runSession(o: SessionOptions): Promise<SessionReport> {
  const ring = vringLayout(o.queueSize, RING_BASE);
  const payloadMax = Math.max(...o.runs.map((r) => r.payloadBytes));
  const slotsBase = Math.ceil((RING_BASE + ring.totalBytes) / 4096) * 4096;
  const slotsBytes = SlotPool.bytes(o.queueSize, payloadMax);
  const memSize = Math.ceil((slotsBase + slotsBytes) / 65536 + 1) * 65536;
  const memory = GuestMemory.createShared([{ guestPhysAddr: 0, size: memSize }]);
  const shared: InprocShared = { registers: createRegisters(1), memory: memory.toTransferable() };
  const deviceInit: DeviceWorkerInit = {
    shared,
    mode: o.mode,
    queueSize: o.queueSize,
    loop: o.deviceLoop,
  };
  const threads: WorkerThread[] = [];
  try {
    const device = threadHost.spawn(new URL("./device-worker.ts", import.meta.url), deviceInit);
    threads.push(device);
    await nextMessage(device, isType("device-ready"), o.timeoutMs);
    const deviceDone = nextMessage<DeviceWorkerDone>(device, isType("device-done"), o.timeoutMs);
    deviceDone.catch(() => {}); // observed below
    const driverInit: DriverWorkerInit = {
      shared,
      features: o.features,
      queueSize: o.queueSize,
      ringBase: RING_BASE,
      slotsBase,
      slotsBytes,
      spin: o.driverSpin,
      runs: o.runs,
    };
    const driver = threadHost.spawn(new URL("./driver-worker.ts", import.meta.url), driverInit);
    threads.push(driver);
    const answer = await nextMessage<DriverWorkerDone | DriverWorkerError>(
      driver,
      (m): m is DriverWorkerDone | DriverWorkerError =>
        isType("driver-done")(m) || isType("driver-error")(m),
      o.timeoutMs,
    );
    stopInprocDevice(shared.registers);
    const deviceReport = await deviceDone;
    if (answer.type === "driver-error") throw new Error(`driver: ${answer.message}`);
    return { driver: answer, device: deviceReport };
  } finally {
    stopInprocDevice(shared.registers);
    await Promise.all(threads.map((t) => t.terminate()));
  }
}

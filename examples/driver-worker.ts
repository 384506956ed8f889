/**
 * A driver thread for the in-process transport (worker_threads): receives
 * {@link DriverWorkerInit}, initializes the device (§3.1.1), runs each
 * {@link PumpOptions} run against the checksum device and posts
 * {@link DriverWorkerDone} (or {@link DriverWorkerError}).
 *
 * @module
 */
import { vringLayout } from "../src/ring/layout.ts";
import {
  InprocDriverTransport,
  type DriverTransportStats,
  type InprocShared,
} from "../src/transport/inproc/index.ts";
import { nodeParentEndpoint } from "../src/dataplane/node-threads.ts";
import { SlotPool, pumpChecksum, type PumpOptions, type PumpResult } from "./checksum-driver.ts";

/** First message to the worker. */
export interface DriverWorkerInit {
  readonly shared: InprocShared;
  /** Features the driver wants (the accepted set is what the device also offers). */
  readonly features: bigint;
  readonly queueSize: number;
  /** Guest address of the ring. */
  readonly ringBase: number;
  /** Guest address and size of the buffer slots area. */
  readonly slotsBase: number;
  readonly slotsBytes: number;
  /** Busy-poll rounds before sleeping (0 = sleep at once). */
  readonly spin: number;
  readonly runs: readonly PumpOptions[];
}

/** One run's outcome with the driver-transport counters it caused. */
export interface DriverRunReport {
  readonly result: PumpResult;
  readonly stats: DriverTransportStats;
}

export interface DriverWorkerDone {
  readonly type: "driver-done";
  readonly features: bigint;
  readonly runs: readonly DriverRunReport[];
}

export interface DriverWorkerError {
  readonly type: "driver-error";
  readonly message: string;
}

const parent = nodeParentEndpoint();
const off = parent.onMessage((m) => {
  off();
  try {
    parent.postMessage(drive(m as DriverWorkerInit));
  } catch (e) {
    const err: DriverWorkerError = {
      type: "driver-error",
      message: e instanceof Error ? `${e.name}: ${e.message}` : String(e),
    };
    parent.postMessage(err);
  }
});

function drive(init: DriverWorkerInit): DriverWorkerDone {
  const driver = new InprocDriverTransport(init.shared, { spin: init.spin });
  const features = driver.run(driver.negotiate(init.features));
  const dq = driver.run(driver.setupQueue<number>(0, vringLayout(init.queueSize, init.ringBase)));
  driver.run(driver.start());
  const runs: DriverRunReport[] = [];
  for (const opts of init.runs) {
    const slots = Math.min(init.queueSize, opts.maxInFlight);
    const pool = new SlotPool(
      driver.memory.slice(init.slotsBase, init.slotsBytes),
      slots,
      opts.payloadBytes,
    );
    const before = { ...driver.stats };
    const result = pumpChecksum(driver, dq, pool, opts);
    const stats = { ...driver.stats };
    for (const k of Object.keys(stats) as (keyof DriverTransportStats)[]) stats[k] -= before[k];
    runs.push({ result, stats });
  }
  driver.run(driver.reset());
  return { type: "driver-done", features, runs };
}

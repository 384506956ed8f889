/**
 * Driver thread of the blk benchmark (worker_threads): initializes a
 * virtio-blk device over the in-process transport, then runs timed loops of
 * 4 KiB reads at random 4 KiB-aligned offsets, keeping `depth` requests in
 * flight on each of `queues` queues (one thread serves every queue and
 * sleeps once for all of them). Nothing is allocated per request.
 *
 * @module
 */
import type { DriverRing, Segment } from "../src/ring/driver-ring.ts";
import { vringLayout } from "../src/ring/layout.ts";
import * as blk from "../src/spec/blk.ts";
import {
  InprocDriverTransport,
  type DriverTransportStats,
  type InprocShared,
} from "../src/transport/inproc/index.ts";
import { nodeParentEndpoint } from "../src/dataplane/node-threads.ts";
import { processCpuMicros, threadCpuMicros } from "./blk-cpu.ts";

export interface BlkBenchDriverInit {
  readonly shared: InprocShared;
  readonly features: bigint;
  readonly queues: number;
  readonly queueSize: number;
}

/** One timed loop. */
export interface BlkBenchJob {
  readonly queues: number;
  /** Requests in flight per queue. */
  readonly depth: number;
  readonly ops: number;
  readonly seed: number;
  /** Offsets are drawn from [0, diskBytes) in 4 KiB steps. */
  readonly diskBytes: number;
}

export interface BlkBenchJobResult {
  readonly elapsedMs: number;
  /** Process-wide CPU (every thread) over the loop, µs. */
  readonly processCpuUs: number;
  /** This (driver) thread's CPU over the loop, µs. */
  readonly driverCpuUs: number;
  readonly errors: number;
  readonly stats: DriverTransportStats;
}

const RING_BASE = 0x10000;
const RING_STRIDE = 0x20000;
const ARENA_OFFSET = 0x10000;
const SLOTS_BASE = 0x100000;
const SLOT_BYTES = 8192;
const BLOCK = 4096;
const WAIT_MS = 20_000;

let driver: InprocDriverTransport;
let queues: DriverRing<number>[] = [];

const parent = nodeParentEndpoint();
parent.onMessage((m) => {
  const msg = m as { type?: string } | null;
  if (msg === null || typeof msg !== "object") return;
  try {
    if (msg.type === "init")
      parent.postMessage({ type: "ready", value: init(m as BlkBenchDriverInit) });
    else if (msg.type === "job")
      parent.postMessage({ type: "result", value: run((m as { job: BlkBenchJob }).job) });
    else if (msg.type === "reset") {
      driver.run(driver.reset());
      parent.postMessage({ type: "reset-done" });
    }
  } catch (e) {
    parent.postMessage({ type: "error", message: e instanceof Error ? e.message : String(e) });
  }
});

function init(o: BlkBenchDriverInit): bigint {
  driver = new InprocDriverTransport(o.shared, { controlTimeoutMs: WAIT_MS });
  const features = driver.run(driver.negotiate(o.features));
  queues = [];
  for (let q = 0; q < o.queues; q++) {
    const base = RING_BASE + q * RING_STRIDE;
    queues.push(
      driver.run(
        driver.setupQueue<number>(q, {
          ...vringLayout(o.queueSize, base),
          indirectArena: { addr: base + ARENA_OFFSET, entriesPerChain: 4 },
        }),
      ),
    );
  }
  driver.run(driver.start());
  return features;
}

/** xorshift32 */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

function run(job: BlkBenchJob): BlkBenchJobResult {
  const mem = driver.memory;
  const next = rng(job.seed);
  const blocks = job.diskBytes / BLOCK;
  const nSlots = job.queues * job.depth;
  // Per slot: header at +0, status at +16, data (4 KiB-aligned) at +4096; segments built once.
  const readable: Segment[][] = [];
  const writable: Segment[][] = [];
  for (let s = 0; s < nSlots; s++) {
    const base = SLOTS_BASE + s * SLOT_BYTES;
    mem.writeU32(base, blk.VIRTIO_BLK_T_IN);
    mem.writeU32(base + 4, 0);
    readable.push([{ addr: base, len: 16 }]);
    writable.push([
      { addr: base + 4096, len: BLOCK },
      { addr: base + 16, len: 1 },
    ]);
  }
  const submit = (slot: number, q: number): void => {
    const base = SLOTS_BASE + slot * SLOT_BYTES;
    const sector = (next() % blocks) * (BLOCK / 512);
    mem.writeU32(base + 8, sector);
    mem.writeU32(base + 12, 0);
    mem.writeU8(base + 16, 0xff);
    if (!queues[q]!.stage(readable[slot]!, writable[slot]!, slot))
      throw new Error(`queue ${q} full`);
  };
  const before = { ...driver.stats };
  const cpu0 = processCpuMicros();
  const thread0 = threadCpuMicros();
  const t0 = performance.now();
  let submitted = 0;
  let completed = 0;
  let errors = 0;
  for (let q = 0; q < job.queues; q++) {
    for (let d = 0; d < job.depth && submitted < job.ops; d++) {
      submit(q * job.depth + d, q);
      submitted++;
    }
    driver.kick(q);
  }
  while (completed < job.ops) {
    let got = 0;
    for (let q = 0; q < job.queues; q++) {
      const dq = queues[q]!;
      let resubmitted = 0;
      while (dq.nextUsed()) {
        const slot = dq.usedToken;
        got++;
        if (mem.readU8(SLOTS_BASE + slot * SLOT_BYTES + 16) !== blk.VIRTIO_BLK_S_OK) errors++;
        if (submitted < job.ops) {
          submit(slot, q);
          submitted++;
          resubmitted++;
        }
      }
      if (resubmitted > 0) driver.kick(q);
    }
    completed += got;
    if (got > 0 || completed >= job.ops) continue;
    const r = driver.waitUsedAny(WAIT_MS);
    if (r === "timeout")
      throw new Error(`stall: ${submitted - completed} outstanding for ${WAIT_MS} ms`);
    if (r === "config") throw new Error("configuration change (device broken?) during the run");
  }
  const elapsedMs = performance.now() - t0;
  const driverCpuUs = threadCpuMicros() - thread0;
  const processCpuUs = processCpuMicros() - cpu0;
  const stats = { ...driver.stats };
  for (const k of Object.keys(stats) as (keyof DriverTransportStats)[]) stats[k] -= before[k];
  return { elapsedMs, processCpuUs, driverCpuUs, errors, stats };
}

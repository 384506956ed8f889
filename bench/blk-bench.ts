/**
 * virtio-blk benchmark: 4 KiB random reads from an image file in the page
 * cache (64 MiB, read once before measuring), queue depth 1 and 32 per
 * queue, 1 and 2 queues. The device runs as in production: control
 * (VirtioDevice + in-process transport, async loop) on the main thread, one
 * dataplane worker per queue, the driver in its own worker. The baseline,
 * measured in the same run and interleaved with it, does the same reads
 * (same offsets, same total concurrency: queues × depth) directly with
 * callback `fs.read` positioned reads from one thread: the floor the device
 * adds to. A second reference does them with `FileHandle.read` (promises),
 * the API the file backing store uses.
 *
 * Per point: IOPS and CPU time per I/O over every thread of the process
 * (`process.cpuUsage`), for the device split into the driver thread, the
 * control thread and the rest (dataplane workers, libuv's thread pool, V8
 * helpers) from /proc/thread-self/stat; kicks, calls and wake-ups per I/O.
 * Each point is repeated `reps` times: median / min / max.
 *
 * Run alone: `node --import tsx bench/blk-bench.ts` (BENCH_QUICK=1 for a
 * smoke run); `npm run bench` runs it after the ring benchmark.
 *
 * @module
 */
import { mkdirSync, mkdtempSync, read as fsRead, rmSync, writeFileSync } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { VirtioDevice } from "../src/device/virtio-device.ts";
import { BlkDataplaneDevice, type BlkDataplaneStats } from "../src/devices/blk/index.ts";
import { DATAPLANE_WORKER } from "../src/devices/node-dataplane.ts";
import { inprocDataplaneBinding } from "../src/transport/inproc/dataplane-binding.ts";
import { silentLogger } from "../src/log.ts";
import { GuestMemory } from "../src/memory/guest-memory.ts";
import { splitOnly } from "../src/testing/split-only.ts";
import {
  InprocDeviceTransport,
  createRegisters,
  nextMessage,
  stopInprocDevice,
  type WorkerThread,
} from "../src/transport/inproc/index.ts";
import { threadHost } from "../examples/session.ts";
import type { BlkBenchDriverInit, BlkBenchJob, BlkBenchJobResult } from "./blk-driver-worker.ts";
import { processCpuMicros, threadCpuMicros } from "./blk-cpu.ts";
import { blkTable } from "./blk-table.ts";

export { blkTable };

/** Sizes of the run. */
export interface BlkBenchOptions {
  readonly reps: number;
  /** Reads per measurement at depth 1 and at depth 32. */
  readonly qd1Ops: number;
  readonly qd32Ops: number;
  readonly imageBytes: number;
  /** Queue counts and depths to run (default [1, 2] and [1, 32]). */
  readonly queueCounts?: readonly number[];
  readonly depths?: readonly number[];
}

/** Median / min / max of repeated measurements. */
export interface Spread {
  readonly median: number;
  readonly min: number;
  readonly max: number;
}

/** One benchmark point. */
export interface BlkPoint {
  /**
   * "fs-read": the baseline, callback `fs.read` (the cheapest positioned
   * read Node offers); "filehandle-read": `FileHandle.read` (promises, what
   * FileBacking's `FileHandle.readv` costs); "device": through virtio-blk.
   */
  readonly mode: "device" | "fs-read" | "filehandle-read";
  readonly queues: number;
  /** Requests in flight per queue (the baseline keeps queues × depth reads in flight). */
  readonly depth: number;
  readonly iops: Spread;
  /** Process CPU (every thread) per read, µs. */
  readonly cpuUsPerIo: Spread;
  /** Device: the driver thread's share, µs per read. */
  readonly driverCpuUsPerIo?: Spread;
  /** Device: the control (main) thread's share. */
  readonly controlCpuUsPerIo?: Spread;
  /** Device: everything else (dataplane workers, libuv pool, V8 helpers). */
  readonly otherCpuUsPerIo?: Spread;
  /** Device: median kicks rung, calls sent, dataplane wake-ups and driver sleeps per read. */
  readonly kicksPerIo?: number;
  readonly callsPerIo?: number;
  readonly workerWakeupsPerIo?: number;
  readonly driverSleepsPerIo?: number;
  /** Device: median IOPS / the baseline's, and median CPU per read / the baseline's. */
  readonly iopsRatioToBaseline?: number;
  readonly cpuRatioToBaseline?: number;
}

export interface BlkBenchReport {
  readonly name: "blk";
  readonly date: string;
  readonly node: string;
  readonly cpus: number;
  readonly options: BlkBenchOptions;
  readonly points: readonly BlkPoint[];
}

const BLOCK = 4096;
const GUEST_BYTES = 4 << 20;
const QUEUE_SIZE = 128;
const TIMEOUT_MS = 300_000;

function spread(values: readonly number[]): Spread {
  const s = [...values].sort((a, b) => a - b);
  return { median: s[Math.floor(s.length / 2)]!, min: s[0]!, max: s[s.length - 1]! };
}

const median = (values: readonly number[]): number => spread(values).median;

/** xorshift32, the same generator as the driver worker's. */
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

interface Sample {
  readonly elapsedMs: number;
  readonly cpuUs: number;
  readonly driverCpuUs?: number;
  readonly controlCpuUs?: number;
  readonly kicks?: number;
  readonly calls?: number;
  readonly wakeups?: number;
  readonly sleeps?: number;
}

/**
 * Direct reads from this thread, queues × depth in flight: the job's
 * offsets with `FileHandle.read` (promises).
 */
async function fileHandleReads(fh: FileHandle, job: BlkBenchJob): Promise<Sample> {
  const next = rng(job.seed);
  const blocks = job.diskBytes / BLOCK;
  const lanes = Array.from({ length: job.queues * job.depth }, () => new Uint8Array(BLOCK));
  let issued = 0;
  const lane = async (buf: Uint8Array): Promise<void> => {
    while (issued < job.ops) {
      issued++;
      const { bytesRead } = await fh.read(buf, 0, BLOCK, (next() % blocks) * BLOCK);
      if (bytesRead !== BLOCK) throw new Error(`short read: ${bytesRead}`);
    }
  };
  const cpu0 = processCpuMicros();
  const t0 = performance.now();
  await Promise.all(lanes.map(lane));
  return { elapsedMs: performance.now() - t0, cpuUs: processCpuMicros() - cpu0 };
}

/** The baseline: the same reads with callback `fs.read` (no promise per read). */
function fsReads(fd: number, job: BlkBenchJob): Promise<Sample> {
  const next = rng(job.seed);
  const blocks = job.diskBytes / BLOCK;
  const lanes = job.queues * job.depth;
  return new Promise((resolve, reject) => {
    let issued = 0;
    let idle = 0;
    const cpu0 = processCpuMicros();
    const t0 = performance.now();
    const go = (buf: Uint8Array): void => {
      if (issued >= job.ops) {
        if (++idle === lanes)
          resolve({ elapsedMs: performance.now() - t0, cpuUs: processCpuMicros() - cpu0 });
        return;
      }
      issued++;
      fsRead(fd, buf, 0, BLOCK, (next() % blocks) * BLOCK, (err, n) => {
        if (err !== null || n !== BLOCK) reject(err ?? new Error(`short read: ${n}`));
        else go(buf);
      });
    };
    for (let i = 0; i < lanes; i++) go(new Uint8Array(BLOCK));
  });
}

const isType =
  <T>(type: string) =>
  (m: unknown): m is T =>
    typeof m === "object" && m !== null && (m as { type?: unknown }).type === type;

/** A device with `queues` queues on dataplane workers, its control loop here, and a driver worker. */
class DeviceSession {
  readonly #registers: SharedArrayBuffer;
  readonly #blk: BlkDataplaneDevice;
  readonly #loop: Promise<void>;
  readonly #driver: WorkerThread;

  private constructor(
    registers: SharedArrayBuffer,
    blk: BlkDataplaneDevice,
    loop: Promise<void>,
    driver: WorkerThread,
  ) {
    this.#registers = registers;
    this.#blk = blk;
    this.#loop = loop;
    this.#driver = driver;
  }

  static async start(path: string, queues: number, workerModule: URL): Promise<DeviceSession> {
    const memory = GuestMemory.createShared([{ guestPhysAddr: 0, size: GUEST_BYTES }]);
    const registers = createRegisters(queues);
    const blk = await BlkDataplaneDevice.create({
      backing: { kind: "file", path, readOnly: true },
      numQueues: queues,
      queueSize: QUEUE_SIZE,
      threads: threadHost,
      workerModule,
      binding: inprocDataplaneBinding(registers),
      logger: silentLogger,
    });
    const device = new VirtioDevice(blk, { memory, log: () => {} });
    const loop = new InprocDeviceTransport(registers, device).run({ wait: "async" });
    const shared = { registers, memory: memory.toTransferable() };
    const init: BlkBenchDriverInit & { type: string } = {
      type: "init",
      shared,
      // Split rings, as every recorded run: the device offers packed ones too, and the worker would build them.
      features: splitOnly(device.readDeviceFeatures()),
      queues,
      queueSize: QUEUE_SIZE,
    };
    const driver = threadHost.spawn(new URL("./blk-driver-worker.ts", import.meta.url), init);
    await nextMessage(driver, isType("ready"), TIMEOUT_MS);
    return new DeviceSession(registers, blk, loop, driver);
  }

  async run(job: BlkBenchJob): Promise<Sample> {
    const s0 = await this.#blk.stats();
    const control0 = threadCpuMicros();
    const done = nextMessage<{ value: BlkBenchJobResult } | { message: string }>(
      this.#driver,
      (m): m is { value: BlkBenchJobResult } | { message: string } =>
        isType("result")(m) || isType("error")(m),
      TIMEOUT_MS,
    );
    this.#driver.postMessage({ type: "job", job });
    const reply = await done;
    const controlCpuUs = threadCpuMicros() - control0;
    if ("message" in reply) throw new Error(`driver: ${reply.message}`);
    const r = reply.value;
    if (r.errors > 0) throw new Error(`${r.errors} reads failed`);
    const s1 = await this.#blk.stats();
    const sum = (s: BlkDataplaneStats, k: "wakeups" | "calls") =>
      s.queues.reduce((n, q) => n + q[k], 0);
    return {
      elapsedMs: r.elapsedMs,
      cpuUs: r.processCpuUs,
      driverCpuUs: r.driverCpuUs,
      controlCpuUs,
      kicks: r.stats.kicksRung,
      calls: sum(s1, "calls") - sum(s0, "calls"),
      wakeups: sum(s1, "wakeups") - sum(s0, "wakeups"),
      sleeps: r.stats.sleeps,
    };
  }

  async close(): Promise<void> {
    const reset = nextMessage(this.#driver, isType("reset-done"), TIMEOUT_MS);
    this.#driver.postMessage({ type: "reset" });
    await reset;
    await this.#driver.terminate();
    stopInprocDevice(this.#registers);
    await this.#loop;
    await this.#blk.dispose();
  }
}

function point(
  mode: BlkPoint["mode"],
  queues: number,
  depth: number,
  ops: number,
  samples: readonly Sample[],
  baseline?: BlkPoint,
): BlkPoint {
  const iops = spread(samples.map((s) => (ops * 1000) / s.elapsedMs));
  const cpu = spread(samples.map((s) => s.cpuUs / ops));
  if (mode !== "device") {
    const ratios =
      baseline === undefined
        ? {}
        : {
            iopsRatioToBaseline: iops.median / baseline.iops.median,
            cpuRatioToBaseline: cpu.median / baseline.cpuUsPerIo.median,
          };
    return { mode, queues, depth, iops, cpuUsPerIo: cpu, ...ratios };
  }
  const per = (f: (s: Sample) => number) => spread(samples.map((s) => f(s) / ops));
  return {
    mode,
    queues,
    depth,
    iops,
    cpuUsPerIo: cpu,
    driverCpuUsPerIo: per((s) => s.driverCpuUs!),
    controlCpuUsPerIo: per((s) => s.controlCpuUs!),
    otherCpuUsPerIo: per((s) => s.cpuUs - s.driverCpuUs! - s.controlCpuUs!),
    kicksPerIo: median(samples.map((s) => s.kicks! / ops)),
    callsPerIo: median(samples.map((s) => s.calls! / ops)),
    workerWakeupsPerIo: median(samples.map((s) => s.wakeups! / ops)),
    driverSleepsPerIo: median(samples.map((s) => s.sleeps! / ops)),
    ...(baseline === undefined
      ? {}
      : {
          iopsRatioToBaseline: iops.median / baseline.iops.median,
          cpuRatioToBaseline: cpu.median / baseline.cpuUsPerIo.median,
        }),
  };
}

/** Runs the benchmark (an image in a temporary directory, removed afterwards). */
export async function blkBench(
  o: BlkBenchOptions,
  cpus: number,
  workerModule: URL = DATAPLANE_WORKER,
): Promise<BlkBenchReport> {
  const dir = mkdtempSync(join(tmpdir(), "virtio-ts-blk-bench-"));
  const path = join(dir, "disk.img");
  const image = new Uint8Array(o.imageBytes);
  const next = rng(0xb10c);
  for (let i = 0; i < image.length; i += 4) new DataView(image.buffer).setUint32(i, next(), true);
  writeFileSync(path, image);
  const fh = await open(path, "r");
  const points: BlkPoint[] = [];
  try {
    // Pre-read: the whole image is in the page cache before any measurement.
    await fh.read(new Uint8Array(o.imageBytes), 0, o.imageBytes, 0);
    for (const queues of o.queueCounts ?? [1, 2]) {
      const session = await DeviceSession.start(path, queues, workerModule);
      try {
        for (const depth of o.depths ?? [1, 32]) {
          const ops = depth === 1 ? o.qd1Ops : o.qd32Ops;
          const base: Sample[] = [];
          const handle: Sample[] = [];
          const dev: Sample[] = [];
          // Warm-up (JIT, thread pool), not recorded.
          const warm = {
            queues,
            depth,
            ops: Math.min(ops, 5000),
            seed: 1,
            diskBytes: o.imageBytes,
          };
          await fsReads(fh.fd, warm);
          await fileHandleReads(fh, warm);
          await session.run(warm);
          for (let rep = 0; rep < o.reps; rep++) {
            const job = { queues, depth, ops, seed: 1000 + rep, diskBytes: o.imageBytes };
            base.push(await fsReads(fh.fd, job));
            handle.push(await fileHandleReads(fh, job));
            dev.push(await session.run(job));
          }
          const b = point("fs-read", queues, depth, ops, base);
          points.push(
            b,
            point("filehandle-read", queues, depth, ops, handle, b),
            point("device", queues, depth, ops, dev, b),
          );
        }
      } finally {
        await session.close();
      }
    }
  } finally {
    await fh.close();
    rmSync(dir, { recursive: true, force: true });
  }
  return {
    name: "blk",
    date: new Date().toISOString(),
    node: process.version,
    cpus,
    options: o,
    points,
  };
}

/** Sizes for `npm run bench` (BENCH_QUICK=1: a smoke run). */
export function blkBenchOptions(quick: boolean): BlkBenchOptions {
  return quick
    ? { reps: 3, qd1Ops: 3_000, qd32Ops: 10_000, imageBytes: 64 << 20 }
    : { reps: 5, qd1Ops: 30_000, qd32Ops: 150_000, imageBytes: 64 << 20 };
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const cpus = availableParallelism();
  const report = await blkBench(blkBenchOptions(process.env.BENCH_QUICK === "1"), cpus);
  const dir = fileURLToPath(new URL("./results/", import.meta.url));
  mkdirSync(dir, { recursive: true });
  writeFileSync(`${dir}blk.json`, JSON.stringify(report, null, 2) + "\n");
  console.log(
    `blk benchmark (${cpus} CPUs, Node ${process.version}); written to bench/results/blk.json`,
  );
  console.log(blkTable(report));
}

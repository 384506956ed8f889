/**
 * Guest-less benchmark driver, run as its own Node process by
 * ../guestless-bench.ts: connects to a vhost-user-blk back-end with the
 * project's front-end (`VhostUserBlk`: vhost-user control, memfd guest
 * memory, the virtio-blk driver; split rings, RING_PACKED excluded, so
 * every back-end is measured on the same layout), then runs timed jobs of
 * 4 KiB random reads or writes at a fixed total queue depth, and prints one
 * JSON line with the results on stdout.
 *
 * A job keeps `depth` requests in flight (one async loop per slot, each with
 * its own zero-copy 4 KiB buffer in the shared memory, so the front-end adds
 * no copy), spread round-robin over the queues. Offsets are uniform over the
 * image, 4 KiB aligned (xorshift PRNG). It records every request's latency,
 * its own CPU time (`process.cpuUsage`, all threads) and the back-end's
 * (/proc/PID/stat of the pid it is given) from the job's start to its end.
 *
 * A job marked `pause` is bracketed by a handshake with the parent: the
 * driver prints `@before N` (N = the job's index) on stdout and waits for a
 * line on stdin before starting it, and `@after N` once it is done — so the
 * parent can attach a tracer (strace, ../syscalls.ts) to the back-end for
 * exactly that job.
 *
 * Input: one JSON argument ({@link DriverInput}).
 *
 * @module
 */
import { performance } from "node:perf_hooks";
import { createInterface, type Interface } from "node:readline";
import { VhostUserBlk } from "../../src/devices/blk/vhost-user-frontend.ts";
import type { BlkSegment } from "../../src/devices/blk/driver-plan.ts";
import { cpuSeconds } from "../lib/procfs.ts";
import { percentileSorted } from "../lib/stats.ts";

/** One timed job. */
export interface DriverJob {
  readonly rw: "randread" | "randwrite";
  /** Requests in flight, in total over all queues. */
  readonly depth: number;
  readonly seconds: number;
  /** Wait for the parent's go-ahead before and after the job (see the module comment). */
  readonly pause?: boolean;
}

/** What the parent passes (as one JSON argument). */
export interface DriverInput {
  readonly socket: string;
  readonly numQueues: number;
  /** The back-end's pid, for its CPU time. */
  readonly backendPid: number;
  /** Seconds of 4 KiB random reads at depth 32 before the first job (not measured). */
  readonly warmupSeconds: number;
  readonly jobs: readonly DriverJob[];
  /** Negotiate packed virtqueues (the backend must offer them); default split. */
  readonly packed?: boolean;
}

/** What one job measured. */
export interface DriverJobResult extends DriverJob {
  readonly ios: number;
  readonly elapsedSeconds: number;
  readonly iops: number;
  readonly mibPerSec: number;
  readonly meanLatUs: number;
  readonly p50LatUs: number;
  readonly p99LatUs: number;
  readonly p999LatUs: number;
  readonly backendCpuSeconds: number;
  readonly frontendCpuSeconds: number;
  readonly backendCpuUsPerIo: number;
  readonly frontendCpuUsPerIo: number;
  /** The first request error, if any (the job stops at it). */
  readonly error?: string;
}

/** The driver's stdout line. */
export interface DriverOutput {
  readonly results: readonly DriverJobResult[];
  /** Driver counters at the end (kicks sent / suppressed, requests). */
  readonly stats: Readonly<Record<string, number>>;
  readonly capacityBytes: number;
}

const BLOCK = 4096;
/** Most latency samples kept per job (enough for ~250k IOPS over 8 s). */
const MAX_SAMPLES = 2_000_000;

/** xorshift32: a fast, allocation-free PRNG for offsets. */
class Xorshift {
  #s: number;
  constructor(seed: number) {
    this.#s = seed >>> 0 || 0x9e3779b9;
  }
  next(): number {
    let x = this.#s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#s = x >>> 0;
    return this.#s;
  }
}

async function runJob(
  disk: VhostUserBlk,
  job: DriverJob,
  buffers: readonly BlkSegment[][],
  lat: Float64Array,
  backendPid: number,
  measure: boolean,
): Promise<DriverJobResult> {
  const blocks = Math.floor(disk.config.capacityBytes / BLOCK);
  const queues = disk.numQueues;
  let count = 0;
  let error: string | undefined;
  let stop = false;
  const cpu0 = process.cpuUsage();
  const b0 = cpuSeconds(backendPid) ?? NaN;
  const t0 = performance.now();
  const deadline = t0 + job.seconds * 1000;
  const loop = async (slot: number): Promise<void> => {
    const rng = new Xorshift(0x1234567 + slot * 7919);
    const seg = buffers[slot]!;
    const opts = { queue: slot % queues };
    while (!stop) {
      const offset = (rng.next() % blocks) * BLOCK;
      const s = performance.now();
      try {
        if (job.rw === "randread") await disk.readSegments(offset, seg, opts);
        else await disk.writeSegments(offset, seg, opts);
      } catch (e) {
        error ??= (e as Error).message;
        stop = true;
        return;
      }
      const e = performance.now();
      if (count < MAX_SAMPLES) lat[count] = e - s;
      count++;
      if (e >= deadline) stop = true;
    }
  };
  await Promise.all(Array.from({ length: job.depth }, (_, i) => loop(i)));
  const elapsed = (performance.now() - t0) / 1000;
  const b1 = cpuSeconds(backendPid) ?? NaN;
  const cpu = process.cpuUsage(cpu0);
  const fe = (cpu.user + cpu.system) / 1e6;
  const kept = lat.subarray(0, Math.min(count, MAX_SAMPLES));
  const sorted = measure ? kept.slice().sort() : kept;
  let sum = 0;
  for (let i = 0; i < kept.length; i++) sum += kept[i]!;
  const us = (ms: number): number => ms * 1000;
  return {
    ...job,
    ios: count,
    elapsedSeconds: elapsed,
    iops: count / elapsed,
    mibPerSec: (count * BLOCK) / elapsed / (1 << 20),
    meanLatUs: us(sum / Math.max(1, kept.length)),
    p50LatUs: measure ? us(percentileSorted(sorted, 50)) : NaN,
    p99LatUs: measure ? us(percentileSorted(sorted, 99)) : NaN,
    p999LatUs: measure ? us(percentileSorted(sorted, 99.9)) : NaN,
    backendCpuSeconds: b1 - b0,
    frontendCpuSeconds: fe,
    backendCpuUsPerIo: ((b1 - b0) * 1e6) / Math.max(1, count),
    frontendCpuUsPerIo: (fe * 1e6) / Math.max(1, count),
    ...(error !== undefined ? { error } : {}),
  };
}

/** The handshake of `pause` jobs: `@EVENT` on stdout, then one line from the parent on stdin. */
class Pauser {
  #rl: Interface | undefined;
  #lines: AsyncIterator<string> | undefined;

  async sync(event: string): Promise<void> {
    if (!this.#lines) {
      this.#rl = createInterface({ input: process.stdin });
      this.#lines = this.#rl[Symbol.asyncIterator]();
    }
    process.stdout.write(`@${event}\n`);
    const r = await this.#lines.next();
    if (r.done === true) throw new Error(`the parent closed stdin at ${event}`);
  }

  close(): void {
    this.#rl?.close();
    if (this.#rl) process.stdin.destroy();
  }
}

async function runJobs(
  disk: VhostUserBlk,
  input: DriverInput,
  buffers: readonly BlkSegment[][],
  lat: Float64Array,
): Promise<DriverJobResult[]> {
  const pauser = new Pauser();
  const results: DriverJobResult[] = [];
  try {
    for (const [i, job] of input.jobs.entries()) {
      if (job.pause) await pauser.sync(`before ${i}`);
      const r = await runJob(disk, job, buffers, lat, input.backendPid, true);
      if (job.pause) await pauser.sync(`after ${i}`);
      results.push(r);
      process.stderr.write(
        `  ${job.rw} QD${job.depth}${job.pause ? " (paused job)" : ""}: ${Math.round(r.iops)} IOPS${r.error ? ` (error: ${r.error})` : ""}\n`,
      );
      if (r.error) break;
    }
  } finally {
    pauser.close();
  }
  return results;
}

async function main(input: DriverInput): Promise<DriverOutput> {
  const maxDepth = Math.max(32, ...input.jobs.map((j) => j.depth));
  const disk = await VhostUserBlk.connect(input.socket, {
    numQueues: input.numQueues,
    queueSize: 256,
    bufferBytes: maxDepth * BLOCK,
    // Split rings unless asked: qemu-storage-daemon offers no packed rings, so the virtio-ts
    // daemon (which does) is compared with it on the same ring layout; packed runs are
    // compared with split ones.
    ...(input.packed === true ? {} : { exclude: ["RING_PACKED"] as const }),
  });
  try {
    const buffers = Array.from({ length: maxDepth }, () => {
      const b = disk.allocBuffer(BLOCK);
      b.bytes.fill(0x3c);
      return [{ addr: b.addr, len: BLOCK }];
    });
    const lat = new Float64Array(MAX_SAMPLES);
    if (input.warmupSeconds > 0)
      await runJob(
        disk,
        { rw: "randread", depth: 32, seconds: input.warmupSeconds },
        buffers,
        lat,
        input.backendPid,
        false,
      );
    return {
      results: await runJobs(disk, input, buffers, lat),
      stats: { ...disk.stats },
      capacityBytes: disk.config.capacityBytes,
    };
  } finally {
    await disk.close();
  }
}

const arg = process.argv[2];
if (arg === undefined) {
  process.stderr.write("usage: driver.ts '<DriverInput JSON>'\n");
  process.exit(2);
}
const out = await main(JSON.parse(arg) as DriverInput);
process.stdout.write(`${JSON.stringify(out)}\n`);

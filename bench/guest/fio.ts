/**
 * The fio workloads of the real-guest benchmark: the shell each guest step
 * runs, and the parser for fio's JSON report (`--output-format=json`), which
 * the step prints to the serial console between two marker lines.
 *
 * Every workload is time-based with no ramp (so that the I/O count fio
 * reports covers the whole window over which the backend's CPU time is
 * sampled), `libaio` with `O_DIRECT` on the raw disk, random offsets without
 * a random map. With more than one job (one per queue and vCPU), each job
 * gets its own slice of the disk and runs at the stated depth.
 *
 * @module
 */

/** One fio workload. */
export interface FioWorkload {
  /** Stable id, used as the guest step name and in JSON results. */
  readonly id: string;
  /** Human label for tables and charts. */
  readonly label: string;
  readonly rw: "randread" | "randwrite" | "read" | "write";
  readonly blockSize: number;
  /** iodepth of each job. */
  readonly iodepth: number;
}

/**
 * The workloads, in the order a guest runs them. Random writes come last so
 * that no earlier workload of the same boot reads an image with dirty pages.
 */
export const GUEST_WORKLOADS: readonly FioWorkload[] = [
  { id: "randread-4k-qd1", label: "4K randread QD1", rw: "randread", blockSize: 4096, iodepth: 1 },
  {
    id: "randread-4k-qd32",
    label: "4K randread QD32",
    rw: "randread",
    blockSize: 4096,
    iodepth: 32,
  },
  { id: "seqread-1m-qd8", label: "1M seqread QD8", rw: "read", blockSize: 1 << 20, iodepth: 8 },
  {
    id: "randwrite-4k-qd32",
    label: "4K randwrite QD32",
    rw: "randwrite",
    blockSize: 4096,
    iodepth: 32,
  },
];

const JSON_BEGIN = "VTS-FIO-JSON-BEGIN";
const JSON_END = "VTS-FIO-JSON-END";

/** Options of {@link fioCommand}. */
export interface FioCommandOptions {
  readonly runtimeSeconds: number;
  /** Jobs (one per vCPU, pinned); default 1. */
  readonly numJobs?: number;
  /** Size of the disk in bytes (split between jobs when there are several). */
  readonly diskBytes: number;
}

/** The guest shell of one workload: fio to a JSON file, then the file between markers. */
export function fioCommand(w: FioWorkload, o: FioCommandOptions): string {
  if (!(Number.isInteger(o.runtimeSeconds) && o.runtimeSeconds > 0))
    throw new RangeError(`runtimeSeconds must be a positive integer, got ${o.runtimeSeconds}`);
  const jobs = o.numJobs ?? 1;
  const args = [
    `--name=${w.id}`,
    "--filename=$VTS_DISK",
    "--ioengine=libaio",
    "--direct=1",
    "--thread",
    `--rw=${w.rw}`,
    `--bs=${w.blockSize}`,
    `--iodepth=${w.iodepth}`,
    "--time_based",
    `--runtime=${o.runtimeSeconds}`,
    "--norandommap",
    "--randrepeat=0",
    "--lat_percentiles=1",
    "--percentile_list=50:99:99.9",
    "--eta=never",
    "--group_reporting",
    "--output-format=json",
    "--output=/tmp/fio.json",
  ];
  if (jobs > 1) {
    const slice = Math.floor(o.diskBytes / jobs / (1 << 20)) * (1 << 20);
    args.push(
      `--numjobs=${jobs}`,
      `--cpus_allowed=0-${jobs - 1}`,
      "--cpus_allowed_policy=split",
      `--size=${slice}`,
      `--offset_increment=${slice}`,
    );
  }
  return [
    `fio ${args.join(" ")}`,
    `echo ${JSON_BEGIN}`,
    "cat /tmp/fio.json",
    "echo",
    `echo ${JSON_END}`,
  ].join("\n");
}

/** What one fio run measured (all jobs together). */
export interface FioResult {
  readonly iops: number;
  readonly mibPerSec: number;
  /** Total latency (submission to completion), microseconds. */
  readonly meanLatUs: number;
  readonly p99LatUs: number;
  /** I/Os fio completed (reads or writes, by the workload's direction). */
  readonly ios: number;
  /** Requests the guest block layer completed on the disk (fio's disk_util; 0 if absent). */
  readonly diskRequests: number;
  readonly runtimeMs: number;
}

interface FioDir {
  iops: number;
  bw_bytes: number;
  total_ios: number;
  runtime: number;
  lat_ns: { mean: number; percentile?: Record<string, number> };
}

function isDir(v: unknown): v is FioDir {
  const d = v as FioDir | undefined;
  return (
    typeof d === "object" &&
    d !== null &&
    typeof d.iops === "number" &&
    typeof d.bw_bytes === "number" &&
    typeof d.total_ios === "number" &&
    typeof d.lat_ns?.mean === "number"
  );
}

/** The JSON text a step printed between the markers, or undefined. */
export function extractFioJson(stepOutput: string): string | undefined {
  const text = stepOutput.replace(/\r/g, "");
  const begin = text.indexOf(`${JSON_BEGIN}\n`);
  const end = text.indexOf(`\n${JSON_END}`, begin);
  if (begin < 0 || end < 0) return undefined;
  return text.slice(begin + JSON_BEGIN.length + 1, end);
}

/**
 * Parses fio's JSON report for workload `w`. Throws with a short excerpt if
 * the report is missing or malformed, or if fio reported a job error.
 */
export function parseFioJson(w: FioWorkload, stepOutput: string): FioResult {
  const text = extractFioJson(stepOutput);
  if (text === undefined)
    throw new Error(`no fio JSON report in the output of ${w.id}: ${stepOutput.slice(-400)}`);
  const report = JSON.parse(text) as {
    jobs?: { error?: number; read?: unknown; write?: unknown }[];
    disk_util?: { read_ios?: number; write_ios?: number }[];
  };
  const job = report.jobs?.[0];
  if (!job) throw new Error(`fio report of ${w.id} has no job`);
  if (job.error) throw new Error(`fio job ${w.id} failed with error ${job.error}`);
  const dir = w.rw === "randwrite" || w.rw === "write" ? job.write : job.read;
  if (!isDir(dir)) throw new Error(`fio report of ${w.id} lacks its ${w.rw} figures`);
  const p99 = dir.lat_ns.percentile?.["99.000000"];
  if (typeof p99 !== "number") throw new Error(`fio report of ${w.id} lacks the p99 latency`);
  const du = report.disk_util?.[0];
  return {
    iops: dir.iops,
    mibPerSec: dir.bw_bytes / (1 << 20),
    meanLatUs: dir.lat_ns.mean / 1000,
    p99LatUs: p99 / 1000,
    ios: dir.total_ios,
    diskRequests: (du?.read_ios ?? 0) + (du?.write_ios ?? 0),
    runtimeMs: dir.runtime,
  };
}

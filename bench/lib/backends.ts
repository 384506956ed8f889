/**
 * The vhost-user-blk backends the benchmarks compare, started the same way
 * for every run: this project's CLI (`virtio-ts vhost-user-blk`) and
 * qemu-storage-daemon (`--export type=vhost-user-blk`, `aio=io_uring`,
 * `cache.direct=off` like ours: both go through the host page cache).
 *
 * Write cache: neither flushes after each write. qemu-storage-daemon 7.2's
 * export defaults to `writethrough=off`: it reports `wce = 0` to the driver
 * yet completes a write once it is in the host page cache (measured here:
 * 4 KiB random writes at depth 1 ran at ~35k IOPS, ~2k with
 * `writethrough=on`, which flushes after every write). virtio-ts therefore
 * runs with `--writeback` (a write completes once in the page cache; FLUSH
 * runs fdatasync), and the guest also switches the disk to write back.
 *
 * The O_DIRECT pairing compares the two like for like without the host page
 * cache: `virtio-ts --direct --writeback` against qemu-storage-daemon
 * `cache.direct=on,aio=native` (Linux AIO, as QEMU users run O_DIRECT).
 *
 * Launch and readiness come from the real-guest harness
 * (test/interop/guest/backends.ts); this module adds what a measurement
 * needs: the pid of the process that actually serves (found through the
 * listening socket, so a wrapper such as `npx` is not measured instead) and
 * extra environment (e.g. NODE_OPTIONS=--cpu-prof for a profile).
 *
 * @module
 */
import { spawnBackend, virtioTsCommand } from "../../test/interop/guest/backends.ts";
import type { ExitStatus } from "../../test/interop/guest/process.ts";
import { listeningSocketOwner } from "./procfs.ts";

/**
 * Which vhost-user-blk backend (the `-direct` ones bypass the host page
 * cache). `virtio-ts-packed` is the same daemon as `virtio-ts`, driven over
 * packed virtqueues where a front-end of the benchmark can choose (the
 * guest-less one): it is paired with `virtio-ts` on split rings.
 */
export type VhostBackendKind =
  "virtio-ts" | "qsd" | "virtio-ts-direct" | "qsd-direct" | "virtio-ts-packed";

/** Display names. */
export const BACKEND_LABELS: Readonly<Record<VhostBackendKind | "qemu-builtin", string>> = {
  "virtio-ts": "virtio-ts",
  qsd: "qemu-storage-daemon",
  "virtio-ts-direct": "virtio-ts O_DIRECT",
  "qsd-direct": "qemu-storage-daemon O_DIRECT",
  "virtio-ts-packed": "virtio-ts packed rings",
  "qemu-builtin": "QEMU virtio-blk",
};

/** True for this project's backend, in either pairing. */
export const isVirtioTs = (kind: string): boolean => kind.startsWith("virtio-ts");

/**
 * The run a virtio-ts run is paired with: its qemu-storage-daemon pairing,
 * or for packed rings virtio-ts on split rings (undefined for the others).
 */
export function baselineOf(kind: string): VhostBackendKind | undefined {
  if (kind === "virtio-ts") return "qsd";
  if (kind === "virtio-ts-direct") return "qsd-direct";
  if (kind === "virtio-ts-packed") return "virtio-ts";
  return undefined;
}

/** Options of {@link startBenchBackend}. */
export interface BenchBackendOptions {
  readonly socketPath: string;
  readonly imagePath: string;
  readonly numQueues: number;
  /** Extra environment for the backend (merged over this process's). */
  readonly env?: Readonly<Record<string, string>>;
  /** Extra command-line arguments (e.g. `--verbose`). */
  readonly extraArgs?: readonly string[];
  /**
   * virtio-ts only: Node options for the backend process (e.g. `--cpu-prof`,
   * which NODE_OPTIONS does not accept); the CLI's bin then runs as
   * `node <nodeArgs> <bin>`.
   */
  readonly nodeArgs?: readonly string[];
}

/** A running backend with the pid to measure. */
export interface BenchBackend {
  readonly kind: VhostBackendKind;
  /** The process that holds the listening socket (the one to measure). */
  readonly pid: number;
  readonly status: ExitStatus | undefined;
  diagnostics(): string;
  stop(): Promise<ExitStatus>;
}

/** The qemu-storage-daemon arguments of a benchmark run. */
export function qsdArgs(o: BenchBackendOptions, direct = false): string[] {
  const cache = direct ? "cache.direct=on,aio=native" : "cache.direct=off,aio=io_uring";
  return [
    "--blockdev",
    `driver=file,node-name=file0,filename=${o.imagePath},${cache}`,
    "--export",
    [
      "type=vhost-user-blk",
      "id=exp0",
      "node-name=file0",
      "addr.type=unix",
      `addr.path=${o.socketPath}`,
      "writable=on",
      `num-queues=${o.numQueues}`,
    ].join(","),
    ...(o.extraArgs ?? []),
  ];
}

/** The `virtio-ts vhost-user-blk` arguments of a benchmark run (after the command itself). */
export function virtioTsArgs(o: BenchBackendOptions, direct = false): string[] {
  return [
    "vhost-user-blk",
    "--socket",
    o.socketPath,
    "--image",
    o.imagePath,
    "--num-queues",
    String(o.numQueues),
    "--writeback",
    ...(direct ? ["--direct"] : []),
    ...(o.extraArgs ?? []),
  ];
}

/** Starts a backend and resolves once it listens, with the pid of the listening process. */
export async function startBenchBackend(
  kind: VhostBackendKind,
  o: BenchBackendOptions,
): Promise<BenchBackend> {
  const env = { ...process.env, ...o.env };
  let b;
  const direct = kind.endsWith("-direct");
  if (!isVirtioTs(kind)) {
    b = await spawnBackend(
      "qemu-storage-daemon",
      "qemu-storage-daemon",
      qsdArgs(o, direct),
      o.socketPath,
      { listening: o.socketPath },
      env,
    );
  } else {
    let { cmd, args } = virtioTsCommand();
    if (o.nodeArgs?.length) {
      if (args.length > 0) throw new Error("nodeArgs need the CLI's package.json bin");
      [cmd, args] = [process.execPath, [...o.nodeArgs, cmd]];
    }
    b = await spawnBackend(
      "virtio-ts vhost-user-blk",
      cmd,
      [...args, ...virtioTsArgs(o, direct)],
      o.socketPath,
      // The CLI prints this once ready; the socket is listening by then.
      { listening: o.socketPath },
      env,
    );
  }
  const pid = listeningSocketOwner(o.socketPath);
  if (pid === undefined) {
    await b.stop();
    throw new Error(`no process holds the listening socket ${o.socketPath}\n${b.diagnostics()}`);
  }
  return {
    kind,
    pid,
    get status() {
      return b.status;
    },
    diagnostics: () => b.diagnostics(),
    stop: () => b.stop(),
  };
}

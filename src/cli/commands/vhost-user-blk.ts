/**
 * `virtio-ts vhost-user-blk`: serve raw disk images as virtio-blk devices
 * (VIRTIO 1.2 §5.2) over vhost-user (qemu/qemu docs/interop/vhost-user.rst,
 * "Backend program conventions": a Unix socket path or an inherited
 * listening fd) — one export, or several sharing one dataplane pool, each
 * with its own socket, device and log name, so that one front-end's
 * misbehaviour closes only its own connection. Composes a dataplane pool,
 * `openVhostUserBlk` and {@link VhostUserServer}; the library does the
 * work. Loaded only when the command runs (./vhost-user-blk-command.ts
 * describes it).
 *
 * @module
 */
import { fstatSync } from "node:fs";
import { ErrorCode, isVirtioError } from "../../errors.ts";
import type { DataplanePool } from "../../dataplane/pool.ts";
import type { BlkDataplaneConfig, BlkEngineLimits } from "../../devices/blk/runtime-device.ts";
import { type OpenedVhostUserBlk, openVhostUserBlk } from "../../devices/blk/vhost-user.ts";
import { nodeDataplanePool } from "../../devices/node-dataplane.ts";
import { errorText } from "../../log.ts";
import { isNativeError } from "../../native/index.ts";
import { VhostUserServer } from "../../vhost-user/server.ts";
import type { CliIo, CliLog } from "../log.ts";
import { type CommandContext, CommandError } from "./command.ts";
import type { ExportSettings, Settings } from "./vhost-user-blk-flags.ts";

/** One export being served. */
interface Served {
  readonly x: ExportSettings;
  readonly log: CliLog;
  readonly blk: OpenedVhostUserBlk;
  readonly server: VhostUserServer;
}

/** The one-line reason the listening socket cannot be created. */
function socketError(x: ExportSettings, e: unknown): CommandError | undefined {
  if (!isNativeError(e)) return undefined;
  const where = x.socket === undefined ? `fd ${x.fd}` : `socket ${x.socket}`;
  switch (e.errnoCode) {
    case "EADDRINUSE":
      return new CommandError(
        e.details.live === true
          ? `${where} is in use: a server already answers there`
          : `${where}: the path exists and is not a socket (not removed)`,
      );
    case "ENAMETOOLONG":
      return new CommandError(`${where}: path too long for a Unix socket (at most 107 bytes)`);
    case "ENOENT":
      return new CommandError(`${where}: its directory does not exist`);
    default:
      return new CommandError(`${where}: ${e.message}`);
  }
}

/** The one-line reason the image cannot be served, for an error the device's open threw. */
function imageError(x: ExportSettings, e: unknown): CommandError | undefined {
  if (!isVirtioError(e, ErrorCode.BLK_IMAGE)) return undefined;
  const hint = !x.readOnly && /not writable/.test(e.message) ? " (or pass --read-only)" : "";
  return new CommandError(`${e.message}${hint}`);
}

/** Opens export `x`'s image in the pool; the device's log lines come back to `log`. */
async function openDevice(
  x: ExportSettings,
  pool: DataplanePool,
  log: CliLog,
): Promise<OpenedVhostUserBlk> {
  let blk: OpenedVhostUserBlk | undefined;
  try {
    blk = await openVhostUserBlk({
      pool,
      backing: {
        kind: "file",
        path: x.image,
        readOnly: x.readOnly,
        direct: x.direct,
        aio: x.aio,
      },
      ...deviceOptions(x),
      logger: log.logger(),
    });
    if (blk.info.size === 0) throw new CommandError(`disk image ${x.image}: is empty (0 bytes)`);
    return blk;
  } catch (e) {
    await blk?.dataplane.close().catch(() => {});
    throw imageError(x, e) ?? e;
  }
}

/** An inherited `--fd` must be an open socket (the server checks nothing). */
function checkListenFd(fd: number): void {
  let socket: boolean;
  try {
    socket = fstatSync(fd).isSocket();
  } catch {
    throw new CommandError(`fd ${fd} is not open`);
  }
  if (!socket) throw new CommandError(`fd ${fd} is not a socket`);
}

/** The device's configuration from the flags. */
function deviceOptions(x: ExportSettings): BlkDataplaneConfig & BlkEngineLimits {
  return {
    numQueues: x.numQueues,
    queueSize: x.queueSize,
    readOnly: x.readOnly,
    logicalBlockSize: x.logicalBlockSize,
    writeback: x.writeback,
    ...(x.serial === undefined ? {} : { serial: x.serial }),
    ...(x.maxInFlight === undefined ? {} : { maxInFlight: x.maxInFlight }),
    pollMaxNs: x.pollMaxUs * 1000,
  };
}

function listen(
  x: ExportSettings,
  s: Settings,
  blk: OpenedVhostUserBlk,
  log: CliLog,
): VhostUserServer {
  let connections = 0;
  if (x.fd !== undefined) checkListenFd(x.fd);
  try {
    return new VhostUserServer({
      backend: blk.backend,
      dataplane: blk.dataplane,
      allowUnsealedMemory: s.allowUnsealedMemory,
      ...(x.socket === undefined ? { listenFd: x.fd! } : { path: x.socket }),
      log: (line, level) => log.line(line, level ?? "warn"),
      onConnection: (conn) => {
        const n = ++connections;
        log.connection = n;
        log.line("front-end connected");
        void conn.closed.then(() => {
          if (log.connection === n) log.connection = undefined;
        });
      },
    });
  } catch (e) {
    throw socketError(x, e) ?? e;
  }
}

/** Opens and listens on every export; on a failure closes what was opened. */
async function openExports(s: Settings, pool: DataplanePool, log: CliLog): Promise<Served[]> {
  const served: Served[] = [];
  const one = s.exports.length === 1;
  try {
    for (const x of s.exports) {
      const xlog = one ? log : log.forExport(x.id);
      const blk = await openDevice(x, pool, xlog);
      try {
        served.push({ x, log: xlog, blk, server: listen(x, s, blk, xlog) });
      } catch (e) {
        await blk.dataplane.close().catch(() => {});
        throw e;
      }
    }
    return served;
  } catch (e) {
    await Promise.all(served.map((v) => v.server.close().catch(() => {})));
    throw e;
  }
}

/** The start-up line of one export: what is served and how. */
function describe(x: ExportSettings, s: Settings, size: number): string {
  const mib = size / 2 ** 20;
  const queues = `${x.numQueues} ${x.numQueues === 1 ? "queue" : "queues"} of ${x.queueSize}`;
  const cache = x.readOnly ? "read-only" : x.writeback ? "writeback cache" : "write-through";
  const extra = [
    ...(x.logicalBlockSize === 512 ? [] : [`${x.logicalBlockSize}-byte blocks`]),
    ...(x.direct ? ["O_DIRECT"] : []),
    ...(x.serial === undefined ? [] : [`serial ${x.serial}`]),
    ...(x.pollMaxUs === 0 ? [] : [`polling up to ${x.pollMaxUs} µs`]),
  ];
  const threads =
    s.ioThreads === 0
      ? "queues on the main thread"
      : `${s.ioThreads} I/O ${s.ioThreads === 1 ? "thread" : "threads"}`;
  return `serving ${x.image} (${Number.isInteger(mib) ? mib : mib.toFixed(1)} MiB) as virtio-blk: ${[queues, cache, threads, ...extra].join(", ")}`;
}

/** Resolves with the first stop signal; `second` is called on any later one. */
function stopSignals(io: CliIo, second: () => void): { first: Promise<string>; off: () => void } {
  let seen = false;
  let resolve!: (s: string) => void;
  const first = new Promise<string>((r) => (resolve = r));
  const off = io.onStopSignal((signal) => {
    if (seen) second();
    seen = true;
    resolve(signal);
  });
  return { first, off };
}

/**
 * Stops one export: its rings drain for at most --shutdown-timeout, then
 * what is still in flight fails with IOERR; then its image is flushed.
 */
async function stopExport(v: Served, s: Settings): Promise<void> {
  const drained = v.server.close();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"late">(
    (r) => (timer = setTimeout(() => r("late"), s.shutdownTimeoutSeconds * 1000)),
  );
  try {
    if ((await Promise.race([drained, late])) === "late") {
      const n = await v.blk.dataplane.abort().catch(() => 0);
      v.log.process(
        `requests still in flight after ${s.shutdownTimeoutSeconds} s: failed ${n} with an I/O error`,
        "warn",
      );
      await drained;
    }
  } finally {
    clearTimeout(timer);
  }
  try {
    // fdatasync covers the file, whichever thread's descriptor wrote the data.
    if (!v.x.readOnly) await v.blk.dataplane.control("flush");
  } catch (e) {
    throw new CommandError(`disk image ${v.x.image}: flush failed while stopping: ${errorText(e)}`);
  }
}

/** Stops every export at once, then ends the dataplane; the first failure is thrown. */
async function stop(served: readonly Served[], s: Settings, pool: DataplanePool): Promise<number> {
  const results = await Promise.allSettled(served.map((v) => stopExport(v, s)));
  await pool.close();
  const failed = results.find((r) => r.status === "rejected");
  if (failed !== undefined) throw failed.reason;
  return 0;
}

/** Runs the command with checked settings until a stop signal; resolves with the exit status. */
export async function serve(s: Settings, ctx: CommandContext): Promise<number> {
  const { io, log } = ctx;
  const pool = await nodeDataplanePool({
    threads: s.ioThreads,
    trace: log.verbose,
    logger: log.logger(),
  });
  let served: Served[];
  try {
    served = await openExports(s, pool, log);
  } catch (e) {
    await pool.close();
    throw e;
  }
  for (const v of served) v.log.process(describe(v.x, s, v.blk.info.size));
  let forced!: (code: number) => void;
  const forcedExit = new Promise<number>((r) => (forced = r));
  const signals = stopSignals(io, () => {
    log.process("second stop signal: exiting without draining", "warn");
    forced(1);
  });
  for (const v of served) io.out(`listening on ${v.x.socket ?? `fd ${v.x.fd}`}`);
  const signal = await signals.first;
  log.process(`${signal}: stopping (draining requests in flight)`);
  const stopped = stop(served, s, pool);
  stopped.then(() => log.process("stopped")).catch(() => {});
  try {
    return await Promise.race([stopped, forcedExit]);
  } finally {
    signals.off();
  }
}

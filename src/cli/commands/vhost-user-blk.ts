/**
 * `virtio-ts vhost-user-blk`: serve a raw disk image as a virtio-blk device
 * (VIRTIO 1.2 §5.2) over vhost-user (qemu/qemu docs/interop/vhost-user.rst,
 * "Backend program conventions": a Unix socket path or an inherited
 * listening fd). Composes a dataplane pool, `openVhostUserBlk` and
 * {@link VhostUserServer}; the library does the work. Loaded only when the
 * command runs (./vhost-user-blk-command.ts describes it).
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
import type { Settings } from "./vhost-user-blk-flags.ts";

/** The one-line reason the listening socket cannot be created. */
function socketError(s: Settings, e: unknown): CommandError | undefined {
  if (!isNativeError(e)) return undefined;
  const where = s.socket === undefined ? `fd ${s.fd}` : `socket ${s.socket}`;
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
function imageError(s: Settings, e: unknown): CommandError | undefined {
  if (!isVirtioError(e, ErrorCode.BLK_IMAGE)) return undefined;
  const hint = !s.readOnly && /not writable/.test(e.message) ? " (or pass --read-only)" : "";
  return new CommandError(`${e.message}${hint}`);
}

/**
 * Starts the dataplane (`--io-threads` workers, or the calling thread) and
 * opens the image in it; the device's log lines come back to this thread's log.
 */
async function openDevice(
  s: Settings,
  log: CliLog,
): Promise<{ pool: DataplanePool; blk: OpenedVhostUserBlk }> {
  const logger = log.logger();
  const pool = await nodeDataplanePool({ threads: s.ioThreads, trace: log.verbose, logger });
  try {
    const blk = await openVhostUserBlk({
      pool,
      backing: { kind: "file", path: s.image, readOnly: s.readOnly, direct: s.direct },
      ...deviceOptions(s),
      logger,
    });
    if (blk.info.size === 0) throw new CommandError(`disk image ${s.image}: is empty (0 bytes)`);
    return { pool, blk };
  } catch (e) {
    await pool.close();
    throw imageError(s, e) ?? e;
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
function deviceOptions(s: Settings): BlkDataplaneConfig & BlkEngineLimits {
  return {
    numQueues: s.numQueues,
    queueSize: s.queueSize,
    readOnly: s.readOnly,
    logicalBlockSize: s.logicalBlockSize,
    writeback: s.writeback,
    ...(s.serial === undefined ? {} : { serial: s.serial }),
    ...(s.maxInFlight === undefined ? {} : { maxInFlight: s.maxInFlight }),
  };
}

function listen(s: Settings, blk: OpenedVhostUserBlk, log: CliLog): VhostUserServer {
  let connections = 0;
  if (s.fd !== undefined) checkListenFd(s.fd);
  try {
    return new VhostUserServer({
      backend: blk.backend,
      dataplane: blk.dataplane,
      allowUnsealedMemory: s.allowUnsealedMemory,
      ...(s.socket === undefined ? { listenFd: s.fd! } : { path: s.socket }),
      log: (line) => log.line(line),
      onConnection: (conn) => {
        const label = `conn ${++connections}`;
        log.connection = label;
        log.line("front-end connected");
        void conn.closed.then(() => {
          if (log.connection === label) log.connection = undefined;
        });
      },
    });
  } catch (e) {
    throw socketError(s, e) ?? e;
  }
}

/** The start-up line: what is served and how. */
function describe(s: Settings, size: number): string {
  const mib = size / 2 ** 20;
  const queues = `${s.numQueues} ${s.numQueues === 1 ? "queue" : "queues"} of ${s.queueSize}`;
  const cache = s.readOnly ? "read-only" : s.writeback ? "writeback cache" : "write-through";
  const extra = [
    ...(s.logicalBlockSize === 512 ? [] : [`${s.logicalBlockSize}-byte blocks`]),
    ...(s.direct ? ["O_DIRECT"] : []),
    ...(s.serial === undefined ? [] : [`serial ${s.serial}`]),
  ];
  const threads =
    s.ioThreads === 0
      ? "queues on the main thread"
      : `${s.ioThreads} I/O ${s.ioThreads === 1 ? "thread" : "threads"}`;
  return `serving ${s.image} (${Number.isInteger(mib) ? mib : mib.toFixed(1)} MiB) as virtio-blk: ${[queues, cache, threads, ...extra].join(", ")}`;
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
 * Stops the server: the rings drain for at most --shutdown-timeout, then
 * what is still in flight fails with IOERR; flushes the image, then closes
 * it and ends the dataplane.
 */
async function stop(
  s: Settings,
  server: VhostUserServer,
  pool: DataplanePool,
  blk: OpenedVhostUserBlk,
  log: CliLog,
): Promise<number> {
  const drained = server.close();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"late">(
    (r) => (timer = setTimeout(() => r("late"), s.shutdownTimeoutSeconds * 1000)),
  );
  try {
    if ((await Promise.race([drained, late])) === "late") {
      const n = await blk.dataplane.abort().catch(() => 0);
      log.process(
        `requests still in flight after ${s.shutdownTimeoutSeconds} s: failed ${n} with an I/O error`,
      );
      await drained;
    }
  } finally {
    clearTimeout(timer);
  }
  try {
    // fdatasync covers the file, whichever thread's descriptor wrote the data.
    if (!s.readOnly) await blk.dataplane.control("flush");
  } catch (e) {
    throw new CommandError(`disk image ${s.image}: flush failed while stopping: ${errorText(e)}`);
  } finally {
    await pool.close();
  }
  return 0;
}

/** Runs the command with checked settings until a stop signal; resolves with the exit status. */
export async function serve(s: Settings, ctx: CommandContext): Promise<number> {
  const { io, log } = ctx;
  const { pool, blk } = await openDevice(s, log);
  let server: VhostUserServer;
  try {
    server = listen(s, blk, log);
  } catch (e) {
    await pool.close();
    throw e;
  }
  log.process(describe(s, blk.info.size));
  let forced!: (code: number) => void;
  const forcedExit = new Promise<number>((r) => (forced = r));
  const signals = stopSignals(io, () => {
    log.process("second stop signal: exiting without draining");
    forced(1);
  });
  io.out(`listening on ${s.socket ?? `fd ${s.fd}`}`);
  const signal = await signals.first;
  log.process(`${signal}: stopping (draining requests in flight)`);
  const stopped = stop(s, server, pool, blk, log);
  stopped.then(() => log.process("stopped")).catch(() => {});
  try {
    return await Promise.race([stopped, forcedExit]);
  } finally {
    signals.off();
  }
}

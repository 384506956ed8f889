/**
 * `virtio-ts vhost-user-blk`: serve disks (raw images and block devices, NBD
 * exports, store modules: ./vhost-user-blk-disk.ts) as virtio-blk devices
 * (VIRTIO 1.2 §5.2) over vhost-user (qemu/qemu docs/interop/vhost-user.rst,
 * "Backend program conventions": a Unix socket path, or an inherited fd
 * that listens or is already connected) — one export, or several sharing
 * one dataplane pool, each with its own socket, device and log name, so
 * that one front-end's misbehaviour closes only its own connection.
 * Composes a dataplane pool, `openVhostUserBlk` and {@link VhostUserServer};
 * the library does the work. Loaded only when the command runs (./vhost-user-blk-command.ts
 * describes it).
 *
 * @module
 */
import type { DataplanePool } from "../../dataplane/pool.ts";
import type { BlkDataplaneConfig, BlkEngineLimits } from "../../devices/blk/runtime-device.ts";
import { type OpenedVhostUserBlk, openVhostUserBlk } from "../../devices/blk/vhost-user.ts";
import { nodeDataplanePool } from "../../devices/node-dataplane.ts";
import { errorText } from "../../log.ts";
import {
  isListeningSocket,
  isNativeError,
  nativeAvailable,
  nativeLoadError,
} from "../../native/index.ts";
import { VhostUserServer } from "../../vhost-user/server.ts";
import type { CliIo, CliLog } from "../log.ts";
import { Pidfile, ServiceNotifier } from "../service.ts";
import { type CommandContext, CommandError } from "./command.ts";
import { diskError, diskPlan } from "./vhost-user-blk-disk.ts";
import type { ExportSettings, Settings } from "./vhost-user-blk-flags.ts";

/** One export being served. */
interface Served {
  readonly x: ExportSettings;
  readonly log: CliLog;
  readonly blk: OpenedVhostUserBlk;
  readonly server: VhostUserServer;
  /** Serves one already connected fd (and is done when it hangs up). */
  readonly connected: boolean;
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

/** Opens export `x`'s image in the pool; the device's log lines come back to `log`. */
async function openDevice(
  x: ExportSettings,
  pool: DataplanePool,
  log: CliLog,
): Promise<OpenedVhostUserBlk> {
  let blk: OpenedVhostUserBlk | undefined;
  try {
    const disk = await diskPlan(x);
    blk = await openVhostUserBlk({
      pool,
      backing: disk.backing,
      oneRuntime: disk.oneRuntime,
      ...deviceOptions(x),
      logger: log.logger(),
    });
    if (blk.info.size === 0) throw new CommandError(`disk image ${x.image}: is empty (0 bytes)`);
    return blk;
  } catch (e) {
    await blk?.dataplane.close().catch(() => {});
    throw diskError(x, e) ?? e;
  }
}

/** Whether an inherited `--fd` listens (SO_ACCEPTCONN) or is connected; it must be an open socket. */
function fdListens(fd: number): boolean {
  try {
    return isListeningSocket(fd);
  } catch (e) {
    if (isNativeError(e, "EBADF")) throw new CommandError(`fd ${fd} is not open`);
    if (isNativeError(e, "ENOTSOCK")) throw new CommandError(`fd ${fd} is not a socket`);
    throw e;
  }
}

/** Where export `x` is served, as the server takes it. */
function where(
  x: ExportSettings,
): { path: string } | { listenFd: number } | { connectedFd: number } {
  if (x.fd === undefined) return { path: x.socket! };
  return fdListens(x.fd) ? { listenFd: x.fd } : { connectedFd: x.fd };
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
  const at = where(x);
  try {
    return new VhostUserServer({
      backend: blk.backend,
      dataplane: blk.dataplane,
      allowUnsealedMemory: s.allowUnsealedMemory,
      ...at,
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
        const server = listen(x, s, blk, xlog);
        served.push({ x, log: xlog, blk, server, connected: !server.listening });
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
    throw new CommandError(`disk ${v.x.image}: flush failed while stopping: ${errorText(e)}`);
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

/** Why serving ends. */
type StopReason = { signal: string } | { hungUp: true } | { failed: Error };

/**
 * The first of: a stop signal; every export's server done because its
 * connected front-end hung up (only exports on a connected --fd end so); a
 * server that can no longer accept (it logged why), or a failure to
 * announce readiness.
 */
function stopReason(served: readonly Served[], signal: Promise<string>): Promise<StopReason> {
  return new Promise((resolve) => {
    void signal.then((s) => resolve({ signal: s }));
    let left = served.length;
    for (const v of served)
      void v.server.done.then((error) => {
        if (error !== undefined) resolve({ failed: error });
        else if (--left === 0) resolve({ hungUp: true });
      });
  });
}

function stopLine(r: StopReason): string {
  if ("signal" in r) return `${r.signal}: stopping (draining requests in flight)`;
  if ("hungUp" in r) return "the front-end hung up (connected --fd): stopping";
  return "stopping after the error above";
}

/** The stdout line scripts wait for, per export. */
function readyLine(v: Served): string {
  if (v.connected) return `connected on fd ${v.x.fd}`;
  return `listening on ${v.x.socket ?? `fd ${v.x.fd}`}`;
}

/** Opens every export in a new dataplane pool; on a failure closes the pool again. */
async function start(s: Settings, log: CliLog): Promise<{ pool: DataplanePool; served: Served[] }> {
  const pool = await nodeDataplanePool({
    threads: s.ioThreads,
    trace: log.verbose,
    logger: log.logger(),
  });
  try {
    return { pool, served: await openExports(s, pool, log) };
  } catch (e) {
    await pool.close();
    throw e;
  }
}

/** What the service manager is told: the pid file and $NOTIFY_SOCKET. */
interface Service {
  readonly pidfile: Pidfile | undefined;
  readonly notifier: ServiceNotifier;
}

/** Checks the pid file and finds the notify socket, before anything starts. */
function service(s: Settings, io: CliIo, log: CliLog): Service {
  return {
    pidfile: s.pidfile === undefined ? undefined : new Pidfile(s.pidfile),
    notifier: new ServiceNotifier(io.env?.["NOTIFY_SOCKET"], (l) => log.process(l, "warn")),
  };
}

/** Every export serves: the ready lines on stdout, the pid file, READY=1. */
function announceReady(served: readonly Served[], io: CliIo, svc: Service): void {
  for (const v of served) io.out(readyLine(v));
  svc.pidfile?.write();
  const n = served.length;
  svc.notifier.notify({
    READY: 1,
    STATUS: `serving ${n} ${n === 1 ? "export" : "exports"}`,
    MAINPID: process.pid,
  });
}

/**
 * Runs the command with checked settings until a stop signal (or until a
 * connected front-end hangs up); resolves with the exit status.
 */
export async function serve(s: Settings, ctx: CommandContext): Promise<number> {
  const { io, log } = ctx;
  // Sockets, guest memory and eventfds all need the addon: say what to do, once, before anything starts.
  if (!nativeAvailable()) throw new CommandError(nativeLoadError() ?? "native addon not available");
  const svc = service(s, io, log);
  const { pool, served } = await start(s, log);
  for (const v of served) v.log.process(describe(v.x, s, v.blk.info.size));
  let forced!: (code: number) => void;
  const forcedExit = new Promise<number>((r) => (forced = r));
  const signals = stopSignals(io, () => {
    log.process("second stop signal: exiting without draining", "warn");
    forced(1);
  });
  try {
    let reason: StopReason;
    try {
      announceReady(served, io, svc);
      reason = await stopReason(served, signals.first);
    } catch (e) {
      log.process(e instanceof Error ? e.message : String(e), "error");
      reason = { failed: e instanceof Error ? e : new Error(String(e)) };
    }
    log.process(stopLine(reason));
    svc.notifier.notify({ STOPPING: 1, STATUS: stopLine(reason) });
    const stopped = stop(served, s, pool).then(() => ("failed" in reason ? 1 : 0));
    stopped.then(() => log.process("stopped")).catch(() => {});
    return await Promise.race([stopped, forcedExit]);
  } finally {
    signals.off();
    svc.pidfile?.remove();
  }
}

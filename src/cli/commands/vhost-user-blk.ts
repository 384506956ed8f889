/**
 * `virtio-ts vhost-user-blk`: serve a raw disk image as a virtio-blk device
 * (VIRTIO 1.2 §5.2) over vhost-user (qemu/qemu docs/interop/vhost-user.rst,
 * "Backend program conventions": a Unix socket path or an inherited
 * listening fd). Composes {@link FileBacking}, {@link VhostUserBlkBackend}
 * and {@link VhostUserServer}; the library does the work.
 *
 * @module
 */
import { fstatSync } from "node:fs";
import { ErrorCode, isVirtioError } from "../../errors.ts";
import { FileBacking } from "../../devices/blk/file-backing.ts";
import { errorText } from "../../devices/blk/log.ts";
import { isNativeError } from "../../native/index.ts";
import { VhostUserBlkBackend } from "../../vhost-user/blk-backend.ts";
import type { BlkFileBackendOptions } from "../../vhost-user/blk-file-backend.ts";
import { VhostUserServer } from "../../vhost-user/server.ts";
import { DataplaneWorker, WorkerDataplane } from "../../vhost-user/worker-dataplane.ts";
import type { CliIo, CliLog } from "../log.ts";
import { type Command, type CommandContext, CommandError } from "./command.ts";
import { EPILOG, FLAGS, type Settings, settings } from "./vhost-user-blk-flags.ts";

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

async function openImage(s: Settings, log: CliLog): Promise<FileBacking> {
  let backing: FileBacking;
  try {
    backing = await FileBacking.open(s.image, {
      readOnly: s.readOnly,
      direct: s.direct,
      logicalBlockSize: s.logicalBlockSize,
      logger: log.blkLogger(),
    });
  } catch (e) {
    if (isVirtioError(e, ErrorCode.BLK_IMAGE)) {
      const hint = !s.readOnly && /not writable/.test(e.message) ? " (or pass --read-only)" : "";
      throw new CommandError(`${e.message}${hint}`);
    }
    throw e;
  }
  if (backing.size === 0) {
    await backing.close();
    throw new CommandError(`disk image ${s.image}: is empty (0 bytes)`);
  }
  return backing;
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

/** Options every device instance is built with (on the control thread and in each worker). */
function deviceOptions(s: Settings): Omit<BlkFileBackendOptions, "imagePath" | "direct"> {
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

/**
 * Starts the dataplane workers: each opens the image itself and runs the
 * rings given to it; its device's log lines come back to this thread's log.
 */
async function startWorkers(s: Settings, log: CliLog): Promise<DataplaneWorker[]> {
  const workers: DataplaneWorker[] = [];
  // Running from the TypeScript sources: a worker's entry needs tsx too.
  const loader = import.meta.url.endsWith(".ts")
    ? { loaderRegister: import.meta.resolve("tsx/esm/api") }
    : {};
  for (let i = 0; i < s.ioThreads; i++) {
    workers.push(
      DataplaneWorker.spawn({
        backendModule: import.meta.resolve("../../vhost-user/blk-file-backend.ts"),
        backendOptions: {
          ...deviceOptions(s),
          imagePath: s.image,
          direct: s.direct,
        } satisfies BlkFileBackendOptions,
        trace: log.verbose,
        onLog: (level, message) => (level === "trace" ? log.trace(message) : log.line(message)),
        ...loader,
      }),
    );
  }
  const started = await Promise.allSettled(workers.map((w) => w.ready));
  const failed = started.find((r) => r.status === "rejected");
  if (failed !== undefined) {
    await stopWorkers(workers);
    throw new CommandError(`dataplane worker: ${errorText(failed.reason)}`);
  }
  return workers;
}

async function stopWorkers(workers: readonly DataplaneWorker[]): Promise<void> {
  await Promise.all(workers.map((w) => w.terminate().catch(() => {})));
}

function listen(
  s: Settings,
  backend: VhostUserBlkBackend,
  workers: readonly DataplaneWorker[],
  log: CliLog,
): VhostUserServer {
  let connections = 0;
  if (s.fd !== undefined) checkListenFd(s.fd);
  try {
    return new VhostUserServer({
      backend,
      ...(workers.length === 0 ? {} : { createDataplane: () => new WorkerDataplane(workers) }),
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

/** Stops the server (rings drain), the workers, then flushes and closes the image. */
async function stop(
  server: VhostUserServer,
  workers: readonly DataplaneWorker[],
  backing: FileBacking,
): Promise<number> {
  await server.close();
  await stopWorkers(workers);
  try {
    // fdatasync covers the file, whichever thread's descriptor wrote the data.
    await backing.flush();
  } catch (e) {
    throw new CommandError(
      `disk image ${backing.path}: flush failed while stopping: ${errorText(e)}`,
    );
  } finally {
    await backing.close();
  }
  return 0;
}

async function serve(s: Settings, ctx: CommandContext): Promise<number> {
  const { io, log } = ctx;
  const backing = await openImage(s, log);
  let server: VhostUserServer;
  let workers: DataplaneWorker[] = [];
  try {
    const backend = new VhostUserBlkBackend({
      ...deviceOptions(s),
      backing,
      logger: log.blkLogger(),
    });
    workers = await startWorkers(s, log);
    server = listen(s, backend, workers, log);
  } catch (e) {
    await stopWorkers(workers);
    await backing.close();
    throw e;
  }
  log.process(describe(s, backing.size));
  let forced!: (code: number) => void;
  const forcedExit = new Promise<number>((r) => (forced = r));
  const signals = stopSignals(io, () => {
    log.process("second stop signal: exiting without draining");
    forced(1);
  });
  io.out(`listening on ${s.socket ?? `fd ${s.fd}`}`);
  const signal = await signals.first;
  log.process(`${signal}: stopping (draining requests in flight)`);
  const stopped = stop(server, workers, backing);
  stopped.then(() => log.process("stopped")).catch(() => {});
  try {
    return await Promise.race([stopped, forcedExit]);
  } finally {
    signals.off();
  }
}

/** The `vhost-user-blk` command. */
export const vhostUserBlkCommand: Command = {
  name: "vhost-user-blk",
  summary: "serve a raw disk image to a VM as a vhost-user virtio-blk device",
  usage: "virtio-ts vhost-user-blk --socket PATH --image FILE [options]",
  flags: FLAGS,
  epilog: EPILOG,
  run: (flags, ctx) => serve(settings(flags), ctx),
};

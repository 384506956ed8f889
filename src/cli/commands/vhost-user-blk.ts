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
import { isNativeError } from "../../native/index.ts";
import { VhostUserBlkBackend } from "../../vhost-user/blk-backend.ts";
import { VhostUserServer } from "../../vhost-user/server.ts";
import { type FlagSpec, type ParsedFlags, UsageError } from "../args.ts";
import type { CliIo, CliLog } from "../log.ts";

/** What a command gets from main. */
export interface CommandContext {
  readonly io: CliIo;
  readonly log: CliLog;
}

/** A CLI command: its flags, its help, and what it does. */
export interface Command {
  readonly name: string;
  /** One line for the command list. */
  readonly summary: string;
  readonly usage: string;
  readonly flags: readonly FlagSpec[];
  /** Help text after the flag list (examples, exit status). */
  readonly epilog: string;
  /** Runs with validated flags; resolves with the exit status. */
  run(flags: ParsedFlags, ctx: CommandContext): Promise<number>;
}

const isPowerOfTwo = (v: string | number): boolean =>
  typeof v === "number" && v > 0 && (v & (v - 1)) === 0;

const FLAGS: readonly FlagSpec[] = [
  {
    name: "socket",
    kind: "string",
    metavar: "PATH",
    group: "Where",
    help: "Unix socket to create and listen on; the front-end\nconnects to it. A stale socket file is replaced; a\npath where a server answers is an error.",
  },
  {
    name: "fd",
    kind: "integer",
    metavar: "N",
    min: 3,
    max: 65535,
    group: "Where",
    help: "Serve on an inherited, already listening Unix socket\ninstead of --socket (the vhost-user back-end\nconvention, e.g. for libvirt).",
  },
  {
    name: "image",
    kind: "string",
    metavar: "FILE",
    required: true,
    group: "Where",
    help: "Raw disk image; its size must be a multiple of the\nlogical block size.",
  },
  {
    name: "num-queues",
    kind: "integer",
    metavar: "N",
    min: 1,
    max: 1024,
    group: "Device",
    help: "Request queues, 1..1024 (default 1). QEMU's\nvhost-user-blk-pci num-queues must not be larger;\nQEMU defaults to one queue per vCPU, so give it\nnum-queues=N explicitly.",
  },
  {
    name: "queue-size",
    kind: "integer",
    metavar: "N",
    min: 4,
    max: 32768,
    check: (v) => (isPowerOfTwo(v) ? undefined : "must be a power of two"),
    group: "Device",
    help: "Ring size the front-end uses (QEMU's queue-size):\na power of two, 4..32768 (default 128). The device\nreports seg_max = N - 2.",
  },
  {
    name: "read-only",
    kind: "boolean",
    group: "Device",
    help: "Export read-only (VIRTIO_BLK_F_RO): the image is\nopened O_RDONLY and every guest write fails.",
  },
  {
    name: "serial",
    kind: "string",
    metavar: "ID",
    check: (v) =>
      typeof v === "string" && v.length <= 20 && /^[\x20-\x7e]+$/.test(v)
        ? undefined
        : "must be 1..20 printable ASCII characters",
    group: "Device",
    help: "Device ID the guest reads (GET_ID), 1..20 printable\nASCII characters (Linux: /sys/block/vda/serial,\n/dev/disk/by-id/virtio-ID).",
  },
  {
    name: "logical-block-size",
    kind: "integer",
    metavar: "N",
    min: 512,
    max: 4096,
    check: (v) => (isPowerOfTwo(v) ? undefined : "must be 512, 1024, 2048 or 4096"),
    group: "Device",
    help: "Logical block size in bytes: 512 (default), 1024,\n2048 or 4096.",
  },
  {
    name: "writeback",
    kind: "boolean",
    group: "Device",
    help: "Report a writeback cache: a write completes once it\nis in the host page cache; the guest's FLUSH runs\nfdatasync. Default: write-through, every write is on\nstable storage before it completes. The guest may\nswitch (Linux: /sys/block/vda/queue/write_cache).",
  },
  {
    name: "direct",
    kind: "boolean",
    group: "I/O",
    help: "Open the image with O_DIRECT (bypass the host page\ncache).",
  },
  {
    name: "max-in-flight",
    kind: "integer",
    metavar: "N",
    min: 1,
    max: 32768,
    group: "I/O",
    help: "Requests each queue has in flight on the image,\n1..32768 (default 32).",
  },
];

const EPILOG = `Example with QEMU (guest RAM must be shared memory):
  virtio-ts vhost-user-blk --socket /tmp/vhost-user-blk.sock --image disk.img --num-queues 2 &
  qemu-system-x86_64 -machine q35,accel=kvm -m 1G -smp 2 \\
    -object memory-backend-memfd,id=mem,size=1G,share=on -numa node,memdev=mem \\
    -chardev socket,id=vu0,path=/tmp/vhost-user-blk.sock,reconnect=1 \\
    -device vhost-user-blk-pci,chardev=vu0,num-queues=2 \\
    -kernel bzImage -append "console=ttyS0 root=/dev/vda" -nographic

One front-end at a time; after it disconnects the next one may connect
(reconnect=1 makes QEMU come back after a restart of this server).
SIGINT or SIGTERM stops cleanly: in-flight requests complete, the image is
flushed, the socket file is removed, exit status 0. A second signal exits at
once with status 1.

Exit status: 0 clean stop; 1 runtime error (image, socket, I/O); 2 bad usage.
More: docs/cli.md (cloud-hypervisor, troubleshooting).`;

/** Validated settings of one run. */
interface Settings {
  readonly socket: string | undefined;
  readonly fd: number | undefined;
  readonly image: string;
  readonly numQueues: number;
  readonly queueSize: number;
  readonly readOnly: boolean;
  readonly serial: string | undefined;
  readonly logicalBlockSize: number;
  readonly writeback: boolean;
  readonly direct: boolean;
  readonly maxInFlight: number | undefined;
}

function settings(f: ParsedFlags): Settings {
  if (f.has("socket") === f.has("fd"))
    throw new UsageError("give exactly one of --socket and --fd");
  return {
    socket: f.get("socket") as string | undefined,
    fd: f.get("fd") as number | undefined,
    image: f.get("image") as string,
    numQueues: (f.get("num-queues") as number | undefined) ?? 1,
    queueSize: (f.get("queue-size") as number | undefined) ?? 128,
    readOnly: f.has("read-only"),
    serial: f.get("serial") as string | undefined,
    logicalBlockSize: (f.get("logical-block-size") as number | undefined) ?? 512,
    writeback: f.has("writeback"),
    direct: f.has("direct"),
    maxInFlight: f.get("max-in-flight") as number | undefined,
  };
}

/** A runtime failure with a one-line message (exit status 1). */
export class CommandError extends Error {
  override readonly name = "CommandError";
}

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

function listen(s: Settings, backend: VhostUserBlkBackend, log: CliLog): VhostUserServer {
  let connections = 0;
  if (s.fd !== undefined) checkListenFd(s.fd);
  try {
    return new VhostUserServer({
      backend,
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

async function serve(s: Settings, ctx: CommandContext): Promise<number> {
  const { io, log } = ctx;
  const backing = await openImage(s, log);
  let server: VhostUserServer;
  try {
    const backend = new VhostUserBlkBackend({
      backing,
      numQueues: s.numQueues,
      queueSize: s.queueSize,
      readOnly: s.readOnly,
      logicalBlockSize: s.logicalBlockSize,
      writeback: s.writeback,
      ...(s.serial === undefined ? {} : { serial: s.serial }),
      ...(s.maxInFlight === undefined ? {} : { maxInFlight: s.maxInFlight }),
      logger: log.blkLogger(),
    });
    server = listen(s, backend, log);
  } catch (e) {
    await backing.close();
    throw e;
  }
  const sizeMiB = (backing.size / 2 ** 20).toFixed(backing.size % 2 ** 20 === 0 ? 0 : 1);
  log.debug(
    `${s.image}: ${sizeMiB} MiB, ${s.numQueues} queue(s) of ${s.queueSize}, ` +
      `${s.readOnly ? "read-only" : s.writeback ? "writeback" : "write-through"}${s.direct ? ", O_DIRECT" : ""}`,
  );
  let forced!: (code: number) => void;
  const forcedExit = new Promise<number>((r) => (forced = r));
  const signals = stopSignals(io, () => {
    log.line("second stop signal: exiting without draining");
    forced(1);
  });
  io.out(`listening on ${s.socket ?? `fd ${s.fd}`}`);
  const signal = await signals.first;
  log.connection = undefined;
  log.line(`${signal}: stopping (draining requests in flight)`);
  const stopped = (async (): Promise<number> => {
    await server.close();
    try {
      await backing.flush();
    } finally {
      await backing.close();
    }
    log.line("stopped");
    return 0;
  })();
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

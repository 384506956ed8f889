/**
 * vhost-user-blk backends for the real-guest tests, behind one interface so
 * the same guest scenarios run against qemu-storage-daemon (the reference)
 * and against this project's CLI.
 *
 * Readiness is observed without connecting (a probe connection would be a
 * frontend session of its own): either a line on the backend's stdout, or
 * the socket appearing as a listening Unix socket in `/proc/net/unix`.
 *
 * @module
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Child, type ExitStatus } from "./process.ts";
import { REPO_ROOT } from "./install.ts";

/** What a scenario asks of a backend. */
export interface BackendOptions {
  /** Unix socket path to listen on (QEMU connects to it). */
  readonly socketPath: string;
  /** Raw disk image. */
  readonly imagePath: string;
  /** Queues to offer (vhost-user-blk-pci gets the same `num-queues`). */
  readonly numQueues: number;
  /** Export read-only (VIRTIO_BLK_F_RO). */
  readonly readOnly?: boolean;
  /** More command-line flags for this project's CLI (ignored by other backends). */
  readonly cliArgs?: readonly string[];
}

/** A running backend. */
export interface Backend {
  readonly label: string;
  readonly socketPath: string;
  /** Output tails for failure messages. */
  diagnostics(): string;
  /** Exit status if the backend already exited. */
  readonly status: ExitStatus | undefined;
  /** Stop it (SIGTERM, then SIGKILL) and wait for the exit. */
  stop(): Promise<ExitStatus>;
  /** Kill it abruptly (reconnect tests). */
  kill(): void;
  /** The guest's device asks for packed virtqueues (`packed=on`; see {@link withPackedRings}). */
  readonly packed?: boolean;
}

/** Starts a backend and resolves once its socket accepts connections. */
export type StartBackend = (opts: BackendOptions) => Promise<Backend>;

/**
 * The same backend, with the guest's `vhost-user-blk-pci` asking for packed
 * virtqueues (`packed=on`): every scenario then runs over VIRTIO_F_RING_PACKED
 * (the backend must offer it; QEMU clears the bit otherwise).
 */
export function withPackedRings(start: StartBackend): StartBackend {
  return async (opts) => {
    const b = await start(opts);
    return {
      label: `${b.label} (packed rings)`,
      socketPath: b.socketPath,
      diagnostics: () => b.diagnostics(),
      get status() {
        return b.status;
      },
      stop: () => b.stop(),
      kill: () => b.kill(),
      packed: true,
    };
  };
}

const READY_TIMEOUT_MS = 20_000;
/** `__SO_ACCEPTCON` in the Flags column of /proc/net/unix: a listening socket. */
const SO_ACCEPTCON = 0x10000;

/** Whether `path` is bound by a listening Unix stream socket on this host. */
export function isUnixListening(path: string): boolean {
  let table: string;
  try {
    table = readFileSync("/proc/net/unix", "utf8");
  } catch {
    return false;
  }
  for (const line of table.split("\n").slice(1)) {
    // Num RefCount Protocol Flags Type St Inode Path
    const cols = line.trim().split(/\s+/);
    if (cols.length >= 8 && cols.slice(7).join(" ") === path) {
      if ((Number.parseInt(cols[3] ?? "0", 16) & SO_ACCEPTCON) !== 0) return true;
    }
  }
  return false;
}

/** How to tell that a spawned backend is ready. */
export type Readiness = { readonly stdoutLine: RegExp } | { readonly listening: string };

/**
 * Spawn a backend command and wait (bounded) until it is ready. Rejects with
 * its output if it exits first or does not get ready in time.
 */
export async function spawnBackend(
  label: string,
  cmd: string,
  args: readonly string[],
  socketPath: string,
  ready: Readiness,
  env?: NodeJS.ProcessEnv,
): Promise<Backend> {
  const child = new Child(label, cmd, args, { cwd: REPO_ROOT, env: env ?? process.env });
  const isReady = (): boolean =>
    "listening" in ready
      ? isUnixListening(ready.listening)
      : ready.stdoutLine.test(child.stdout.text());
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (!isReady()) {
    if (child.status) {
      throw new Error(`${label} exited before it was ready\n${child.diagnostics()}`);
    }
    if (Date.now() > deadline) {
      await child.stop(1000);
      throw new Error(`${label} not ready after ${READY_TIMEOUT_MS} ms\n${child.diagnostics()}`);
    }
    await sleep(50);
  }
  return {
    label,
    socketPath,
    diagnostics: () => child.diagnostics(),
    get status() {
      return child.status;
    },
    stop: () => child.stop(),
    kill: () => child.kill("SIGKILL"),
  };
}

/** qemu-storage-daemon exporting a raw file as vhost-user-blk (the reference backend). */
export const startQsd: StartBackend = (o) =>
  spawnBackend(
    "qemu-storage-daemon",
    "qemu-storage-daemon",
    [
      "--blockdev",
      `driver=file,node-name=file0,filename=${o.imagePath},cache.direct=off`,
      "--export",
      [
        "type=vhost-user-blk",
        "id=exp0",
        "node-name=file0",
        "addr.type=unix",
        `addr.path=${o.socketPath}`,
        `writable=${o.readOnly ? "off" : "on"}`,
        `num-queues=${o.numQueues}`,
      ].join(","),
    ],
    o.socketPath,
    { listening: o.socketPath },
  );

/**
 * The command that runs this project's CLI: the `virtio-ts` entry of
 * package.json's `bin`, run directly (so signals reach the CLI itself, not
 * an npm wrapper), or `npx --no-install virtio-ts` while there is none.
 */
export function virtioTsCommand(): { cmd: string; args: string[] } {
  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as {
    bin?: string | Record<string, string>;
  };
  const bin = typeof pkg.bin === "string" ? pkg.bin : pkg.bin?.["virtio-ts"];
  if (bin && existsSync(join(REPO_ROOT, bin))) return { cmd: join(REPO_ROOT, bin), args: [] };
  return { cmd: "npx", args: ["--no-install", "virtio-ts"] };
}

/**
 * This project's CLI, `virtio-ts vhost-user-blk --socket ... --image ...`,
 * ready when it prints `listening on PATH`.
 */
export const startVirtioTsCli: StartBackend = (o) => {
  const { cmd, args } = virtioTsCommand();
  return spawnBackend(
    "virtio-ts vhost-user-blk",
    cmd,
    [
      ...args,
      "vhost-user-blk",
      "--socket",
      o.socketPath,
      "--image",
      o.imagePath,
      "--num-queues",
      String(o.numQueues),
      ...(o.readOnly ? ["--read-only"] : []),
      ...(o.cliArgs ?? []),
    ],
    o.socketPath,
    { stdoutLine: new RegExp(`listening on ${escapeRegExp(o.socketPath)}`) },
  );
};

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/**
 * Boot a real Linux guest under QEMU (TCG) and run shell steps in it.
 *
 * The disk under test is either a `vhost-user-blk-pci` device connected to a
 * backend socket (guest RAM is a shared memfd, as vhost-user requires) or
 * QEMU's own `virtio-blk-pci` on an image file (the baseline for
 * benchmarks). The guest's `/init` (scripts/guest/init.sh) frames each step
 * with `VTS-BEGIN` / `VTS-END` on the serial console; this module parses
 * them. Every run has a hard deadline: QEMU is killed and the run fails with
 * the serial log tail. A kernel panic fails the run at once.
 *
 * @module
 */
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { ensureGuestPrereqs } from "./install.ts";
import { ensureInitramfs, runArchive, writeInitrd, type GuestStep } from "./initramfs.ts";
import { Child, type ExitStatus } from "./process.ts";

export type { GuestStep } from "./initramfs.ts";

/** The disk under test. */
export type GuestDisk =
  | {
      readonly kind: "vhost-user";
      /** Backend socket QEMU connects to. */
      readonly socket: string;
      readonly numQueues: number;
      /** `reconnect=N` on the chardev (only for reconnect tests). */
      readonly reconnectSeconds?: number;
      /** `packed=on`: the device negotiates VIRTIO_F_RING_PACKED when the backend offers it. */
      readonly packed?: boolean;
    }
  | {
      readonly kind: "virtio-blk";
      /** Raw image served by QEMU itself. */
      readonly image: string;
      readonly numQueues?: number;
      /** QEMU `cache=` mode; default `writeback`. `none` needs O_DIRECT on the host fs. */
      readonly cache?: "none" | "writeback" | "writethrough" | "directsync" | "unsafe";
      /** QEMU `aio=`; default `io_uring`. */
      readonly aio?: "io_uring" | "threads" | "native";
      readonly readOnly?: boolean;
    };

/** Options of {@link runGuest}. */
export interface GuestRunOptions {
  /** The disk under test; the guest sees it as `$VTS_DISK` (normally /dev/vda). */
  readonly disk?: GuestDisk;
  /** A second raw image on QEMU's virtio-blk, serial `vts-extra` (`$VTS_EXTRA`). */
  readonly extraDrive?: { readonly image: string; readonly readOnly?: boolean };
  readonly steps: readonly GuestStep[];
  /** Boots in one QEMU run: the guest reboots (`reboot -f`) between them; default 1. */
  readonly boots?: number;
  /** Put fio (and its ~85 MB of libraries) in the guest. */
  readonly fio?: boolean;
  /** Files for the guest, at `/vts/files/<name>`. */
  readonly files?: Readonly<Record<string, Uint8Array | string>>;
  /** vCPUs; default 1. */
  readonly smp?: number;
  /** Guest RAM in MiB (one shared memfd); default 256. */
  readonly memMiB?: number;
  /** Hard deadline for the whole QEMU run. */
  readonly timeoutMs: number;
  /** Extra text for failure messages, e.g. the backend's output. */
  readonly diagnostics?: () => string;
  /**
   * Polled while the guest runs: a returned reason kills QEMU and fails the
   * run at once (e.g. "the backend exited"), instead of waiting for the deadline.
   */
  readonly abortIf?: () => string | undefined;
  /** Polled with the serial log so far (every 100 ms), e.g. to act on guest progress. */
  readonly onSerial?: (serialLog: string) => void;
  /** Resolve even when a step failed (default: reject). */
  readonly allowStepFailures?: boolean;
  /** Appended to the QEMU command line. */
  readonly extraQemuArgs?: readonly string[];
  /** Appended to the kernel command line. */
  readonly extraKernelArgs?: string;
  /** Keep the work directory (serial log) when the run fails; default true. */
  readonly keepOnFailure?: boolean;
}

/** One step's outcome. */
export interface GuestStepResult {
  readonly name: string;
  readonly boot: number;
  /** Exit status of the step's shell, or null if it never finished. */
  readonly rc: number | null;
  /** Console lines between its markers. */
  readonly output: string;
  /** Guest uptime (s) at VTS-BEGIN and VTS-END. */
  readonly began: number;
  readonly ended: number | null;
}

/** Per boot: guest uptime (s) when /init started and when it was done. */
export interface GuestBoot {
  readonly boot: number;
  /** Guest uptime at /init (under a loaded TCG host the guest clock can drift). */
  readonly initAt: number;
  /**
   * Host milliseconds from QEMU's start until the runner saw this boot's
   * `VTS-INIT` on the console (polled every 100 ms); the boot time to trust.
   */
  readonly hostInitMs?: number;
  readonly doneAt: number | null;
  readonly failed: boolean | null;
}

/** What {@link runGuest} returns. */
export interface GuestRunResult {
  readonly serialLog: string;
  readonly steps: readonly GuestStepResult[];
  readonly boots: readonly GuestBoot[];
  /** QEMU's exit code (0 after a guest poweroff). */
  readonly exitCode: number | null;
  readonly qemuExit: ExitStatus;
  /** Host wall time of the QEMU run. */
  readonly wallMs: number;
  /** The result of step `name` in `boot` (default 1); throws if absent. */
  step(name: string, boot?: number): GuestStepResult;
}

/** A failed guest run; `message` carries the diagnostics. */
export class GuestRunError extends Error {
  override readonly name = "GuestRunError";
  constructor(
    message: string,
    readonly serialLog: string,
  ) {
    super(message);
  }
}

const QEMU = "qemu-system-x86_64";
const POLL_MS = 100;
const PANIC = /Kernel panic - not syncing|VTS-HALT-FAILED/;

/** Parse the serial log into boots and step results. */
export function parseSerialLog(log: string): { steps: GuestStepResult[]; boots: GuestBoot[] } {
  const steps: GuestStepResult[] = [];
  const boots: GuestBoot[] = [];
  let initAt = 0;
  let boot = 0;
  let open: { name: string; began: number; lines: string[] } | undefined;
  const close = (rc: number | null, ended: number | null): void => {
    if (!open) return;
    const output = open.lines.join("\n").trimEnd();
    steps.push({ name: open.name, boot, rc, output, began: open.began, ended });
    open = undefined;
  };
  for (const raw of log.split("\n")) {
    const line = raw.replace(/\r/g, "");
    let m: RegExpExecArray | null;
    if ((m = /^VTS-INIT uptime=([\d.]+)/.exec(line))) {
      close(null, null);
      initAt = Number(m[1]);
    } else if ((m = /^VTS-BOOT (\d+) /.exec(line))) {
      boot = Number(m[1]);
      boots.push({ boot, initAt, doneAt: null, failed: null });
    } else if ((m = /^VTS-BEGIN (\S+) uptime=([\d.]+)/.exec(line))) {
      close(null, null);
      open = { name: m[1] ?? "", began: Number(m[2]), lines: [] };
    } else if ((m = /^VTS-END (\S+) rc=(\d+) uptime=([\d.]+)/.exec(line)) && open?.name === m[1]) {
      close(Number(m[2]), Number(m[3]));
    } else if ((m = /^VTS-DONE boot=(\d+) failed=(\d) uptime=([\d.]+)/.exec(line))) {
      close(null, null);
      const b = boots.findLast((x) => x.boot === Number(m?.[1]));
      if (b) boots[boots.indexOf(b)] = { ...b, doneAt: Number(m[3]), failed: m[2] === "1" };
    } else if (open) {
      open.lines.push(line);
    }
  }
  close(null, null);
  return { steps, boots };
}

/** The QEMU arguments for the disk under test and the extra/state drives. */
function diskArgs(o: GuestRunOptions, statePath: string | undefined): string[] {
  const a: string[] = [];
  const d = o.disk;
  if (d?.kind === "vhost-user") {
    const reconnect = d.reconnectSeconds ? `,reconnect=${d.reconnectSeconds}` : "";
    a.push("-chardev", `socket,id=vu0,path=${d.socket}${reconnect}`);
    const packed = d.packed === true ? ",packed=on" : "";
    a.push("-device", `vhost-user-blk-pci,chardev=vu0,num-queues=${d.numQueues},addr=0x4${packed}`);
  } else if (d?.kind === "virtio-blk") {
    const drive = [
      `file=${d.image}`,
      "if=none",
      "id=d0",
      "format=raw",
      `aio=${d.aio ?? "io_uring"}`,
      `cache=${d.cache ?? "writeback"}`,
      ...(d.readOnly ? ["readonly=on"] : []),
    ];
    a.push("-drive", drive.join(","));
    a.push("-device", `virtio-blk-pci,drive=d0,num-queues=${d.numQueues ?? 1},addr=0x4`);
  }
  if (o.extraDrive) {
    const ro = o.extraDrive.readOnly ? ",readonly=on" : "";
    a.push("-drive", `file=${o.extraDrive.image},if=none,id=dx,format=raw${ro}`);
    a.push("-device", "virtio-blk-pci,drive=dx,serial=vts-extra,addr=0x5");
  }
  if (statePath) {
    a.push("-drive", `file=${statePath},if=none,id=ds,format=raw,cache=writethrough`);
    a.push("-device", "virtio-blk-pci,drive=ds,serial=vts-state,addr=0x6");
  }
  return a;
}

/** The full QEMU command line. */
function qemuArgs(
  o: GuestRunOptions,
  kernelImage: string,
  initrd: string,
  serial: string,
  state?: string,
): string[] {
  const mem = o.memMiB ?? 256;
  // rootfstype=ramfs: the initramfs root has no size cap (tmpfs would stop at half of RAM).
  // no_timer_check: on a loaded host TCG can miss the IO-APIC timer check's window and the
  // kernel panics ("IO-APIC + timer doesn't work!"); virtual machines commonly skip the check.
  const append = [
    "console=ttyS0",
    "loglevel=4",
    "panic=0",
    "rootfstype=ramfs",
    "no_timer_check",
    o.extraKernelArgs ?? "",
  ]
    .join(" ")
    .trim();
  return [
    ...[
      "-machine",
      "q35",
      "-accel",
      "tcg",
      "-cpu",
      "max",
      "-smp",
      String(o.smp ?? 1),
      "-m",
      String(mem),
    ],
    ...["-object", `memory-backend-memfd,id=mem,size=${mem}M,share=on`, "-numa", "node,memdev=mem"],
    ...["-nodefaults", "-no-user-config", "-display", "none", "-serial", `file:${serial}`],
    ...["-kernel", kernelImage, "-initrd", initrd, "-append", append],
    ...diskArgs(o, state),
    ...(o.extraQemuArgs ?? []),
  ];
}

/** Read what was appended to the serial log since `from`. */
function readFrom(path: string, from: number): string {
  try {
    if (statSync(path).size <= from) return "";
    return readFileSync(path).subarray(from).toString("latin1");
  } catch {
    return "";
  }
}

/** What {@link watch} saw. */
interface Watched {
  readonly log: string;
  /** Why the run was cut short, if it was. */
  readonly why?: string;
  /** Host time (ms since start) when each `VTS-INIT` line first showed up. */
  readonly inits: readonly number[];
}

/** Wait for QEMU to exit, watching the serial log for panics, bounded by the deadline. */
async function watch(
  qemu: Child,
  serialPath: string,
  started: number,
  deadline: number,
  o: Pick<GuestRunOptions, "abortIf" | "onSerial">,
): Promise<Watched> {
  let log = "";
  const inits: number[] = [];
  const more = (): string => readFrom(serialPath, Buffer.byteLength(log, "latin1"));
  for (;;) {
    log += more();
    const seen = log.match(/^VTS-INIT /gm)?.length ?? 0;
    while (inits.length < seen) inits.push(Date.now() - started);
    if (qemu.status) return { log: log + more(), inits };
    let why: string | undefined;
    if (PANIC.test(log)) why = "the guest panicked or could not power off";
    else if (Date.now() > deadline) why = "timed out";
    else why = o.abortIf?.();
    o.onSerial?.(log);
    if (why) {
      qemu.kill("SIGKILL");
      await qemu.exited;
      return { log: log + more(), why, inits };
    }
    await sleep(POLL_MS);
  }
}

function tail(text: string, lines: number): string {
  return text.replace(/\r/g, "").trimEnd().split("\n").slice(-lines).join("\n");
}

/** Why a finished run counts as failed, or undefined. */
function failureOf(
  o: GuestRunOptions,
  r: Omit<GuestRunResult, "step" | "serialLog">,
): string | undefined {
  if (r.exitCode !== 0) return `QEMU exited with code ${r.exitCode} signal ${r.qemuExit.signal}`;
  const boots = o.boots ?? 1;
  if (r.boots.length !== boots) return `expected ${boots} boot(s), saw ${r.boots.length}`;
  if (o.allowStepFailures) return undefined;
  for (const s of o.steps) {
    const got = r.steps.find((x) => x.name === s.name && x.boot === (s.boot ?? 1));
    if (!got) return `step ${s.name} (boot ${s.boot ?? 1}) did not run`;
    if (got.rc !== 0)
      return `step ${s.name} (boot ${got.boot}) failed with rc=${got.rc}:\n${tail(got.output, 40)}`;
  }
  return undefined;
}

/**
 * Boot the guest, run `steps`, and wait for it to power off.
 *
 * Rejects with a {@link GuestRunError} (serial log tail, QEMU stderr and
 * `diagnostics()`) on timeout, kernel panic, a QEMU failure, a missing boot,
 * or — unless `allowStepFailures` — a step that did not exit 0.
 */
export async function runGuest(o: GuestRunOptions): Promise<GuestRunResult> {
  const { kernel } = await ensureGuestPrereqs();
  const parts = await ensureInitramfs(kernel, { fio: o.fio === true });
  const boots = o.boots ?? 1;
  const disks = (o.disk ? 1 : 0) + (o.extraDrive ? 1 : 0) + (boots > 1 ? 1 : 0);
  const runPart = runArchive({ steps: o.steps, boots, disks, files: o.files }); // validates first
  const work = mkdtempSync(join(tmpdir(), "vts-guest-"));
  const serial = join(work, "serial.log");
  const initrd = join(work, "initrd.img");
  writeInitrd(parts.paths, runPart, initrd);
  let state: string | undefined;
  if (boots > 1) {
    state = join(work, "state.img");
    writeFileSync(state, Buffer.alloc(64 * 1024));
  }
  writeFileSync(serial, "");
  const started = Date.now();
  const qemu = new Child("qemu", QEMU, qemuArgs(o, kernel.bootImage, initrd, serial, state));
  let watched: Watched;
  try {
    watched = await watch(qemu, serial, started, started + o.timeoutMs, o);
  } catch (e) {
    qemu.kill("SIGKILL"); // abortIf or onSerial threw: never leave QEMU behind
    await qemu.exited;
    rmSync(work, { recursive: true, force: true });
    throw e;
  }
  const { log, why, inits } = watched;
  const qemuExit = await qemu.exited;
  rmSync(initrd, { force: true });
  const parsed = parseSerialLog(log);
  // Boot i is the i-th VTS-INIT (a boot that died before VTS-BOOT has no entry).
  const initLines = [...log.matchAll(/^VTS-INIT uptime=([\d.]+)/gm)].map((m) => Number(m[1]));
  parsed.boots.forEach((b, i) => {
    const at = initLines.indexOf(b.initAt, i);
    if (at >= 0 && inits[at] !== undefined) parsed.boots[i] = { ...b, hostInitMs: inits[at] };
  });
  const partial = { ...parsed, exitCode: qemuExit.code, qemuExit, wallMs: Date.now() - started };
  const failure = why ?? failureOf(o, partial);
  if (failure) {
    const extra = o.diagnostics?.() ?? "";
    const keep = o.keepOnFailure ?? true;
    if (!keep) rmSync(work, { recursive: true, force: true });
    else if (state) rmSync(state, { force: true });
    throw new GuestRunError(
      `guest run failed: ${failure} (after ${partial.wallMs} ms${keep ? `; serial log in ${serial}` : ""})\n` +
        `--- serial log tail ---\n${tail(log, 60)}\n${qemu.diagnostics(30)}\n${extra}`,
      log,
    );
  }
  rmSync(work, { recursive: true, force: true });
  return {
    ...partial,
    serialLog: log,
    step(name: string, boot = 1): GuestStepResult {
      const s = parsed.steps.find((x) => x.name === name && x.boot === boot);
      if (!s) throw new Error(`no result for step ${name} in boot ${boot}`);
      return s;
    },
  };
}

/**
 * Linux's C ring benchmark (`tools/virtio/ringtest` of the kernel sources),
 * measured in the same run as our in-process ring benchmark
 * (./ring-bench.ts) so the report can give our / C ratios.
 *
 * The binary is built on first use from Debian's `linux-source-6.1` package
 * (installed with apt when `/usr/src/linux-source-6.1.tar.xz` is missing):
 * only `tools/virtio/ringtest/` is extracted, and `make` builds its
 * `virtio_ring_0_9` target (and `virtio_ring_poll` where the tree has it),
 * which need nothing beyond that directory and the system's
 * `<linux/virtio_ring.h>`. The binaries are cached in
 * `$XDG_CACHE_HOME/virtio-ts/` (default `~/.cache/virtio-ts/`) and reused.
 *
 * What ringtest does (main.c, virtio_ring_0_9.c): a "guest" thread adds
 * 1-descriptor buffers to a split ring (EVENT_IDX always on) and a "host"
 * thread returns each one through the used ring; `--run-cycles C` is the
 * number of buffers, so one cycle is one round trip and round trips/s is
 * C divided by the wall time of the process. With `--sleep` each side
 * sleeps on an eventfd when its ring is empty and is woken by a kick/call
 * (suppressed by the event indices); the guest kicks after every
 * `--batch` adds. Without `--sleep` both sides busy-poll and never notify.
 * `--outstanding` caps the buffers in flight (default: the ring's worth).
 * Every kick and call also spins ~500 + 500 TSC cycles around the eventfd
 * write (ringtest's model of a VM exit and entry; on by default, no switch
 * turns it off).
 *
 * Our jobs and the ringtest run each is compared with (always
 * `--ring-size 256`):
 *
 * | ours (ring-wait: sleeping) | ringtest                        |
 * | -------------------------- | ------------------------------- |
 * | batch-1                    | `--sleep --batch 1`             |
 * | batch-32                   | `--sleep --batch 32`            |
 * | ping-pong                  | `--sleep --batch 1 --outstanding 1` |
 *
 * | ours (ring-poll: busy-poll) | ringtest                 |
 * | --------------------------- | ------------------------ |
 * | batch-1                     | `--batch 1`              |
 * | batch-32                    | `--batch 32` (no kicks when polling, so as batch 1) |
 * | ping-pong                   | `--batch 1 --outstanding 1` |
 *
 * Neither side is pinned to a CPU (ringtest's `--host-affinity` and
 * `--guest-affinity` are not given).
 *
 * @module
 */
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
} from "node:fs";
import { renameSync, rmSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { ensurePackages, run } from "../test/interop/guest/install.ts";
import { withLock } from "../test/interop/guest/lock.ts";

/** The Debian package whose tarball holds the sources. */
export const RINGTEST_PACKAGE = "linux-source-6.1";
const TARBALL = `/usr/src/${RINGTEST_PACKAGE}.tar.xz`;
const SUBDIR = "tools/virtio/ringtest";
/** The binary every comparison uses, and the RING_POLL variant built beside it when present. */
const MAIN_BINARY = "virtio_ring_0_9";
const POLL_BINARY = "virtio_ring_poll";
/** Everything the build needs (only the missing ones are installed). */
const BUILD_PACKAGES = [RINGTEST_PACKAGE, "make", "gcc", "libc6-dev", "linux-libc-dev", "xz-utils"];
/** The ring size of every run, as ours. */
export const RINGTEST_RING_SIZE = 256;

const EXTRACT_TIMEOUT_MS = 10 * 60_000;
const MAKE_TIMEOUT_MS = 5 * 60_000;
/** Another process's build, apt-get install included. */
const LOCK_WAIT_MS = 40 * 60_000;
/** One ringtest run (a fixed number of cycles). */
const RUN_TIMEOUT_MS = 5 * 60_000;

/** Where the built binaries are kept between runs. */
export function ringtestCacheDir(): string {
  const base = process.env.XDG_CACHE_HOME || join(homedir(), ".cache");
  return join(base, "virtio-ts", `ringtest-${RINGTEST_PACKAGE}`);
}

/** The cached `virtio_ring_0_9`, when a previous build completed. */
function cachedBinary(dir: string): string | undefined {
  const bin = join(dir, MAIN_BINARY);
  return existsSync(join(dir, "complete")) && existsSync(bin) ? bin : undefined;
}

/** What the binary next to `bin` was built from, e.g. "linux-source-6.1 6.1.192-3". */
export function ringtestSource(bin: string): string | undefined {
  try {
    return readFileSync(join(dirname(bin), "source"), "utf8").trim() || undefined;
  } catch {
    return undefined;
  }
}

/** Extract `tools/virtio/ringtest/` from the tarball into `work`; returns that directory. */
async function extract(work: string): Promise<string> {
  await run("tar", ["-xJf", TARBALL, "-C", work, "--wildcards", `*/${SUBDIR}/*`], {
    timeoutMs: EXTRACT_TIMEOUT_MS,
  });
  const tops = readdirSync(work);
  const src = tops.length === 1 ? join(work, tops[0]!, SUBDIR) : undefined;
  if (!src || !existsSync(join(src, "Makefile")))
    throw new Error(`${TARBALL} holds no ${SUBDIR}/Makefile under one top directory`);
  return src;
}

/** Build into a scratch directory under `dir`, then move the binaries into `dir`. */
async function build(dir: string): Promise<string> {
  if (!["x64", "ia32", "s390x"].includes(process.arch))
    throw new Error(`ringtest models VM exits only on x86 and s390x, not ${process.arch}`);
  await ensurePackages(BUILD_PACKAGES);
  if (!existsSync(TARBALL))
    throw new Error(`${TARBALL} is missing (${RINGTEST_PACKAGE} installed)`);
  const work = mkdtempSync(join(dir, "build-"));
  try {
    const src = await extract(work);
    const targets = [
      MAIN_BINARY,
      ...(existsSync(join(src, `${POLL_BINARY}.c`)) ? [POLL_BINARY] : []),
    ];
    await run("make", ["-C", src, ...targets], { timeoutMs: MAKE_TIMEOUT_MS });
    for (const t of targets) {
      copyFileSync(join(src, t), join(work, `${t}.new`));
      renameSync(join(work, `${t}.new`), join(dir, t));
    }
    const version = await run("dpkg-query", ["-W", "-f=${Version}", RINGTEST_PACKAGE], {
      timeoutMs: 60_000,
    });
    writeFileSync(join(dir, "source"), `${RINGTEST_PACKAGE} ${version.trim()}\n`);
    writeFileSync(join(dir, "complete"), `${targets.join(" ")}\n`);
    return join(dir, MAIN_BINARY);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * The path of ringtest's `virtio_ring_0_9`, built (and `linux-source-6.1`
 * installed) on first use and cached; undefined, with one line logged, when
 * it cannot be had.
 */
export async function ensureRingtest(
  log: (line: string) => void = (l) => console.error(l),
): Promise<string | undefined> {
  const dir = ringtestCacheDir();
  try {
    const hit = cachedBinary(dir);
    if (hit) return hit;
    mkdirSync(dir, { recursive: true });
    log(`building Linux's C ringtest from ${RINGTEST_PACKAGE} into ${dir} (once)`);
    return await withLock(join(dir, "build.lock"), LOCK_WAIT_MS, async () => {
      return cachedBinary(dir) ?? (await build(dir));
    });
  } catch (e) {
    const why = (e instanceof Error ? e.message : String(e)).split("\n")[0]!.slice(0, 300);
    log(`C ringtest unavailable, the ring benchmark runs without it: ${why}`);
    return undefined;
  }
}

/** One ringtest run. */
export interface RingtestRun {
  /** `--sleep`: sleep on eventfds and notify; else both sides busy-poll. */
  readonly sleep: boolean;
  /** `--batch`: adds per kick (sleep mode only). */
  readonly batch: number;
  /** `--outstanding`: buffers in flight at most (default: the ring's worth). */
  readonly outstanding?: number;
  /** `--run-cycles`: round trips in the run. */
  readonly runCycles: number;
}

/** Our ring modes and jobs (./ring-bench.ts). */
export type RingtestMode = "sleep" | "poll";
export type RingtestJob = "batch-1" | "batch-32" | "ping-pong";

/** The ringtest run compared with our `job` in `mode` (see the table above). */
export function ringtestRunFor(
  mode: RingtestMode,
  job: RingtestJob,
  runCycles: number,
): RingtestRun {
  return {
    sleep: mode === "sleep",
    batch: job === "batch-32" ? 32 : 1,
    ...(job === "ping-pong" ? { outstanding: 1 } : {}),
    runCycles,
  };
}

const positiveInt = (name: string, v: number): string => {
  if (!(Number.isInteger(v) && v > 0 && v < 2 ** 31 - 1))
    throw new RangeError(`ringtest ${name} must be a positive 32-bit integer, got ${v}`);
  return String(v);
};

/** The command line options of a run. */
export function ringtestArgs(o: RingtestRun): string[] {
  return [
    "--ring-size",
    String(RINGTEST_RING_SIZE),
    "--run-cycles",
    positiveInt("run-cycles", o.runCycles),
    "--batch",
    positiveInt("batch", o.batch),
    ...(o.outstanding === undefined
      ? []
      : ["--outstanding", positiveInt("outstanding", o.outstanding)]),
    ...(o.sleep ? ["--sleep"] : []),
  ];
}

/**
 * Run ringtest once; the wall time of the process (it runs a fixed number
 * of cycles, so the run should last well over the few milliseconds a
 * process start takes). Rejects when it fails or outlives its timeout.
 */
export async function runRingtest(
  bin: string,
  o: RingtestRun,
): Promise<{ seconds: number; roundTripsPerSec: number }> {
  const args = ringtestArgs(o);
  const t0 = process.hrtime.bigint();
  await run(bin, args, { timeoutMs: RUN_TIMEOUT_MS });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return { seconds, roundTripsPerSec: o.runCycles / seconds };
}

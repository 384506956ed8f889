/**
 * Self-installation for the real-guest tests on a Debian (bookworm) host.
 *
 * - Host tools: `qemu-system-x86`, `qemu-system-common` (qemu-storage-daemon),
 *   `busybox-static`, `e2fsprogs`, `fio` — `apt-get install` only when one is
 *   missing, after a single `apt-get update`.
 * - Guest kernel: the package `linux-image-amd64` depends on, fetched with
 *   `apt-get download` and unpacked with `dpkg-deb -x` into the cache
 *   (`.cache/guest/kernel/<package>/`). Once unpacked it is reused without
 *   asking apt anything, so a second run downloads nothing.
 *
 * Everything happens under one lock file, so parallel test files wait for
 * each other instead of running apt twice.
 *
 * @module
 */
import { execFile } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join, resolve } from "node:path";
import { gunzipSync } from "node:zlib";
import { fileURLToPath } from "node:url";
import { withLock } from "./lock.ts";

/** The repository root (this file is test/interop/guest/install.ts). */
export const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));

/** Host packages the real-guest tests need. */
export const HOST_PACKAGES = [
  "qemu-system-x86",
  "qemu-system-common",
  "busybox-static",
  "e2fsprogs",
  "fio",
  "xz-utils", // unpacks the kernel image for a direct (PVH) boot
] as const;

/** Where downloaded and built guest artefacts live (git-ignored). */
export function guestCacheDir(): string {
  return process.env.VIRTIO_TS_GUEST_CACHE ?? join(REPO_ROOT, ".cache", "guest");
}

/** A guest kernel unpacked in the cache. */
export interface GuestKernel {
  /** Kernel release, e.g. `6.1.0-41-amd64`. */
  readonly release: string;
  /** Path of the bzImage. */
  readonly vmlinuz: string;
  /**
   * What QEMU's `-kernel` should load: the uncompressed ELF `vmlinux` when
   * the kernel supports the PVH entry (QEMU then jumps straight into it,
   * saving the ~3 s the bzImage spends decompressing itself under TCG),
   * else the bzImage.
   */
  readonly bootImage: string;
  /** `lib/modules/<release>` of the unpacked package (no modules.dep: see modules.ts). */
  readonly modulesDir: string;
}

/** What {@link ensureGuestPrereqs} found or installed. */
export interface GuestPrereqs {
  readonly kernel: GuestKernel;
  /** Packages this call installed (empty when all were present). */
  readonly installed: readonly string[];
  /** Whether the kernel had to be downloaded by this call. */
  readonly kernelDownloaded: boolean;
}

const INSTALL_TIMEOUT_MS = 20 * 60_000;
const LOCK_WAIT_MS = 25 * 60_000;
const APT_ENV = { ...process.env, DEBIAN_FRONTEND: "noninteractive", LC_ALL: "C" };
/** Wait for another apt/dpkg run on the machine instead of failing at once. */
const APT_LOCK_WAIT = ["-o", "DPkg::Lock::Timeout=600"];

/** Run a command; resolve with stdout, reject with the tail of its output. */
export function run(
  cmd: string,
  args: readonly string[],
  opts: { cwd?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      {
        cwd: opts.cwd,
        env: opts.env ?? process.env,
        timeout: opts.timeoutMs ?? INSTALL_TIMEOUT_MS,
        killSignal: "SIGKILL",
        maxBuffer: 256 * 1024 * 1024,
        encoding: "utf8",
      },
      (err, stdout, stderr) => {
        if (err) {
          const tail = `${stdout}\n${stderr}`.trim().split("\n").slice(-30).join("\n");
          reject(new Error(`${cmd} ${args.join(" ")} failed: ${err.message}\n${tail}`));
        } else {
          resolve(stdout);
        }
      },
    );
  });
}

/** Packages among `names` that dpkg does not list as installed. */
export async function missingPackages(names: readonly string[]): Promise<string[]> {
  let out: string;
  try {
    out = await run("dpkg-query", ["-W", "-f=${Package} ${db:Status-Abbrev}\n", ...names]);
  } catch (e) {
    // dpkg-query exits 1 when some name is unknown but still prints the others.
    out = (e as Error).message;
  }
  const ok = new Set<string>();
  for (const line of out.split("\n")) {
    const m = /^(\S+) ii/.exec(line.trim());
    if (m?.[1]) ok.add(m[1]);
  }
  return names.filter((n) => !ok.has(n));
}

let aptUpdated = false;

/** `apt-get update`, at most once per process. */
async function aptUpdateOnce(): Promise<void> {
  if (aptUpdated) return;
  requireRoot("run apt-get update");
  await run("apt-get", ["update", "-q", ...APT_LOCK_WAIT], { env: APT_ENV });
  aptUpdated = true;
}

function requireRoot(what: string): void {
  if (process.getuid?.() !== 0) {
    throw new Error(`must run as root to ${what}`);
  }
}

/**
 * Install those of `names` that are missing (one `apt-get update` per
 * process first); returns what was installed. Also used by the benchmarks
 * (bench/ringtest-c.ts).
 */
export async function ensurePackages(names: readonly string[]): Promise<string[]> {
  const missing = await missingPackages(names);
  if (missing.length === 0) return [];
  requireRoot(`install ${missing.join(" ")}`);
  await aptUpdateOnce();
  await run(
    "apt-get",
    [
      "install",
      "-y",
      "-q",
      "--no-install-recommends",
      "-o",
      "Dpkg::Use-Pty=0",
      ...APT_LOCK_WAIT,
      ...missing,
    ],
    { env: APT_ENV },
  );
  const still = await missingPackages(missing);
  if (still.length > 0) throw new Error(`apt-get install did not install ${still.join(" ")}`);
  return missing;
}

/** Read an unpacked kernel's release and paths from its cache directory. */
function kernelAt(dir: string): GuestKernel | undefined {
  const marker = join(dir, "complete");
  if (!existsSync(marker)) return undefined;
  const release = readFileSync(marker, "utf8").trim();
  const vmlinuz = join(dir, "root", "boot", `vmlinuz-${release}`);
  const modulesDir = join(dir, "root", "lib", "modules", release);
  if (!existsSync(vmlinuz) || !existsSync(join(modulesDir, "kernel"))) return undefined;
  const vmlinux = join(dir, "vmlinux");
  return { release, vmlinuz, modulesDir, bootImage: existsSync(vmlinux) ? vmlinux : vmlinuz };
}

/**
 * Unpack the ELF vmlinux from a bzImage whose kernel has CONFIG_PVH=y.
 * The x86 boot protocol (Documentation/x86/boot.rst, version >= 2.08) gives
 * `payload_offset` (0x248) and `payload_length` (0x24c), relative to the
 * protected-mode code at `(setup_sects + 1) * 512`. Only gzip and xz
 * payloads are handled; anything else keeps the bzImage.
 */
async function extractVmlinux(dir: string, release: string): Promise<void> {
  const config = join(dir, "root", "boot", `config-${release}`);
  if (!existsSync(config) || !/^CONFIG_PVH=y$/m.test(readFileSync(config, "utf8"))) return;
  const bz = readFileSync(join(dir, "root", "boot", `vmlinuz-${release}`));
  if (bz.length < 0x250 || bz.readUInt32LE(0x202) !== 0x53726448 || bz.readUInt16LE(0x206) < 0x208)
    return;
  const start = ((bz[0x1f1] || 4) + 1) * 512 + bz.readUInt32LE(0x248);
  const payload = bz.subarray(start, start + bz.readUInt32LE(0x24c));
  let elf: Buffer;
  if (payload[0] === 0x1f && payload[1] === 0x8b) {
    elf = gunzipSync(payload);
  } else if (payload.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) {
    const tmp = join(dir, "payload.xz");
    writeFileSync(tmp, payload);
    await run("xz", ["--decompress", "--single-stream", "--keep", "--force", tmp]);
    elf = readFileSync(join(dir, "payload"));
    rmSync(join(dir, "payload"));
    rmSync(tmp);
  } else {
    return;
  }
  if (elf.readUInt32BE(0) !== 0x7f454c46) return;
  writeFileSync(join(dir, "vmlinux.tmp"), elf);
  renameSync(join(dir, "vmlinux.tmp"), join(dir, "vmlinux"));
}

/** The newest complete kernel in the cache, if any. */
function cachedKernel(kernelRoot: string): GuestKernel | undefined {
  if (!existsSync(kernelRoot)) return undefined;
  const names = readdirSync(kernelRoot).sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
  for (const name of names.reverse()) {
    const k = kernelAt(join(kernelRoot, name));
    if (k) return k;
  }
  return undefined;
}

/** The concrete image package `linux-image-amd64` currently depends on. */
async function resolveKernelPackage(): Promise<string> {
  const out = await run("apt-cache", ["depends", "linux-image-amd64"], { env: APT_ENV });
  const m = /Depends:\s*(linux-image-[0-9][^\s]*-amd64)\s*$/m.exec(out);
  if (!m?.[1]) throw new Error(`cannot find the kernel package behind linux-image-amd64:\n${out}`);
  return m[1];
}

/** Download and unpack the current Debian amd64 kernel into the cache. */
async function downloadKernel(kernelRoot: string): Promise<GuestKernel> {
  await aptUpdateOnce();
  const pkg = await resolveKernelPackage();
  const dir = join(kernelRoot, pkg);
  rmSync(dir, { recursive: true, force: true });
  const dl = join(dir, "deb");
  mkdirSync(dl, { recursive: true });
  await run("apt-get", ["download", "-q", pkg], { cwd: dl, env: APT_ENV });
  const deb = readdirSync(dl).find((n) => n.endsWith(".deb"));
  if (!deb) throw new Error(`apt-get download ${pkg} produced no .deb in ${dl}`);
  await run("dpkg-deb", ["-x", join(dl, deb), join(dir, "root.tmp")]);
  renameSync(join(dir, "root.tmp"), join(dir, "root"));
  const modules = readdirSync(join(dir, "root", "lib", "modules"));
  const release = modules[0];
  if (modules.length !== 1 || !release) {
    throw new Error(`expected one lib/modules/<release> in ${pkg}, found ${modules.join(", ")}`);
  }
  rmSync(dl, { recursive: true, force: true });
  await extractVmlinux(dir, release);
  writeFileSync(join(dir, "complete"), `${release}\n`);
  const k = kernelAt(dir);
  if (!k)
    throw new Error(
      `unpacked ${pkg} but found no vmlinuz-${release} or lib/modules/${release}/kernel`,
    );
  return k;
}

let prereqs: Promise<GuestPrereqs> | undefined;

/**
 * Make sure the host tools are installed and a guest kernel is cached.
 * Memoised per process; serialised across processes by a lock file.
 */
export function ensureGuestPrereqs(): Promise<GuestPrereqs> {
  prereqs ??= withLock(join(guestCacheDir(), "install.lock"), LOCK_WAIT_MS, async () => {
    const installed = await ensurePackages(HOST_PACKAGES);
    const kernelRoot = join(guestCacheDir(), "kernel");
    let cached = cachedKernel(kernelRoot);
    if (cached && cached.bootImage === cached.vmlinuz) {
      // Unpacked by an older harness, or not PVH-capable: try once more to get vmlinux.
      // modulesDir is <dir>/root/lib/modules/<release>
      await extractVmlinux(resolve(cached.modulesDir, "../../../.."), cached.release);
      cached = cachedKernel(kernelRoot) ?? cached;
    }
    if (cached) return { kernel: cached, installed, kernelDownloaded: false };
    return { kernel: await downloadKernel(kernelRoot), installed, kernelDownloaded: true };
  });
  return prereqs;
}

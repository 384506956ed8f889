/**
 * The guest's initramfs: gzip-compressed cpio archives concatenated
 * (the kernel unpacks every archive in the initrd in turn,
 * Documentation/driver-api/early-userspace/buffer-format.rst):
 *
 * - the *base* (cached in `.cache/guest/initramfs/`, keyed by a hash of its
 *   inputs): busybox-static with its applet links, the kernel modules in
 *   load order, mke2fs/e2fsck from the host with every shared library `ldd`
 *   names and the dynamic loader, `/etc/mke2fs.conf`, and `/init`
 *   (`scripts/guest/init.sh`);
 * - optionally *fio* (cached the same way): fio and the libraries the base
 *   lacks — large, so only runs that use fio carry it;
 * - the *run* part, built for each guest run: `/vts/run.conf`, the steps and
 *   their list, and data files under `/vts/files/`.
 *
 * @module
 */
import { createHash } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { dirname, join, posix } from "node:path";
import { promisify } from "node:util";
import { gzip as gzipCb, gzipSync } from "node:zlib";
import { CpioWriter } from "./cpio.ts";
import { guestCacheDir, REPO_ROOT, run, type GuestKernel } from "./install.ts";
import { withLock } from "./lock.ts";
import { resolveModules } from "./modules.ts";

const gzip = promisify(gzipCb);

/** Bump when the base layout changes in a way the input hash does not see. */
const ARCHIVE_FORMAT = 1;

/** Modules the guest loads, by name; dependencies are added automatically. */
export const GUEST_MODULES = ["crc32c_generic", "virtio_pci", "virtio_blk", "ext4"] as const;

/** A host program copied into the guest, with links to it in its directory. */
interface Tool {
  readonly name: string;
  readonly guest: string;
  readonly links: readonly string[];
}

/** In the base archive: e2fsprogs (small, used by most scenarios). */
const BASE_TOOLS: readonly Tool[] = [
  { name: "mke2fs", guest: "/usr/sbin/mke2fs", links: ["mkfs.ext4", "mkfs.ext2"] },
  { name: "e2fsck", guest: "/usr/sbin/e2fsck", links: ["fsck.ext4"] },
];

/**
 * In the fio archive, added only to runs that ask for it: Debian's fio links
 * every optional engine's library (ceph, gluster, rdma, ...), about 85 MB.
 */
const FIO_TOOLS: readonly Tool[] = [{ name: "fio", guest: "/usr/bin/fio", links: [] }];

/** The guest's `/init`. */
export const INIT_SCRIPT = join(REPO_ROOT, "scripts", "guest", "init.sh");

/** One step of a guest script. */
export interface GuestStep {
  /** Marker name: letters, digits, `.`, `_`, `-`; unique within its boot. */
  readonly name: string;
  /**
   * Shell (busybox ash) run with `set -e -o pipefail` in the guest. It sees
   * `$VTS_DISK` (the disk under test, e.g. `/dev/vda`), `$VTS_EXTRA`,
   * `$VTS_BOOT` (1-based) and the run's files under `/vts/files/`.
   */
  readonly sh: string;
  /** The boot (1-based) this step runs in; default 1. */
  readonly boot?: number;
}

/** The per-run part of the initramfs. */
export interface RunSpec {
  readonly steps: readonly GuestStep[];
  /** Boots in this QEMU run (the guest reboots in between); default 1. */
  readonly boots?: number;
  /** Virtio disks the guest waits for before running steps. */
  readonly disks: number;
  /** Files placed at `/vts/files/<name>`. */
  readonly files?: Readonly<Record<string, Uint8Array | string>>;
}

/** Find an executable in PATH (plus the sbin directories). */
function which(name: string): string {
  const dirs = [...(process.env.PATH ?? "").split(":"), "/usr/sbin", "/sbin", "/usr/bin", "/bin"];
  for (const d of dirs) {
    const p = join(d, name);
    if (d && existsSync(p)) return p;
  }
  throw new Error(`${name} not found on the host (is its package installed?)`);
}

/** Shared libraries and the loader a binary needs, as `ldd` names them. */
async function sharedLibraries(binary: string): Promise<string[]> {
  const out = await run("ldd", [binary]);
  const libs: string[] = [];
  for (const line of out.split("\n")) {
    if (/not found/.test(line)) throw new Error(`ldd ${binary}: ${line.trim()}`);
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(0x/.exec(line);
    if (m?.[1]) libs.push(m[1]);
  }
  return libs;
}

/** Host files of some tools: the programs and every library ldd names. */
interface ToolFiles {
  readonly tools: readonly (Tool & { readonly host: string })[];
  readonly libs: readonly string[];
}

async function toolFiles(tools: readonly Tool[], exclude: ReadonlySet<string>): Promise<ToolFiles> {
  const libs = new Set<string>();
  for (const t of tools) for (const l of await sharedLibraries(which(t.name))) libs.add(l);
  return {
    tools: tools.map((t) => ({ ...t, host: which(t.name) })),
    libs: [...libs].filter((l) => !exclude.has(l)).sort(),
  };
}

/** Add tools, their links and libraries to an archive. */
function addTools(w: CpioWriter, f: ToolFiles): void {
  for (const t of f.tools) {
    w.file(t.guest, readFileSync(t.host), 0o755);
    for (const l of t.links)
      w.symlink(posix.join(posix.dirname(t.guest), l), posix.basename(t.guest));
  }
  for (const lib of f.libs) w.file(lib, readFileSync(realpathSync(lib)), 0o755);
}

/** An archive to build once and cache, identified by a hash of its inputs. */
interface Layer {
  readonly name: string;
  /** Host files whose path, size and mtime go into the hash. */
  readonly files: readonly string[];
  /** Anything else the content depends on. */
  readonly extra: string;
  build(): Buffer;
}

/** Busybox, modules, e2fsprogs and /init. */
async function baseLayer(
  kernel: GuestKernel,
): Promise<Layer & { readonly libs: readonly string[] }> {
  const busybox = which("busybox");
  const toolNames = new Set([...BASE_TOOLS, ...FIO_TOOLS].flatMap((t) => [t.name, ...t.links]));
  const applets = (await run(busybox, ["--list-full"]))
    .split("\n")
    .map((a) => a.trim())
    .filter((a) => a && !toolNames.has(posix.basename(a)) && a !== "linuxrc" && a !== "sbin/init");
  const modules = resolveModules(kernel.modulesDir, GUEST_MODULES);
  const tools = await toolFiles(BASE_TOOLS, new Set());
  const init = readFileSync(INIT_SCRIPT);
  return {
    name: `base-${kernel.release}`,
    libs: tools.libs,
    files: [
      busybox,
      ...modules.map((m) => m.path),
      ...tools.tools.map((t) => t.host),
      ...tools.libs,
    ],
    extra: `${kernel.release}\n${applets.join(" ")}\n${init.toString("latin1")}`,
    build(): Buffer {
      const w = new CpioWriter();
      for (const d of ["proc", "sys", "dev", "tmp", "mnt", "root", "run", "etc", "vts"]) w.dir(d);
      w.charDevice("dev/console", 5, 1);
      w.charDevice("dev/null", 1, 3, 0o666);
      w.file("init", init, 0o755);
      w.file("bin/busybox", readFileSync(busybox), 0o755);
      for (const a of applets) if (!w.has(a)) w.symlink(a, "/bin/busybox");
      for (const m of modules) w.file(`lib/modules/vts/${m.name}.ko`, readFileSync(m.path));
      w.file("vts/modules", modules.map((m) => `${m.name}\n`).join(""));
      addTools(w, tools);
      w.file("vts/libpath", [...new Set(tools.libs.map((l) => posix.dirname(l)))].join(":"));
      if (existsSync("/etc/mke2fs.conf"))
        w.file("etc/mke2fs.conf", readFileSync("/etc/mke2fs.conf"));
      return w.finish();
    },
  };
}

/** fio and the libraries the base does not already have. */
async function fioLayer(baseLibs: readonly string[]): Promise<Layer> {
  const tools = await toolFiles(FIO_TOOLS, new Set(baseLibs));
  const libpath = [...new Set([...baseLibs, ...tools.libs].map((l) => posix.dirname(l)))].join(":");
  return {
    name: "fio",
    files: [...tools.tools.map((t) => t.host), ...tools.libs],
    extra: libpath,
    build(): Buffer {
      const w = new CpioWriter();
      addTools(w, tools);
      w.file("vts/libpath", libpath); // replaces the base's list
      return w.finish();
    },
  };
}

/** The cached, gzip-compressed archive of a layer; built when missing. */
async function cachedLayer(layer: Layer): Promise<{ path: string; built: boolean }> {
  const h = createHash("sha256");
  h.update(`format ${ARCHIVE_FORMAT}\n${layer.extra}\n`);
  for (const f of layer.files) {
    const s = statSync(f);
    h.update(`${f} ${s.size} ${s.mtimeMs}\n`);
  }
  const dir = join(guestCacheDir(), "initramfs");
  const path = join(dir, `${layer.name}-${h.digest("hex").slice(0, 16)}.cpio.gz`);
  if (existsSync(path)) return { path, built: false };
  mkdirSync(dir, { recursive: true });
  const gz = await gzip(layer.build(), { level: 6 });
  // Parallel processes may build the same layer: write aside, rename into place.
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, gz);
  renameSync(tmp, path);
  return { path, built: true };
}

/** The cached archives a run's initrd starts with. */
export interface InitramfsParts {
  /** Archive paths, in initrd order. */
  readonly paths: readonly string[];
  /** Modules /init loads, in order. */
  readonly modules: readonly string[];
  /** Names of the layers this call had to build. */
  readonly built: readonly string[];
}

/**
 * The cached archives for `kernel`: the base, plus fio when `fio` is set.
 * Each is rebuilt only when one of its inputs changed.
 */
export async function ensureInitramfs(
  kernel: GuestKernel,
  opts: { fio?: boolean } = {},
): Promise<InitramfsParts> {
  const base = await baseLayer(kernel);
  const layers: Layer[] = [base];
  if (opts.fio) layers.push(await fioLayer(base.libs));
  const paths: string[] = [];
  const built: string[] = [];
  // One builder at a time, so parallel test files do not build the same layer twice.
  await withLock(join(guestCacheDir(), "initramfs.lock"), 10 * 60_000, async () => {
    for (const l of layers) {
      const c = await cachedLayer(l);
      paths.push(c.path);
      if (c.built) built.push(l.name);
    }
  });
  return {
    paths,
    modules: resolveModules(kernel.modulesDir, GUEST_MODULES).map((m) => m.name),
    built,
  };
}

const STEP_NAME = /^[A-Za-z0-9._-]{1,64}$/;

/** Validate steps: names, boots in range, unique per boot. */
function checkSteps(steps: readonly GuestStep[], boots: number): void {
  const seen = new Set<string>();
  for (const s of steps) {
    const boot = s.boot ?? 1;
    if (!STEP_NAME.test(s.name))
      throw new RangeError(`invalid step name ${JSON.stringify(s.name)}`);
    if (!Number.isInteger(boot) || boot < 1 || boot > boots) {
      throw new RangeError(`step ${s.name}: boot ${boot} outside 1..${boots}`);
    }
    const key = `${boot} ${s.name}`;
    if (seen.has(key)) throw new RangeError(`duplicate step ${s.name} in boot ${boot}`);
    seen.add(key);
  }
}

/** The per-run archive, gzip-compressed. */
export function runArchive(spec: RunSpec): Buffer {
  const boots = spec.boots ?? 1;
  if (!Number.isInteger(boots) || boots < 1)
    throw new RangeError(`boots must be >= 1, got ${boots}`);
  checkSteps(spec.steps, boots);
  const w = new CpioWriter();
  w.file("vts/run.conf", `VTS_BOOTS=${boots}\nVTS_DISKS=${spec.disks}\n`);
  const list: string[] = [];
  spec.steps.forEach((s, i) => {
    const file = `${String(i).padStart(3, "0")}.sh`;
    w.file(`vts/steps/${file}`, `set -e -o pipefail\n${s.sh}\n`, 0o755);
    list.push(`${s.boot ?? 1} ${s.name} ${file}\n`);
  });
  w.file("vts/steps.list", list.join(""));
  w.dir("vts/files");
  for (const [name, data] of Object.entries(spec.files ?? {})) w.file(`vts/files/${name}`, data);
  return gzipSync(w.finish(), { level: 1 });
}

/**
 * Write the initrd for one run: the cached archives, each followed by zero
 * padding to a 4-byte boundary (the kernel skips zeros between archives),
 * then the run archive from {@link runArchive}.
 */
export function writeInitrd(parts: readonly string[], runPart: Buffer, out: string): void {
  const chunks: Buffer[] = [];
  for (const p of parts) {
    const b = readFileSync(p);
    chunks.push(b, Buffer.alloc((4 - (b.length % 4)) % 4));
  }
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, Buffer.concat([...chunks, runPart]));
}

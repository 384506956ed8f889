/**
 * Kernel module dependency resolution without kmod.
 *
 * Debian's kernel package ships no `modules.dep` (its postinst runs depmod),
 * and a minimal host may have no kmod at all, so the dependencies are read
 * straight from each module's ELF `.modinfo` section (`depends=a,b` and
 * `softdep=pre: x`), and the load order is a depth-first post-order:
 * dependencies before dependents, as modprobe would insmod them.
 *
 * @module
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { basename, join } from "node:path";

/** A module to insmod, in load order. */
export interface ModuleFile {
  /** Module name with `-` normalised to `_`. */
  readonly name: string;
  /** Absolute path of the `.ko`. */
  readonly path: string;
}

const normal = (n: string): string => n.replaceAll("-", "_");

/** The `.modinfo` key/value strings of an ELF64 little-endian module. */
export function readModinfo(ko: Buffer): Map<string, string[]> {
  if (ko.length < 64 || ko.readUInt32BE(0) !== 0x7f454c46 || ko[4] !== 2 || ko[5] !== 1) {
    throw new RangeError("not an ELF64 little-endian file");
  }
  const shoff = Number(ko.readBigUInt64LE(0x28));
  const shentsize = ko.readUInt16LE(0x3a);
  const shnum = ko.readUInt16LE(0x3c);
  const shstrndx = ko.readUInt16LE(0x3e);
  const section = (i: number): { name: number; offset: number; size: number } => {
    const at = shoff + i * shentsize;
    return {
      name: ko.readUInt32LE(at),
      offset: Number(ko.readBigUInt64LE(at + 24)),
      size: Number(ko.readBigUInt64LE(at + 32)),
    };
  };
  const strtab = section(shstrndx);
  const info = new Map<string, string[]>();
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    const nameAt = strtab.offset + s.name;
    if (ko.toString("latin1", nameAt, nameAt + 9) !== ".modinfo\0") continue;
    for (const kv of ko.toString("latin1", s.offset, s.offset + s.size).split("\0")) {
      const eq = kv.indexOf("=");
      if (eq <= 0) continue;
      const key = kv.slice(0, eq);
      info.set(key, [...(info.get(key) ?? []), kv.slice(eq + 1)]);
    }
    return info;
  }
  throw new RangeError("no .modinfo section");
}

/** Map every module under `<modulesDir>/kernel` by normalised name. */
function indexModules(modulesDir: string): Map<string, string> {
  const index = new Map<string, string>();
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.ko(\.(xz|zst|gz))?$/.test(e.name))
        index.set(normal(e.name.replace(/\.ko.*$/, "")), p);
    }
  };
  walk(join(modulesDir, "kernel"));
  return index;
}

/** Names of modules built into the kernel image. */
function builtins(modulesDir: string): Set<string> {
  const file = join(modulesDir, "modules.builtin");
  if (!existsSync(file)) return new Set();
  return new Set(
    readFileSync(file, "utf8")
      .split("\n")
      .filter(Boolean)
      .map((l) => normal(basename(l).replace(/\.ko.*$/, ""))),
  );
}

/** Dependencies named by `depends=` and by `softdep=pre:` (when they are module names). */
function dependenciesOf(info: Map<string, string[]>): { name: string; required: boolean }[] {
  const hard = (info.get("depends") ?? []).flatMap((d) => d.split(",")).filter(Boolean);
  const soft: string[] = [];
  for (const s of info.get("softdep") ?? []) {
    const pre = /pre:\s*([^:]*?)(?:\s+post:|$)/.exec(s)?.[1];
    if (pre) soft.push(...pre.split(/\s+/).filter(Boolean));
  }
  return [
    ...soft.map((n) => ({ name: normal(n), required: false })),
    ...hard.map((n) => ({ name: normal(n), required: true })),
  ];
}

/**
 * The modules to insmod, dependencies first, so that every name in `wanted`
 * is available. Names that are built in are skipped; a wanted name that is
 * neither built in nor present throws. Soft dependencies that name an alias
 * rather than a module (e.g. `crc32c`) are ignored — ask for a concrete
 * module such as `crc32c_generic` instead.
 */
export function resolveModules(modulesDir: string, wanted: readonly string[]): ModuleFile[] {
  const index = indexModules(modulesDir);
  const builtin = builtins(modulesDir);
  const order: ModuleFile[] = [];
  const state = new Map<string, "visiting" | "done">();
  const visit = (name: string, required: boolean): void => {
    if (state.get(name) === "done" || builtin.has(name)) return;
    if (state.get(name) === "visiting") throw new Error(`module dependency cycle at ${name}`);
    const path = index.get(name);
    if (!path) {
      if (required) throw new Error(`kernel module ${name} not found under ${modulesDir}`);
      return;
    }
    if (!path.endsWith(".ko")) {
      throw new Error(`compressed module ${path} is not supported (needs a .ko kernel package)`);
    }
    state.set(name, "visiting");
    for (const dep of dependenciesOf(readModinfo(readFileSync(path))))
      visit(dep.name, dep.required);
    state.set(name, "done");
    order.push({ name, path });
  };
  for (const w of wanted) visit(normal(w), true);
  return order;
}

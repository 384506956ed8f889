/**
 * The validated settings of `virtio-ts vhost-user-blk`: one export from
 * `--socket-path`/`--fd` and `--image`, or one per `--export KEY=VALUE,...`,
 * whose keys are the per-export flags of ./vhost-user-blk-flags.ts checked by
 * the same rules. Every mistake is one {@link UsageError} line naming the
 * export. Not spec-defined (the device limits the flags check are VIRTIO
 * 1.2 §5.2.4).
 *
 * @module
 */
import { resolve } from "node:path";
import { type FlagValue, type ParsedFlags, UsageError, parseFlags } from "../args.ts";
import {
  DEFAULT_AIO,
  DEFAULT_POLL_MAX_US,
  type AioMode,
  EXPORT_FLAGS,
  type ExportSettings,
  type Settings,
} from "./vhost-user-blk-flags.ts";

const WHERE = new Set(["socket-path", "fd", "image", "nbd", "backing"]);
/** The flags naming the disk: exactly one per export. */
const SOURCES = ["image", "nbd", "backing"] as const;
const ID = /^[A-Za-z0-9._-]{1,32}$/;
/** Items of one `--export` value at most (there are fewer keys than this). */
const MAX_ITEMS = 64;

/** One export's settings from parsed flags (`id` names it). */
export function exportSettings(f: ParsedFlags, id: string): ExportSettings {
  if (f.has("socket-path") === f.has("fd"))
    throw new UsageError("give exactly one of --socket-path and --fd");
  const given = SOURCES.filter((k) => f.has(k));
  if (given.length !== 1) throw new UsageError("give exactly one of --image, --nbd and --backing");
  const source = given[0]!;
  if (f.has("format") && source !== "image")
    throw new UsageError("--format applies to --image only");
  if (f.has("backing-option") && source !== "backing")
    throw new UsageError("--backing-option applies to --backing only");
  return {
    id,
    socket: f.get("socket-path") as string | undefined,
    fd: f.get("fd") as number | undefined,
    source,
    image: f.get(source) as string,
    format: (f.get("format") as "auto" | "raw" | undefined) ?? "auto",
    backingOptions: backingOptions(f.get("backing-option") as readonly string[] | undefined),
    numQueues: (f.get("num-queues") as number | undefined) ?? 1,
    queueSize: (f.get("queue-size") as number | undefined) ?? 128,
    readOnly: f.get("read-only") === true,
    serial: f.get("serial") as string | undefined,
    logicalBlockSize: (f.get("logical-block-size") as number | undefined) ?? 512,
    writeback: f.get("writeback") === true,
    direct: f.get("direct") === true,
    aio: (f.get("aio") as AioMode | undefined) ?? DEFAULT_AIO,
    maxInFlight: f.get("max-in-flight") as number | undefined,
    pollMaxUs: (f.get("poll-max-us") as number | undefined) ?? DEFAULT_POLL_MAX_US,
  };
}

/** `--backing-option KEY=VALUE,...` values as one object (a later key wins). */
function backingOptions(values: readonly string[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of (values ?? []).flatMap(splitItems)) {
    const eq = item.indexOf("=");
    if (eq <= 0)
      throw new UsageError(`--backing-option takes KEY=VALUE, got ${JSON.stringify(item)}`);
    out[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return out;
}

/**
 * Settings from parsed flags.
 *
 * @throws {UsageError} for a missing or conflicting flag, or a bad `--export`.
 */
export function settings(f: ParsedFlags): Settings {
  const specs = f.get("export") as readonly string[] | undefined;
  return {
    exports: specs === undefined ? [exportSettings(f, "export1")] : parseExports(specs, f),
    ioThreads: (f.get("io-threads") as number | undefined) ?? 1,
    shutdownTimeoutSeconds: (f.get("shutdown-timeout") as number | undefined) ?? 30,
    allowUnsealedMemory: f.has("allow-unsealed-memory"),
    pidfile: f.get("pidfile") as string | undefined,
  };
}

/** Splits `a=1,b=x,,y` into items at single commas (`,,` is a literal comma). */
export function splitItems(value: string): string[] {
  const items: string[] = [];
  let cur = "";
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!;
    if (c !== ",") {
      cur += c;
    } else if (value[i + 1] === ",") {
      cur += ",";
      i++;
    } else {
      items.push(cur);
      cur = "";
    }
  }
  items.push(cur);
  return items;
}

/** Applies one `key[=value]` item to `into` with the key's flag rules. */
function applyItem(item: string, into: Map<string, FlagValue>): void {
  const eq = item.indexOf("=");
  const key = eq < 0 ? item : item.slice(0, eq);
  const raw = eq < 0 ? undefined : item.slice(eq + 1);
  if (key === "id") {
    if (raw === undefined || !ID.test(raw))
      throw new UsageError(
        `id must be 1..32 of A-Z a-z 0-9 . _ -, got ${JSON.stringify(raw ?? "")}`,
      );
    into.set("id", raw);
    return;
  }
  const spec = EXPORT_FLAGS.find((s) => s.name === key || s.aliases?.includes(key) === true);
  if (spec === undefined) throw new UsageError(`unknown key ${JSON.stringify(key)}`);
  if (spec.kind === "boolean") {
    if (raw === undefined || raw === "on") into.set(spec.name, true);
    else if (raw === "off") into.delete(spec.name);
    else throw new UsageError(`${key} takes =on or =off, got ${JSON.stringify(raw)}`);
    return;
  }
  if (raw === undefined) throw new UsageError(`${key} needs a value (${key}=${spec.metavar})`);
  if (into.has(spec.name) && WHERE.has(spec.name))
    throw new UsageError(`${spec.name}= is given more than once`);
  const parsed = parseFlags([`--${key}=${raw}`], [spec]).flags.get(spec.name)!;
  into.set(spec.name, parsed);
}

/** One `--export` value over the defaults given outside `--export`. */
function parseExport(value: string, n: number, defaults: ParsedFlags): ExportSettings {
  const f = new Map<string, FlagValue>();
  for (const s of EXPORT_FLAGS)
    if (!WHERE.has(s.name) && defaults.has(s.name)) f.set(s.name, defaults.get(s.name)!);
  try {
    const items = splitItems(value);
    if (items.length > MAX_ITEMS) throw new UsageError(`more than ${MAX_ITEMS} keys`);
    for (const item of items) applyItem(item, f);
    return exportSettings(f, (f.get("id") as string | undefined) ?? `export${n}`);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    const why = e.message
      .replace(
        /^give exactly one of --socket-path and --fd$/,
        "give exactly one of socket-path= and fd=",
      )
      .replace(
        /^give exactly one of --image, --nbd and --backing$/,
        "give exactly one of image=, nbd= and backing=",
      )
      .replace(/--(image|socket-path|fd|nbd|backing|format)\b/g, "$1=")
      .replace(/^--/, "");
    throw new UsageError(`--export ${n}: ${why}`, { cause: e });
  }
}

/** Refuses two exports with the same id, socket or fd, or one writable image served twice. */
function checkDistinct(exports: readonly ExportSettings[]): void {
  const seen = new Map<string, number>();
  exports.forEach((x, i) => {
    const keys: [string, string][] = [
      ["id", x.id],
      x.socket === undefined ? ["fd", String(x.fd)] : ["socket", resolve(x.socket)],
      ...(x.readOnly || x.source !== "image"
        ? []
        : [["writable image", resolve(x.image)] as [string, string]]),
    ];
    for (const [what, value] of keys) {
      const other = seen.get(`${what} ${value}`);
      if (other !== undefined)
        throw new UsageError(`--export ${i + 1}: same ${what} as --export ${other} (${value})`);
      seen.set(`${what} ${value}`, i + 1);
    }
  });
}

/** The exports of repeated `--export` values; `f` holds the defaults given outside them. */
function parseExports(values: readonly string[], f: ParsedFlags): ExportSettings[] {
  for (const name of WHERE)
    if (f.has(name))
      throw new UsageError(
        `--${name} cannot be combined with --export (give ${name}= in each --export)`,
      );
  const exports = values.map((v, i) => parseExport(v, i + 1, f));
  checkDistinct(exports);
  return exports;
}

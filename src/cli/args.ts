/**
 * A small command-line flag parser (no dependency): `--name value`,
 * `--name=value`, boolean `--name`, short aliases (`-h`), long aliases
 * (an older name kept beside the current one), and `--` to end the flags. Every mistake is a {@link UsageError} whose message is one line
 * naming the flag and what was wrong, for the CLI to print before exiting
 * with status 2. Not spec-defined.
 *
 * @module
 */

/** A command-line mistake: bad, unknown, missing or repeated flag. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

/** Value kinds a flag can take; a `list` flag is a string that may be given several times. */
export type FlagKind = "boolean" | "string" | "integer" | "list";

/** One flag of a command. */
export interface FlagSpec {
  /** Long name without dashes, e.g. `"num-queues"`. */
  readonly name: string;
  readonly kind: FlagKind;
  /** One-letter alias without the dash, e.g. `"h"`. */
  readonly short?: string;
  /** Other long names of the flag, without dashes; the value is stored under {@link name}. */
  readonly aliases?: readonly string[];
  /** Placeholder for the value in help text, e.g. `"PATH"`. */
  readonly metavar?: string;
  /** Help text (may span several lines). */
  readonly help: string;
  /** The flag must be given. */
  readonly required?: boolean;
  /** Integers: smallest and largest accepted value. */
  readonly min?: number;
  readonly max?: number;
  /**
   * Further check of a parsed value: returns what is wrong ("must be a power
   * of two") or undefined if the value is fine.
   */
  readonly check?: (value: string | number) => string | undefined;
  /** Help section heading this flag is listed under. */
  readonly group?: string;
}

/** A parsed flag's value: `true` for a boolean, every value in order for a `list`. */
export type FlagValue = string | number | true | readonly string[];

/** Parsed flags: name → value. Absent flags are absent. */
export type ParsedFlags = ReadonlyMap<string, FlagValue>;

/** The result of {@link parseFlags}. */
export interface ParsedArgs {
  readonly flags: ParsedFlags;
  /** Arguments that are not flags, in order. */
  readonly positionals: readonly string[];
}

const INTEGER = /^-?(?:0|[1-9][0-9]*)$/;

/** `--name` of a spec, for messages. */
export function flagLabel(spec: Pick<FlagSpec, "name">): string {
  return `--${spec.name}`;
}

function parseValue(spec: FlagSpec, raw: string): string | number {
  if (spec.kind === "string" || spec.kind === "list") {
    if (raw === "") throw new UsageError(`${flagLabel(spec)} needs a non-empty value`);
    return checked(spec, raw);
  }
  if (!INTEGER.test(raw))
    throw new UsageError(`${flagLabel(spec)} must be an integer, got ${JSON.stringify(raw)}`);
  const n = Number(raw);
  const min = spec.min ?? 0;
  const max = spec.max ?? Number.MAX_SAFE_INTEGER;
  if (!Number.isSafeInteger(n) || n < min || n > max)
    throw new UsageError(`${flagLabel(spec)} must be in ${min}..${max}, got ${raw}`);
  return checked(spec, n);
}

function checked(spec: FlagSpec, v: string | number): string | number {
  const why = spec.check?.(v);
  if (why !== undefined)
    throw new UsageError(`${flagLabel(spec)} ${why}, got ${JSON.stringify(String(v))}`);
  return v;
}

/** Whether `next` is the next flag rather than a value (a negative number is a value of an integer flag). */
function looksLikeFlag(spec: FlagSpec, next: string): boolean {
  if (!next.startsWith("-") || next === "-") return false;
  return !(spec.kind === "integer" && /^-[0-9]/.test(next));
}

/**
 * Splits `--name=value` / `--name` / `-x` into a spec and an inline value.
 * For an alias, `spec` carries the name as given (for messages) and `key`
 * the flag's own name (where the value is stored).
 */
function lookup(
  arg: string,
  byLong: ReadonlyMap<string, FlagSpec>,
  byShort: ReadonlyMap<string, FlagSpec>,
): { spec: FlagSpec; key: string; inline: string | undefined } {
  if (arg.startsWith("--")) {
    const eq = arg.indexOf("=");
    const name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
    const found = byLong.get(name);
    if (found === undefined) throw new UsageError(`unknown flag --${name}`);
    const spec = found.name === name ? found : { ...found, name };
    return { spec, key: found.name, inline: eq < 0 ? undefined : arg.slice(eq + 1) };
  }
  const spec = byShort.get(arg.slice(1));
  if (spec === undefined) throw new UsageError(`unknown flag ${arg}`);
  return { spec, key: spec.name, inline: undefined };
}

/**
 * Parses `argv` against `specs`.
 *
 * A value that starts with `-` after a flag counts as a missing value (write
 * `--socket=-odd-name` for such a value), except a negative number after an
 * integer flag (which then fails the range check). Each flag may be given
 * once, except a `list` flag, whose values are collected in order.
 *
 * @throws {UsageError} with a one-line message on the first mistake.
 * @example
 * ```ts
 * const { flags } = parseFlags(["--num-queues", "2"], [{ name: "num-queues", kind: "integer", min: 1, help: "" }]);
 * flags.get("num-queues"); // 2
 * ```
 */
export function parseFlags(argv: readonly string[], specs: readonly FlagSpec[]): ParsedArgs {
  const byLong = new Map(
    specs.flatMap((s) => [s.name, ...(s.aliases ?? [])].map((n) => [n, s] as const)),
  );
  const byShort = new Map(
    specs.filter((s) => s.short !== undefined).map((s) => [s.short as string, s]),
  );
  const flags = new Map<string, FlagValue>();
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--") {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith("-") || arg === "-") {
      positionals.push(arg);
      continue;
    }
    const { spec, key, inline } = lookup(arg, byLong, byShort);
    if (flags.has(key) && spec.kind !== "list")
      throw new UsageError(`--${key} is given more than once`);
    if (spec.kind === "boolean") {
      if (inline !== undefined) throw new UsageError(`${flagLabel(spec)} takes no value`);
      flags.set(key, true);
      continue;
    }
    let raw = inline;
    if (raw === undefined) {
      const next = argv[i + 1];
      if (next === undefined || looksLikeFlag(spec, next))
        throw new UsageError(
          `${flagLabel(spec)} needs a value${spec.metavar ? ` (${spec.metavar})` : ""}`,
        );
      raw = next;
      i++;
    }
    const value = parseValue(spec, raw);
    if (spec.kind === "list")
      flags.set(key, [...((flags.get(key) as string[] | undefined) ?? []), value as string]);
    else flags.set(key, value);
  }
  return { flags, positionals };
}

/** Throws a {@link UsageError} for the first required flag that is absent. */
export function requireFlags(flags: ParsedFlags, specs: readonly FlagSpec[]): void {
  for (const s of specs) {
    if (s.required === true && !flags.has(s.name))
      throw new UsageError(`${flagLabel(s)} is required`);
  }
}

/** Help lines for `specs`, grouped by {@link FlagSpec.group}, descriptions aligned. */
export function formatFlagHelp(specs: readonly FlagSpec[], width = 28): string {
  const groups = new Map<string, FlagSpec[]>();
  for (const s of specs) {
    const g = s.group ?? "Options";
    groups.set(g, [...(groups.get(g) ?? []), s]);
  }
  const out: string[] = [];
  for (const [group, list] of groups) {
    out.push(`${group}:`);
    for (const s of list) {
      const names = `${s.short ? `-${s.short}, ` : ""}--${s.name}${s.metavar ? ` ${s.metavar}` : ""}`;
      const aliases = (s.aliases ?? []).map((a) => `--${a}`).join(", ");
      const lines = [...s.help.split("\n"), ...(aliases === "" ? [] : [`(also ${aliases})`])];
      const head = `  ${names}`;
      out.push(
        head.length + 2 > width
          ? `${head}\n${" ".repeat(width)}${lines[0]}`
          : `${head.padEnd(width)}${lines[0]}`,
      );
      for (const l of lines.slice(1)) out.push(`${" ".repeat(width)}${l}`);
    }
    out.push("");
  }
  return out.join("\n").trimEnd();
}

/**
 * The `virtio-ts` command line: argument parsing, logging setup and exit
 * status only; each command is a small file under `./commands/` that calls
 * the library. Not spec-defined; docs/cli.md documents every flag.
 *
 * Exit status: 0 success (or a clean stop after SIGINT/SIGTERM/SIGHUP), 1
 * runtime error (image, socket, I/O, internal), 2 bad usage. Every error is
 * one line on stderr.
 *
 * @module
 */
import { readFileSync } from "node:fs";
import {
  type FlagSpec,
  type ParsedFlags,
  UsageError,
  formatFlagHelp,
  parseFlags,
  requireFlags,
} from "./args.ts";
import { type Command, CommandError } from "./commands/command.ts";
import { vhostUserBlkCommand } from "./commands/vhost-user-blk-command.ts";
import {
  type CliIo,
  CliLog,
  LOG_FORMATS,
  LOG_LEVELS,
  type LogFormat,
  type LogLevel,
  type LogOptions,
} from "./log.ts";

/** Exit statuses. */
export const ExitStatus = { OK: 0, FAILURE: 1, USAGE: 2 } as const;

/** Every command, by name. */
export const COMMANDS: ReadonlyMap<string, Command> = new Map([
  [vhostUserBlkCommand.name, vhostUserBlkCommand],
]);

/** Flags every command takes (docs/cli.md lists them with the command's own). */
export const COMMON_FLAGS: readonly FlagSpec[] = [
  {
    name: "log-level",
    kind: "string",
    metavar: "LEVEL",
    check: (v) =>
      LOG_LEVELS.includes(v as LogLevel) ? undefined : `must be one of ${LOG_LEVELS.join(", ")}`,
    group: "Logging",
    help: "Least severe lines written to stderr: error, warn,\ninfo (default), debug or trace (every request, in\nQEMU trace-event style: virtqueue_pop,\nvirtio_blk_submit, virtio_blk_req_complete, ...).",
  },
  {
    name: "verbose",
    short: "v",
    kind: "boolean",
    group: "Logging",
    help: "Same as --log-level trace.",
  },
  {
    name: "log-timestamp",
    kind: "boolean",
    group: "Logging",
    help: "Start each text line with the time (ISO-8601, UTC);\nJSON lines always carry it.",
  },
  {
    name: "log-format",
    kind: "string",
    metavar: "FORMAT",
    check: (v) => (LOG_FORMATS.includes(v as LogFormat) ? undefined : "must be text or json"),
    group: "Logging",
    help: "text (default) or json: one JSON object per line\n(time, level, msg, and export, conn, queue, req\nwhen they apply), for log collectors.",
  },
  { name: "help", short: "h", kind: "boolean", group: "Other", help: "Show this help." },
];

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
    version?: string;
  };
  return pkg.version ?? "unknown";
}

/** The top-level help. */
export function mainHelp(): string {
  const width = Math.max(...[...COMMANDS.keys()].map((n) => n.length)) + 4;
  const list = [...COMMANDS.values()].map((c) => `  ${c.name.padEnd(width)}${c.summary}`);
  return [
    "Usage: virtio-ts COMMAND [flags]",
    "",
    "Commands:",
    ...list,
    "",
    "Flags of every command: --help (-h), --log-level LEVEL, --verbose (-v),",
    "--log-timestamp, --log-format text|json.",
    "virtio-ts --version prints the version.",
    "Run `virtio-ts COMMAND --help` for a command's flags.",
  ].join("\n");
}

/** A command's full help: usage, flags, epilog. */
export function commandHelp(c: Command): string {
  return [
    `Usage: ${c.usage}`,
    "",
    `${c.summary[0]!.toUpperCase()}${c.summary.slice(1)}.`,
    "",
    formatFlagHelp([...c.flags, ...COMMON_FLAGS]),
    "",
    c.epilog,
  ].join("\n");
}

/** The logging options of parsed flags. */
export function logOptions(flags: ParsedFlags): LogOptions {
  if (flags.has("verbose") && flags.has("log-level"))
    throw new UsageError("give one of --verbose and --log-level");
  return {
    level: flags.has("verbose") ? "trace" : ((flags.get("log-level") as LogLevel) ?? "info"),
    timestamp: flags.has("log-timestamp"),
    format: (flags.get("log-format") as LogFormat | undefined) ?? "text",
  };
}

const wantsHelp = (argv: readonly string[]): boolean =>
  argv.some((a) => a === "--help" || a === "-h");

async function runCommand(c: Command, argv: readonly string[], io: CliIo): Promise<number> {
  const specs = [...c.flags, ...COMMON_FLAGS];
  let log: CliLog | undefined;
  try {
    if (wantsHelp(argv)) {
      io.out(commandHelp(c));
      return ExitStatus.OK;
    }
    // The back-end convention: such a flag ignores every other argument.
    const print = Object.entries(c.printers ?? {}).find(([flag]) => argv.includes(`--${flag}`));
    if (print !== undefined) {
      io.out(print[1]());
      return ExitStatus.OK;
    }
    const { flags, positionals } = parseFlags(argv, specs);
    if (positionals.length > 0)
      throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
    requireFlags(flags, specs);
    log = new CliLog(io, logOptions(flags));
    return await c.run(flags, { io, log });
  } catch (e) {
    if (e instanceof UsageError) {
      io.err(`virtio-ts ${c.name}: ${e.message} (see virtio-ts ${c.name} --help)`);
      return ExitStatus.USAGE;
    }
    const fatal = (m: string): void =>
      log === undefined ? io.err(`virtio-ts: ${m}`) : log.fatal(m);
    if (e instanceof CommandError) {
      fatal(e.message);
      return ExitStatus.FAILURE;
    }
    fatal(`internal error: ${e instanceof Error ? e.message : String(e)}`);
    if (log?.verbose && e instanceof Error && e.stack !== undefined) io.err(e.stack);
    return ExitStatus.FAILURE;
  } finally {
    log?.flush();
  }
}

/**
 * Runs the CLI with `argv` (without the node and script paths) and resolves
 * with the exit status. Never throws and never exits the process.
 *
 * @example
 * ```ts
 * process.exitCode = await main(["vhost-user-blk", "--help"], processIo());
 * ```
 */
export async function main(argv: readonly string[], io: CliIo): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined) {
    io.err("virtio-ts: missing command (see virtio-ts --help)");
    return ExitStatus.USAGE;
  }
  if (first === "--help" || first === "-h" || first === "help") {
    io.out(mainHelp());
    return ExitStatus.OK;
  }
  if (first === "--version") {
    io.out(version());
    return ExitStatus.OK;
  }
  const command = COMMANDS.get(first);
  if (command === undefined) {
    const what = first.startsWith("-") ? "flag" : "command";
    io.err(`virtio-ts: unknown ${what} ${JSON.stringify(first)} (see virtio-ts --help)`);
    return ExitStatus.USAGE;
  }
  return runCommand(command, rest, io);
}

/**
 * Signals that stop a command cleanly: SIGTERM (the vhost-user back-end
 * convention), SIGINT (Ctrl-C), SIGHUP (the terminal or session went away).
 */
const STOP_SIGNALS: readonly NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];

/** {@link CliIo} over this process's stdout, stderr and signals. */
export function processIo(): CliIo {
  return {
    out: (line) => void process.stdout.write(`${line}\n`),
    err: (line) => void process.stderr.write(`${line}\n`),
    env: process.env,
    onStopSignal(handler) {
      for (const s of STOP_SIGNALS) process.on(s, handler);
      return () => {
        for (const s of STOP_SIGNALS) process.off(s, handler);
      };
    },
  };
}

/**
 * The process entry (bin/virtio-ts.mjs): runs {@link main} on
 * `process.argv` (after `command`, for an entry that is one command, e.g.
 * bin/virtio-ts-vhost-user-blk.mjs) and exits with its status. An exception nothing caught
 * (a bug) is one line on stderr and exit status 1.
 */
export async function runProcess(command: readonly string[] = []): Promise<never> {
  const io = processIo();
  process.on("uncaughtException", (e) => {
    io.err(`virtio-ts: internal error: ${e.stack ?? e.message}`);
    process.exit(ExitStatus.FAILURE);
  });
  const code = await main([...command, ...process.argv.slice(2)], io);
  // stdout and stderr are synchronous for files and pipes on Linux: nothing is lost.
  process.exit(code);
}

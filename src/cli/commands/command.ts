/**
 * What a CLI command is: its flags, its help, and what it does. Not
 * spec-defined.
 *
 * @module
 */
import type { FlagSpec, ParsedFlags } from "../args.ts";
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
  /**
   * Flags (without dashes) that print something and exit 0, every other
   * argument ignored (e.g. `print-capabilities`): flag → what to print.
   */
  readonly printers?: Readonly<Record<string, () => string>>;
  /** Runs with validated flags; resolves with the exit status. */
  run(flags: ParsedFlags, ctx: CommandContext): Promise<number>;
}

/** A runtime failure with a one-line message (exit status 1). */
export class CommandError extends Error {
  override readonly name = "CommandError";
}

/**
 * What a back-end program tells the service manager that runs it: readiness
 * and stopping on $NOTIFY_SOCKET (systemd's notify protocol, sd_notify(3):
 * one Unix datagram of `KEY=VALUE` lines to a path or an `@`abstract name),
 * and a pid file. The vhost-user spec's "Backend program conventions" ask
 * that the program not daemonize itself: the manager does, and these are
 * how it learns the program is up. Not otherwise spec-defined.
 *
 * @module
 */
import { readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { sendUnixDatagram } from "../native/index.ts";
import { CommandError } from "./commands/command.ts";

/** Sends states to the service manager's notify socket; does nothing without one. */
export class ServiceNotifier {
  readonly #address: string | undefined;
  readonly #send: (address: string, bytes: Uint8Array) => void;
  readonly #warn: (line: string) => void;
  #warned = false;

  /**
   * @param address - $NOTIFY_SOCKET: a path, or `@name` for an abstract name
   * @param warn - where a failed send is reported (once)
   */
  constructor(
    address: string | undefined,
    warn: (line: string) => void,
    send: (address: string, bytes: Uint8Array) => void = sendUnixDatagram,
  ) {
    this.#address = address === "" ? undefined : address;
    this.#warn = warn;
    this.#send = send;
  }

  /** True when a notify socket was given. */
  get enabled(): boolean {
    return this.#address !== undefined;
  }

  /** Sends `state` as one datagram (`KEY=VALUE` lines); a failure is one warning, never fatal. */
  notify(state: Readonly<Record<string, string | number>>): void {
    if (this.#address === undefined) return;
    const text = Object.entries(state)
      .map(([k, v]) => `${k}=${String(v).replace(/\n/g, " ")}`)
      .join("\n");
    try {
      this.#send(this.#address, Buffer.from(`${text}\n`));
    } catch (e) {
      if (!this.#warned) this.#warn(`NOTIFY_SOCKET ${this.#address}: ${why(e)}`);
      this.#warned = true;
    }
  }
}

const why = (e: unknown): string => (e instanceof Error ? e.message : String(e));

const PID = /^[1-9][0-9]{0,9}\n?$/;

/** True if process `pid` exists (also when it belongs to another user). */
function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** The pid file at `path` holds `pid` once written; removed again by {@link remove}. */
export class Pidfile {
  readonly path: string;
  readonly #pid: number;
  #written = false;

  /**
   * Checks `path` before anything starts: refuses (one line) a file that
   * names a running process or holds no process id, and a missing directory.
   *
   * @throws {CommandError}
   */
  constructor(path: string, pid: number = process.pid) {
    this.path = path;
    this.#pid = pid;
    const old = this.#read();
    if (old === "none") {
      if (!isDirectory(dirname(path)))
        throw new CommandError(`pidfile ${path}: its directory does not exist`);
    } else if (old === "garbage") {
      throw new CommandError(`pidfile ${path}: exists and holds no process id (not replaced)`);
    } else if (old !== pid && running(old)) {
      throw new CommandError(`pidfile ${path}: process ${old} is running`);
    }
  }

  /** Writes the pid (a temporary file renamed over `path`: readers never see a partial one). */
  write(): void {
    const temporary = `${this.path}.${this.#pid}.tmp`;
    try {
      writeFileSync(temporary, `${this.#pid}\n`, { mode: 0o644 });
      renameSync(temporary, this.path);
      this.#written = true;
    } catch (e) {
      unlinkQuietly(temporary);
      throw new CommandError(`pidfile ${this.path}: ${why(e)}`);
    }
  }

  /** Removes the file if this process wrote it and it still names this process. */
  remove(): void {
    if (this.#written && this.#read() === this.#pid) unlinkQuietly(this.path);
    this.#written = false;
  }

  #read(): number | "none" | "garbage" {
    let text: string;
    try {
      text = readFileSync(this.path, "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return "none";
      throw new CommandError(`pidfile ${this.path}: ${why(e)}`);
    }
    return PID.test(text) ? Number.parseInt(text, 10) : "garbage";
  }
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // Already gone.
  }
}

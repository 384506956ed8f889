/**
 * Child processes for the real-guest harness: spawn with bounded output
 * capture, wait for exit with a deadline, stop with SIGTERM then SIGKILL.
 *
 * Each child leads its own process group and signals go to the whole group,
 * so a backend started through a wrapper (`npx ...`) stops with its real
 * process. Children still running when the test process exits are killed.
 *
 * @module
 */
import { spawn, type ChildProcess } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";

/** How a child ended. */
export interface ExitStatus {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** Keeps the last `limit` characters of a stream. */
export class TailBuffer {
  #text = "";
  constructor(readonly limit = 64 * 1024) {}
  push(chunk: string): void {
    this.#text += chunk;
    if (this.#text.length > 2 * this.limit) this.#text = this.#text.slice(-this.limit);
  }
  /** All kept text, or only its last `lines` lines. */
  text(lines?: number): string {
    const t = this.#text.slice(-this.limit);
    return lines === undefined ? t : t.split("\n").slice(-lines).join("\n");
  }
}

/** Children not yet exited, killed if the test process exits first. */
const live = new Set<Child>();
process.once("exit", () => {
  for (const c of live) c.kill("SIGKILL");
});

/** A spawned child with captured output and an exit promise. */
export class Child {
  readonly stdout = new TailBuffer();
  readonly stderr = new TailBuffer();
  readonly exited: Promise<ExitStatus>;
  #status: ExitStatus | undefined;
  readonly #proc: ChildProcess;

  constructor(
    readonly label: string,
    cmd: string,
    args: readonly string[],
    opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
  ) {
    this.#proc = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.#proc.stdout?.setEncoding("utf8").on("data", (c: string) => this.stdout.push(c));
    this.#proc.stderr?.setEncoding("utf8").on("data", (c: string) => this.stderr.push(c));
    this.exited = new Promise((resolve) => {
      this.#proc.on("error", (e) => {
        this.stderr.push(`\n[spawn ${cmd} failed: ${e.message}]\n`);
        this.#status ??= { code: null, signal: null };
        live.delete(this);
        resolve(this.#status);
      });
      this.#proc.on("close", (code, signal) => {
        this.#status ??= { code, signal };
        live.delete(this);
        resolve(this.#status);
      });
    });
  }

  get pid(): number | undefined {
    return this.#proc.pid;
  }

  /** Exit status once exited, else undefined. */
  get status(): ExitStatus | undefined {
    return this.#status;
  }

  /** Send a signal to the child's process group if the child still runs. */
  kill(signal: NodeJS.Signals): void {
    const pid = this.#proc.pid;
    if (this.#status !== undefined || pid === undefined) return;
    try {
      process.kill(-pid, signal);
    } catch {
      this.#proc.kill(signal); // group already gone: the child alone
    }
  }

  /** Wait for exit, at most `ms`; undefined if still running. */
  async waitExit(ms: number): Promise<ExitStatus | undefined> {
    const ac = new AbortController();
    const timer = sleep(ms, undefined, { signal: ac.signal }).catch(() => undefined);
    const r = await Promise.race([this.exited, timer]);
    ac.abort();
    return r;
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit status. */
  async stop(graceMs = 5000): Promise<ExitStatus> {
    this.kill("SIGTERM");
    const s = await this.waitExit(graceMs);
    if (s) return s;
    this.kill("SIGKILL");
    return this.exited;
  }

  /** stdout and stderr tails for a failure message. */
  diagnostics(lines = 40): string {
    const out = this.stdout.text(lines).trim();
    const err = this.stderr.text(lines).trim();
    const status = this.#status
      ? ` exited code=${this.#status.code} signal=${this.#status.signal}`
      : "";
    return `--- ${this.label} (pid ${this.pid})${status} ---\nstdout:\n${out || "(empty)"}\nstderr:\n${err || "(empty)"}`;
  }
}

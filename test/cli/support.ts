/**
 * Test support for the CLI tests: an in-memory {@link CliIo}, the real
 * `virtio-ts` process with bounded waits, and a minimal vhost-user probe
 * (GET_FEATURES over the socket).
 *
 * @module
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess, type StdioOptions } from "node:child_process";
import { fileURLToPath } from "node:url";
import { setImmediate as tick, setTimeout as sleep } from "node:timers/promises";
import type { CliIo } from "../../src/cli/log.ts";
import { close, connectUnix, recvmsg, sendmsg } from "../../src/native/index.ts";
import { VhostUserRequest as R } from "../../src/spec/vhost-user.ts";
import { decodeHeader, decodeU64, encodeMessage } from "../../src/vhost-user/codec.ts";

/** The CLI entry, as package.json's "bin" names it. */
export const BIN = fileURLToPath(new URL("../../bin/virtio-ts.mjs", import.meta.url));

/** A {@link CliIo} that records lines and lets the test send stop signals. */
export class MemoryIo implements CliIo {
  readonly stdout: string[] = [];
  readonly stderr: string[] = [];
  readonly #handlers = new Set<(s: NodeJS.Signals) => void>();

  out(line: string): void {
    this.stdout.push(...line.split("\n"));
  }
  err(line: string): void {
    this.stderr.push(...line.split("\n"));
  }
  onStopSignal(handler: (signal: NodeJS.Signals) => void): () => void {
    this.#handlers.add(handler);
    return () => this.#handlers.delete(handler);
  }
  /** Delivers a stop signal to every subscriber. */
  signal(s: NodeJS.Signals): void {
    for (const h of [...this.#handlers]) h(s);
  }
  get subscribers(): number {
    return this.#handlers.size;
  }
  /** Resolves once a stdout line matches (bounded). */
  async waitOut(re: RegExp, ms = 10_000): Promise<string> {
    const end = Date.now() + ms;
    for (;;) {
      const hit = this.stdout.find((l) => re.test(l));
      if (hit !== undefined) return hit;
      if (Date.now() > end) assert.fail(`no stdout line ${re} within ${ms} ms: ${this.dump()}`);
      await sleep(10);
    }
  }
  dump(): string {
    return `\nstdout:\n${this.stdout.join("\n")}\nstderr:\n${this.stderr.join("\n")}`;
  }
}

/** The real CLI as a child process. */
export class CliProcess {
  readonly proc: ChildProcess;
  stdout = "";
  stderr = "";
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  /**
   * `wrapper`: a command that runs Node for us (e.g. one that installs a
   * seccomp filter); `env`: added to this process's environment.
   */
  constructor(
    args: readonly string[],
    stdio: StdioOptions = ["ignore", "pipe", "pipe"],
    wrapper?: string,
    env?: Readonly<Record<string, string>>,
  ) {
    const options = { stdio, env: { ...process.env, ...env } };
    this.proc =
      wrapper === undefined
        ? spawn(process.execPath, [BIN, ...args], options)
        : spawn(wrapper, [process.execPath, BIN, ...args], options);
    this.proc.stdout?.setEncoding("utf8").on("data", (c: string) => (this.stdout += c));
    this.proc.stderr?.setEncoding("utf8").on("data", (c: string) => (this.stderr += c));
    this.exited = new Promise((resolve) =>
      this.proc.on("close", (code, signal) => resolve({ code, signal })),
    );
  }

  /** Resolves once stdout matches; fails if the process exits first or after `ms`. */
  waitStdout(re: RegExp, ms = 20_000): Promise<void> {
    return this.#wait("stdout", re, ms);
  }

  /** Resolves once stderr matches; fails if the process exits first or after `ms`. */
  waitStderr(re: RegExp, ms = 20_000): Promise<void> {
    return this.#wait("stderr", re, ms);
  }

  async #wait(stream: "stdout" | "stderr", re: RegExp, ms: number): Promise<void> {
    let exited = false;
    void this.exited.then(() => (exited = true));
    const end = Date.now() + ms;
    while (!re.test(this[stream])) {
      if (exited) assert.fail(`exited before printing ${re}${this.dump()}`);
      if (Date.now() > end) assert.fail(`no ${re} on ${stream} within ${ms} ms${this.dump()}`);
      await sleep(20);
    }
  }

  /** The exit status, failing after `ms` (the process is then killed). */
  async exit(ms = 20_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.proc.kill("SIGKILL");
        reject(new Error(`virtio-ts did not exit within ${ms} ms${this.dump()}`));
      }, ms);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Kills the process if it still runs (test cleanup). */
  kill(): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill("SIGKILL");
  }

  dump(): string {
    return `\nstdout:\n${this.stdout}\nstderr:\n${this.stderr}`;
  }
}

/** Non-empty stderr lines. */
export function lines(text: string): string[] {
  return text.split("\n").filter((l) => l.length > 0);
}

/** The next message on `fd`, or "eof" (bounded). */
async function receive(fd: number): Promise<Uint8Array | "eof"> {
  const end = Date.now() + 10_000;
  while (Date.now() < end) {
    const r = recvmsg(fd, 4096, 0);
    if (r !== null) return r.eof ? "eof" : new Uint8Array(r.bytes);
    await tick();
  }
  throw new Error("no reply from the back-end within 10 s");
}

/**
 * Connects to a vhost-user back-end at `path`, asks GET_FEATURES, and
 * disconnects; resolves with the features.
 */
export async function probeFeatures(path: string): Promise<bigint> {
  const fd = connectUnix(path);
  try {
    return await probeFeaturesOn(fd);
  } finally {
    close(fd);
  }
}

/** Asks GET_FEATURES over the connected socket `fd` (left open); resolves with the features. */
export async function probeFeaturesOn(fd: number): Promise<bigint> {
  assert.ok(sendmsg(fd, encodeMessage(R.GET_FEATURES, 1, new Uint8Array(0))));
  const reply = await receive(fd);
  assert.notEqual(reply, "eof", "the back-end answered GET_FEATURES");
  const bytes = reply as Uint8Array;
  assert.deepEqual(decodeHeader(bytes), { request: R.GET_FEATURES, flags: 5, size: 8 });
  return decodeU64(bytes.subarray(12));
}

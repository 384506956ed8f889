/**
 * A real Linux guest (QEMU TCG, vhost-user-blk-pci) on disks that are not raw
 * files: an NBD export (`virtio-ts vhost-user-blk --nbd`) of a qcow2 image
 * served by qemu-nbd, and the example copy-on-write store module
 * (`--backing examples/cow-store.ts`, compiled to JavaScript) over a
 * read-only base image. Each runs the shared ext4 scenario (mkfs, files,
 * fsck, checksums after remount, 2 queues) and fio with crc32c verify; the
 * host then checks where the data went (the qcow2 image through qemu-img;
 * the overlay, with the base untouched). VIRTIO 1.2 §5.2.
 */
import { describe, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import ts from "typescript";
import {
  spawnBackend,
  virtioTsCommand,
  type Backend,
  type BackendOptions,
  type StartBackend,
} from "./guest/backends.ts";
import { ensureGuestPrereqs, ensurePackages, run, REPO_ROOT } from "./guest/install.ts";
import { ensureInitramfs } from "./guest/initramfs.ts";
import { ext4Scenario, fioScenario, timings } from "./guest/scenarios.ts";

const SETUP_MS = 20 * 60_000;
const TEST_MS = 8 * 60_000;

/** The CLI serving `source` flags (`--nbd URI` or `--backing MODULE ...`) on the scenario's socket. */
function startCli(o: BackendOptions, label: string, source: readonly string[]): Promise<Backend> {
  const { cmd, args } = virtioTsCommand();
  const flags = ["vhost-user-blk", "--socket-path", o.socketPath, ...source];
  flags.push("--num-queues", String(o.numQueues), "--io-threads", "2");
  return spawnBackend(label, cmd, [...args, ...flags], o.socketPath, {
    stdoutLine: /listening on /,
  });
}

/** What each qcow2 image held when its backend stopped (before the scenario's files go). */
const qcow2Checks: { image: string; allocated: number }[] = [];

/** qemu-nbd serving a qcow2 image of the scenario's size, and the CLI in front of it. */
const startNbd: StartBackend = async (o) => {
  const size = statSync(o.imagePath).size;
  const qcow2 = `${o.imagePath}.qcow2`;
  const sock = `${o.imagePath}.nbd`;
  await run("qemu-img", ["create", "-q", "-f", "qcow2", qcow2, String(size)]);
  const args = ["-f", "qcow2", "-k", sock, "-x", "disk0", "--persistent", "--shared=8", qcow2];
  const nbd = spawn("qemu-nbd", args, { stdio: ["ignore", "ignore", "pipe"] });
  const exited = new Promise<void>((r) => nbd.once("exit", () => r()));
  for (let i = 0; i < 200 && !existsSocket(sock); i++) await new Promise((r) => setTimeout(r, 50));
  const cli = await startCli(o, "virtio-ts --nbd (qemu-nbd, qcow2)", [
    "--nbd",
    `nbd+unix:///disk0?socket=${sock}`,
  ]).catch(async (e: unknown) => {
    nbd.kill();
    await exited;
    throw e;
  });
  return {
    ...cli,
    label: cli.label,
    diagnostics: () => cli.diagnostics(),
    get status() {
      return cli.status;
    },
    kill: () => cli.kill(),
    stop: async () => {
      const status = await cli.stop();
      nbd.kill();
      await exited;
      await run("qemu-img", ["check", "-q", qcow2]);
      const info = JSON.parse(await run("qemu-img", ["info", "--output=json", qcow2])) as {
        "actual-size": number;
      };
      qcow2Checks.push({ image: qcow2, allocated: info["actual-size"] });
      return status;
    },
  };
};

function existsSocket(path: string): boolean {
  try {
    return statSync(path).isSocket();
  } catch {
    return false;
  }
}

/** The example store compiled to an ES module next to the scenario's image. */
function compileCowStore(dir: string): string {
  const source = readFileSync(join(REPO_ROOT, "examples", "cow-store.ts"), "utf8");
  const out = ts.transpileModule(source, {
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
  });
  const path = join(dir, "cow-store.mjs");
  writeFileSync(path, out.outputText);
  return path;
}

/** Per run: whether the base kept its bytes, and how many blocks the overlay's map holds. */
const cowChecks: { baseKept: boolean; blocks: number }[] = [];
const sha = (path: string): string => createHash("sha256").update(readFileSync(path)).digest("hex");
const startCow: StartBackend = async (o) => {
  const dir = join(o.imagePath, "..");
  const overlay = join(dir, "overlay.cow");
  const digest = sha(o.imagePath);
  const cli = await startCli(o, "virtio-ts --backing cow-store", [
    "--backing",
    compileCowStore(dir),
    "--backing-option",
    `base=${o.imagePath},overlay=${overlay}`,
  ]);
  return {
    ...cli,
    diagnostics: () => cli.diagnostics(),
    get status() {
      return cli.status;
    },
    kill: () => cli.kill(),
    stop: async () => {
      const status = await cli.stop();
      const map = readFileSync(`${overlay}.map`);
      const blocks = map.reduce((n, byte) => n + popcount(byte), 0);
      cowChecks.push({ baseKept: sha(o.imagePath) === digest, blocks });
      return status;
    },
  };
};

describe("real Linux guest on storage beyond raw files", () => {
  before(
    async () => {
      await ensurePackages(["qemu-utils"]);
      const { kernel } = await ensureGuestPrereqs();
      await ensureInitramfs(kernel, { fio: true });
    },
    { timeout: SETUP_MS },
  );

  test(
    "--nbd to qemu-nbd serving qcow2: ext4 on 2 queues, fio crc32c verify",
    { timeout: TEST_MS },
    async (t) => {
      t.diagnostic(timings(await ext4Scenario(startNbd, 2)));
      t.diagnostic(timings(await fioScenario(startNbd, 1)));
      assert.equal(qcow2Checks.length, 2);
      for (const c of qcow2Checks)
        assert.ok(
          c.allocated > 8 << 20,
          `the guest's writes reached ${c.image} (${c.allocated} bytes)`,
        );
    },
  );

  test(
    "--backing cow-store over a read-only base: ext4 on 2 queues, fio crc32c verify",
    { timeout: TEST_MS },
    async (t) => {
      t.diagnostic(timings(await ext4Scenario(startCow, 2)));
      t.diagnostic(timings(await fioScenario(startCow, 1)));
      assert.equal(cowChecks.length, 2);
      for (const c of cowChecks) {
        assert.ok(c.baseKept, "the base image is never written");
        assert.ok(c.blocks > 1000, `the overlay holds the guest's blocks (${c.blocks} of 4 KiB)`);
      }
    },
  );
});

function popcount(b: number): number {
  let n = 0;
  for (let v = b; v !== 0; v &= v - 1) n++;
  return n;
}

/**
 * The package as a user gets it: `npm pack` of this repository (with the
 * prebuilt addons for linux-x64 and linux-arm64), installed from the tarball
 * into an empty project with no loader and no compiler step, then:
 * every subpath imports in plain Node; the README's library examples,
 * compiled with the project's TypeScript against the installed declarations
 * (strict), run — a device loop over a split ring, and a virtio-blk driver ↔
 * device round trip over the in-process transport; `npx virtio-ts --help`
 * starts, and the installed daemon (dataplane on worker threads) serves a
 * disk that the installed vhost-user front-end writes and reads back; the
 * addon is the prebuilt one; without any binary the user is told
 * the fix in one line. Not spec-defined.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync, type SpawnSyncReturns } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensurePackages, REPO_ROOT } from "../interop/guest/install.ts";
import { readmeExamples } from "./readme-examples.ts";

/** Every subpath of package.json's "exports" and one export each must have. */
const SUBPATHS: Readonly<Record<string, string>> = {
  "virtio-ts": "VirtioDevice",
  "virtio-ts/ring": "openRing",
  "virtio-ts/blk": "BlkDriver",
  "virtio-ts/vhost-user": "VhostUserServer",
  "virtio-ts/inproc": "InprocDriverTransport",
  "virtio-ts/emulated": "VirtioPciTransport",
  "virtio-ts/testing": "MockSplitQueue",
  "virtio-ts/native": "eventfd",
  "virtio-ts/node": "FileBacking",
};

/** The environment for child npm/node runs: without the outer npm's lifecycle variables. */
const ENV = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => !k.startsWith("npm_") && k !== "INIT_CWD"),
);

function sh(
  cmd: string,
  args: readonly string[],
  cwd: string,
  env = ENV,
): SpawnSyncReturns<string> {
  const r = spawnSync(cmd, args, { cwd, env, encoding: "utf8", timeout: 300_000 });
  return r;
}

function ok(r: SpawnSyncReturns<string>, what: string): string {
  assert.equal(r.status, 0, `${what} failed (${r.status ?? r.signal}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** ELF e_machine of a shared object (62 = x86-64, 183 = AArch64). */
function elfMachine(path: string): number {
  const b = readFileSync(path);
  assert.equal(b.subarray(0, 4).toString("latin1"), "\x7fELF", `${path} is not an ELF file`);
  return b.readUInt16LE(18);
}

test("npm pack → npm install → plain Node: subpaths, README examples, CLI, prebuilt addon", async () => {
  await ensurePackages(["g++-aarch64-linux-gnu"]);
  // dist/ is built by the suite before any test; the tarball takes it as it is.
  ok(sh("npm", ["run", "--silent", "prebuildify"], REPO_ROOT), "npm run prebuildify");
  const work = mkdtempSync(join(tmpdir(), "virtio-ts-pack-"));
  try {
    const packed = JSON.parse(
      ok(
        sh("npm", ["pack", "--ignore-scripts", "--json", "--pack-destination", work], REPO_ROOT),
        "npm pack",
      ),
    ) as { filename: string; files: { path: string }[] }[];
    const files = packed[0]!.files.map((f) => f.path);
    for (const f of [
      "dist/api/index.js",
      "dist/api/index.d.ts",
      "bin/virtio-ts.mjs",
      "binding.gyp",
      "LICENSE",
    ])
      assert.ok(files.includes(f), `${f} is in the tarball`);
    const tests = files.filter((f) =>
      /\.test\.ts$|^test\/|^bench\/|^fuzz\/|test-support|test-worker/.test(f),
    );
    assert.deepEqual(tests, [], "no tests in the tarball");
    const x64 = files.find((f) => f.startsWith("prebuilds/linux-x64/") && f.endsWith(".node"));
    const arm64 = files.find((f) => f.startsWith("prebuilds/linux-arm64/") && f.endsWith(".node"));
    assert.ok(
      x64 && arm64,
      `prebuilt addons for linux-x64 and linux-arm64: ${files.filter((f) => f.startsWith("prebuilds/")).join(", ")}`,
    );
    assert.equal(elfMachine(join(REPO_ROOT, x64)), 62);
    assert.equal(elfMachine(join(REPO_ROOT, arm64)), 183);

    const app = join(work, "app");
    mkdirSync(app);
    writeFileSync(
      join(app, "package.json"),
      JSON.stringify({ name: "app", private: true, type: "module" }),
    );
    const tarball = join(work, packed[0]!.filename);
    ok(
      sh("npm", ["install", "--no-audit", "--no-fund", "--prefer-offline", tarball], app),
      "npm install",
    );
    const installed = join(app, "node_modules", "virtio-ts");
    assert.equal(
      existsSync(join(installed, "build")),
      false,
      "nothing compiled on install: the prebuilt addon serves",
    );

    const pkg = JSON.parse(readFileSync(join(installed, "package.json"), "utf8")) as {
      exports: Record<string, unknown>;
    };
    assert.deepEqual(
      Object.keys(pkg.exports)
        .filter((k) => k !== "./package.json")
        .map((k) => k.replace(/^\./, "virtio-ts"))
        .sort(),
      Object.keys(SUBPATHS).sort(),
      "every exported subpath is probed",
    );
    // Every subpath in plain Node (no loader), and the addon loaded.
    const probe = Object.entries(SUBPATHS)
      .map(
        ([p, name]) =>
          `if (typeof (await import(${JSON.stringify(p)}))[${JSON.stringify(name)}] !== "function") throw new Error("${p}: no ${name}");`,
      )
      .join("\n");
    const native = `const n = await import("virtio-ts/native"); if (!n.nativeAvailable()) throw new Error(n.nativeLoadError());`;
    ok(
      sh(
        "node",
        ["--input-type=module", "-e", `${probe}\n${native}\nconsole.log("imports ok")`],
        app,
      ),
      "imports",
    );

    // The README's examples: compiled (strict, against the installed .d.ts), then run.
    const examples = readmeExamples(readFileSync(join(REPO_ROOT, "README.md"), "utf8"));
    assert.deepEqual(Object.keys(examples).sort(), ["disk-worker.ts", "disk.ts", "echo-ring.ts"]);
    for (const [name, code] of Object.entries(examples)) writeFileSync(join(app, name), code);
    writeFileSync(
      join(app, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          target: "ES2022",
          module: "NodeNext",
          moduleResolution: "NodeNext",
          strict: true,
          noUncheckedIndexedAccess: true,
          outDir: "out",
          types: ["node"],
          typeRoots: [join(REPO_ROOT, "node_modules", "@types")],
        },
        include: Object.keys(examples),
      }),
    );
    ok(
      sh("node", [join(REPO_ROOT, "node_modules", "typescript", "bin", "tsc"), "-p", "."], app),
      "tsc on the README examples",
    );
    const echo = ok(sh("node", ["out/echo-ring.js"], app), "echo-ring example");
    assert.match(echo, /interrupt the driver: true/);
    const disk = ok(sh("node", ["out/disk.js"], app), "disk example");
    assert.match(disk, /4194304 bytes, serial disk0: wrote and read back 8 KiB/);

    // The command, through npx as a user starts it.
    const help = ok(
      sh("npx", ["--no-install", "virtio-ts", "--help"], app),
      "npx virtio-ts --help",
    );
    assert.match(help, /vhost-user-blk/);

    await daemonRoundTrip(app, work);

    // No binary that fits (node-gyp-build looks under VIRTIO_TS_PREBUILD instead): one line names the fix.
    const none = { ...ENV, VIRTIO_TS_PREBUILD: join(work, "nowhere") };
    const missing = sh(
      "node",
      ["--input-type=module", "-e", `${native.replace("throw new Error", "console.log")}`],
      app,
      none,
    );
    assert.match(
      missing.stdout,
      /native addon not available for linux-x64.*npm rebuild virtio-ts.*skips install scripts/,
    );
    const image = join(work, "none.img");
    writeFileSync(image, new Uint8Array(1 << 20));
    const bin = join(app, "node_modules", ".bin", "virtio-ts");
    const cli = sh(
      bin,
      ["vhost-user-blk", "--socket-path", join(work, "n.sock"), "--image", image],
      app,
      none,
    );
    assert.equal(cli.status, 1, cli.stderr);
    assert.match(
      cli.stderr,
      /^virtio-ts: native addon not available for linux-x64: [^\n]*allow them for virtio-ts\n$/,
    );
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});

/** The installed daemon serves an image on 2 queues; the installed front-end writes and reads it back. */
async function daemonRoundTrip(app: string, work: string): Promise<void> {
  const socket = join(work, "vub.sock");
  const image = join(work, "disk.img");
  writeFileSync(image, new Uint8Array(8 << 20));
  const bin = join(app, "node_modules", ".bin", "virtio-ts");
  const args = ["vhost-user-blk", "--socket", socket, "--image", image, "--num-queues", "2"];
  const daemon = spawn(bin, args, { cwd: app, env: ENV, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  daemon.stdout.on("data", (d: Buffer) => (out += d.toString()));
  daemon.stderr.on("data", (d: Buffer) => (err += d.toString()));
  const exited = once(daemon, "exit");
  try {
    for (let i = 0; i < 300 && !out.includes("listening on"); i++)
      await new Promise((r) => setTimeout(r, 50));
    assert.match(out, /listening on/, `daemon did not start: ${err}`);
    const client = `
      import { VhostUserBlk } from "virtio-ts/vhost-user";
      const disk = await VhostUserBlk.connect(${JSON.stringify(socket)}, { numQueues: 2 });
      const data = new Uint8Array(65536).map((_, i) => i & 0xff);
      await disk.write(1 << 20, data);
      const back = new Uint8Array(65536);
      await disk.read(1 << 20, back);
      if (!back.every((v, i) => v === data[i])) throw new Error("read back differs");
      await disk.flush();
      await disk.close();
      console.log("round trip ok");`;
    const r = sh("node", ["--input-type=module", "-e", client], app);
    assert.match(ok(r, "vhost-user front-end"), /round trip ok/);
  } finally {
    daemon.kill("SIGTERM");
    const [code, signal] = (await exited) as [number | null, string | null];
    assert.deepEqual([code, signal], [0, null], `daemon exit after SIGTERM: ${err}`);
  }
  const disk = readFileSync(image);
  assert.equal(disk[(1 << 20) + 7], 7, "the write reached the image");
}

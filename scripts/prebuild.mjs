#!/usr/bin/env node
// `npm run prebuildify` (and `npm pack`, through prepack): builds the
// prebuilt native addons shipped in the package, prebuilds/<platform>-<arch>/,
// with prebuildify (N-API, so one binary serves every Node version; stripped;
// tagged with the C library). Always for this machine's arch; on x64 also for
// linux-arm64 when Debian's cross compiler is installed
// (`apt-get install g++-aarch64-linux-gnu`). The build runs in a temporary
// copy of the sources so the working tree's build/Release stays as it is.
// Run through npm: it puts node-gyp on PATH.
import { spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const has = (cmd) => spawnSync("sh", ["-c", `command -v ${cmd}`]).status === 0;

/** The builds to make: [arch, extra environment, extra prebuildify flags]. */
const builds = [[process.arch, {}, []]];
if (process.platform === "linux" && process.arch === "x64") {
  if (has("aarch64-linux-gnu-g++")) {
    const cross = "aarch64-linux-gnu-";
    builds.push([
      "arm64",
      { CC: `${cross}gcc`, CXX: `${cross}g++`, LINK: `${cross}g++`, AR: `${cross}ar` },
      ["--strip-bin", `${cross}strip`],
    ]);
  } else {
    console.warn(
      "prebuild: no linux-arm64 binary (install the cross compiler: apt-get install g++-aarch64-linux-gnu)",
    );
  }
}

const stage = mkdtempSync(join(tmpdir(), "virtio-ts-prebuild-"));
try {
  for (const f of ["binding.gyp", "package.json", "native"])
    cpSync(join(root, f), join(stage, f), { recursive: true });
  symlinkSync(join(root, "node_modules"), join(stage, "node_modules"));
  const prebuildify = join(root, "node_modules", ".bin", "prebuildify");
  for (const [arch, env, flags] of builds) {
    const args = ["--napi", "--strip", "--tag-libc", "--arch", arch, ...flags];
    const r = spawnSync(prebuildify, args, {
      cwd: stage,
      stdio: ["ignore", "ignore", "inherit"],
      env: { ...process.env, ...env },
    });
    if (r.status !== 0) {
      console.error(`prebuild: prebuildify ${args.join(" ")} failed (${r.status ?? r.signal})`);
      process.exit(1);
    }
  }
  for (const tuple of readdirSync(join(stage, "prebuilds"))) {
    rmSync(join(root, "prebuilds", tuple), { recursive: true, force: true });
    cpSync(join(stage, "prebuilds", tuple), join(root, "prebuilds", tuple), { recursive: true });
    console.log(
      `prebuild: prebuilds/${tuple}/${readdirSync(join(stage, "prebuilds", tuple)).join(", ")}`,
    );
  }
} finally {
  rmSync(stage, { recursive: true, force: true });
}

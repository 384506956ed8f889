#!/usr/bin/env -S node --max-semi-space-size=1
// `virtio-ts vhost-user-blk` as a program of its own, for managers that
// start a vhost-user back-end with the convention's flags and no command
// name (qemu/qemu docs/interop/vhost-user.rst, "Backend program
// conventions"): the "binary" of the description file that
// `--print-description` prints. Same flags, output and exit status as
// `virtio-ts vhost-user-blk`.
import { existsSync } from "node:fs";

const entry = new URL("../dist/cli/main.js", import.meta.url);
if (!existsSync(entry)) {
  console.error(
    "virtio-ts: the compiled CLI (dist/cli/main.js) is missing; run `npm run build` in the package directory",
  );
  process.exit(1);
}
const { runProcess } = await import(entry.href);
await runProcess(["vhost-user-blk"]);

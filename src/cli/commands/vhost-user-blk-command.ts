/**
 * The `vhost-user-blk` command as the command line lists it: name, help,
 * flags. What it does (./vhost-user-blk.ts, with the whole device stack and
 * the native addon) is loaded only when it runs, so `--help` and a usage
 * error start fast. Not spec-defined; docs/cli.md documents every flag.
 *
 * @module
 */
import type { Command } from "./command.ts";
import { blkCapabilities, blkDescription, jsonText } from "./vhost-user-blk-discovery.ts";
import { EPILOG, FLAGS } from "./vhost-user-blk-flags.ts";
import { settings } from "./vhost-user-blk-settings.ts";

/** The `vhost-user-blk` command. */
export const vhostUserBlkCommand: Command = {
  name: "vhost-user-blk",
  summary: "serve raw disk images to VMs as vhost-user virtio-blk devices",
  usage:
    "virtio-ts vhost-user-blk (--socket-path PATH | --fd N) --image FILE [options]\n" +
    "       virtio-ts vhost-user-blk --export socket-path=PATH,image=FILE[,KEY=VALUE...] [--export ...] [options]\n" +
    "       virtio-ts vhost-user-blk --print-capabilities | --print-description",
  flags: FLAGS,
  epilog: EPILOG,
  printers: {
    "print-capabilities": () => jsonText(blkCapabilities()),
    "print-description": () => jsonText(blkDescription()),
  },
  async run(flags, ctx) {
    const s = settings(flags); // usage errors before anything heavy loads
    const { serve } = await import("./vhost-user-blk.ts");
    return serve(s, ctx);
  },
};

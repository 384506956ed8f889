/**
 * What managers read about the `vhost-user-blk` back-end before they start
 * it (qemu/qemu docs/interop/vhost-user.rst, "Backend program conventions";
 * docs/interop/vhost-user.json): the capabilities `--print-capabilities`
 * prints (`VHostUserBackendCapabilities` of type "block": the spec's
 * vhost-user-blk options this program takes) and the description file
 * (`VhostUserBackend`) that libvirt looks for in /usr/share/qemu/vhost-user/
 * and /etc/qemu/vhost-user/.
 *
 * @module
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/**
 * The program a manager starts: `virtio-ts vhost-user-blk` as a command of
 * its own (bin/virtio-ts-vhost-user-blk.mjs; package.json "bin"), since
 * managers pass the convention's flags with no command name. The same
 * relative path holds from src/ and from the compiled dist/.
 */
export const BLK_BINARY = fileURLToPath(
  new URL("../../../bin/virtio-ts-vhost-user-blk.mjs", import.meta.url),
);

/** The spec's vhost-user-blk options this program takes (VHostUserBackendBlockFeature). */
export const BLK_FEATURES = ["read-only", "blk-file"] as const;

/** `--print-capabilities`: a VHostUserBackendCapabilities of type "block". */
export function blkCapabilities(): { type: "block"; features: readonly string[] } {
  return { type: "block", features: BLK_FEATURES };
}

function version(): string {
  const url = new URL("../../../package.json", import.meta.url);
  return (JSON.parse(readFileSync(url, "utf8")) as { version?: string }).version ?? "unknown";
}

/** `--print-description`: a VhostUserBackend naming `binary` (default: this installation's). */
export function blkDescription(binary = BLK_BINARY): Record<string, unknown> {
  return {
    description: "virtio-ts vhost-user-blk: raw disk images as virtio-blk devices",
    type: "block",
    binary,
    tags: [`virtio-ts ${version()}`],
  };
}

/** One object as the JSON text managers read (two-space indent). */
export const jsonText = (value: unknown): string => JSON.stringify(value, null, 2);

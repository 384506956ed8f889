/**
 * The vhost-user front-end and the virtio-blk driver against
 * qemu-storage-daemon 7.2's vhost-user-blk export (libvhost-user), with no
 * guest: the scenarios of ./frontend-scenarios.ts, on split rings
 * (qemu-storage-daemon offers no VIRTIO_F_RING_PACKED: the disk negotiates
 * split rings without being told).
 *
 * qemu-storage-daemon comes from the Debian package qemu-system-common,
 * installed here (as root, under the harness's install lock) if missing.
 *
 * @module
 */
import { join } from "node:path";
import { startQsd } from "./guest/backends.ts";
import { guestCacheDir, missingPackages, run } from "./guest/install.ts";
import { withLock } from "./guest/lock.ts";
import { frontendScenarios } from "./frontend-scenarios.ts";

const APT_ENV = { ...process.env, DEBIAN_FRONTEND: "noninteractive", LC_ALL: "C" };
const PACKAGE = "qemu-system-common";

let installed: Promise<void> | undefined;

/** Installs qemu-system-common (qemu-storage-daemon) if missing, under the harness's install lock. */
function ensureQsd(): Promise<void> {
  installed ??= (async () => {
    if ((await missingPackages([PACKAGE])).length === 0) return;
    await withLock(join(guestCacheDir(), "install.lock"), 25 * 60_000, async () => {
      if ((await missingPackages([PACKAGE])).length === 0) return;
      if (process.getuid?.() !== 0) throw new Error(`installing ${PACKAGE} needs root`);
      const wait = ["-o", "DPkg::Lock::Timeout=600"];
      await run("apt-get", ["update", "-q", ...wait], { env: APT_ENV });
      await run("apt-get", ["install", "-y", "-q", "--no-install-recommends", ...wait, PACKAGE], {
        env: APT_ENV,
      });
    });
  })();
  return installed;
}

frontendScenarios(
  "qemu-storage-daemon",
  startQsd,
  { id: "vhost_user_blk", prepare: ensureQsd },
  { layout: "split", queueSize: 128 },
);

/**
 * The main job, `npm start`: a real Linux guest uses a disk served by
 * `virtio-ts vhost-user-blk`.
 *
 * 1. Installs what is missing (QEMU, busybox, e2fsprogs, fio, a Debian
 *    kernel; the real-guest harness's installer) and builds the guest's
 *    initramfs.
 * 2. Creates a fresh sparse disk image (`.cache/guest-demo/disk.img`, or
 *    in `$VIRTIO_TS_DEMO_DIR`).
 * 3. Starts the backend: `virtio-ts vhost-user-blk --socket-path ... --image ...`.
 * 4. Boots Linux under QEMU (TCG) with vhost-user-blk-pci on that socket; in
 *    the guest: what the disk looks like, mkfs.ext4, files written and their
 *    checksums verified after a remount, e2fsck, a short fio run with crc32c
 *    verification; then the guest powers off.
 * 5. Stops the backend (SIGTERM: drain, flush, socket removed) and checks
 *    the image from the host: e2fsck clean, a file the guest wrote reads
 *    back.
 *
 * Prints progress while it runs and a summary at the end; exit status 0
 * when every check passed. Not spec-defined.
 *
 * @module
 */
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { spawnBackend, virtioTsCommand, type Backend } from "../test/interop/guest/backends.ts";
import { ensureInitramfs } from "../test/interop/guest/initramfs.ts";
import { REPO_ROOT, ensureGuestPrereqs } from "../test/interop/guest/install.ts";
import { runGuest, type GuestRunResult, type GuestStep } from "../test/interop/guest/runner.ts";

const MiB = 1024 * 1024;
const IMAGE_BYTES = 256 * MiB;
const QUEUES = 2;
const SERIAL = "virtio-ts-demo";
const HELLO = "Hello from the guest, written through virtio-ts.";
const RUN_TIMEOUT_MS = 300_000;

const sh = promisify(execFile);
const t0 = Date.now();
const elapsed = (): string => `${((Date.now() - t0) / 1000).toFixed(1)} s`;
const say = (line: string): void => void process.stdout.write(`${line}\n`);

/** The guest's steps; each prints `key=value` lines the summary reads. */
const STEPS: readonly GuestStep[] = [
  {
    name: "disk",
    sh: `d=\${VTS_DISK#/dev/}; q=/sys/block/$d
echo "device=$VTS_DISK bytes=$(($(cat $q/size) * 512)) serial=$(cat $q/serial) queues=$(ls $q/mq | wc -l)"
echo "ro=$(cat $q/ro) lbs=$(cat $q/queue/logical_block_size) cache=$(cat $q/queue/write_cache | tr ' ' -)"`,
  },
  { name: "mkfs", sh: "mkfs.ext4 -q -F -L virtio-ts $VTS_DISK && echo mkfs=ok" },
  {
    name: "write",
    sh: `mount -t ext4 $VTS_DISK /mnt
echo "${HELLO}" > /mnt/hello.txt
mkdir -p /mnt/data
i=1
while [ $i -le 16 ]; do dd if=/dev/urandom of=/mnt/data/file$i bs=64k count=$i 2>/dev/null; i=$((i + 1)); done
cp -a /bin /usr/sbin /mnt/data/
(cd /mnt && find . -type f | sort | xargs sha256sum) > /tmp/sums
sync
echo "files=$(wc -l < /tmp/sums) kib=$(du -sk /mnt | cut -f1)"
umount /mnt`,
  },
  {
    name: "verify",
    sh: `mount -t ext4 -o ro $VTS_DISK /mnt
cd /mnt && sha256sum -c -s /tmp/sums && echo "verified=$(wc -l < /tmp/sums)"
cd / && umount /mnt`,
  },
  { name: "fsck", sh: "e2fsck -f -n $VTS_DISK && echo fsck=clean" },
  {
    name: "fio",
    sh: `mount -t ext4 $VTS_DISK /mnt
fio --name=demo --directory=/mnt --size=16M --numjobs=${QUEUES} --cpus_allowed=0-${QUEUES - 1} \\
  --cpus_allowed_policy=split --ioengine=libaio --direct=1 --thread --rw=randwrite --bs=4k \\
  --iodepth=32 --verify=crc32c --verify_fatal=1 --do_verify=1 --group_reporting
rm -f /mnt/demo.*
umount /mnt
e2fsck -f -n $VTS_DISK >/dev/null && echo fsck-after-fio=clean`,
  },
];

/** What each step shows, for the progress lines. */
const STEP_TEXT: Readonly<Record<string, string>> = {
  disk: "the guest's virtio_blk driver sees the disk",
  mkfs: "mkfs.ext4",
  write: "mounted, files written, sha256 of each recorded, unmounted",
  verify: "remounted read-only, every checksum verified",
  fsck: "e2fsck -f -n: clean",
  fio: "fio 4 KiB random writes at iodepth 32 with crc32c verify, fsck again",
};

/** `key=value` pairs of a step's output. */
function values(r: GuestRunResult, step: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of r.step(step).output.matchAll(/([a-z-]+)=(\S+)/g)) out[m[1]!] = m[2]!;
  return out;
}

/** Prints each step's begin and end as the guest reaches it. */
function progress(): (serialLog: string) => void {
  let seen = 0;
  return (log) => {
    const lines = log.split("\n");
    for (; seen < lines.length - 1; seen++) {
      const line = lines[seen]!.replace(/\r/g, "");
      let m: RegExpExecArray | null;
      if ((m = /^VTS-BOOT \d+ .*uptime=([\d.]+)/.exec(line)))
        say(`  guest: Linux up after ${m[1]} s of guest time, /init runs the steps`);
      else if ((m = /^VTS-END (\S+) rc=(\d+)/.exec(line)))
        say(
          `  guest: ${STEP_TEXT[m[1]!] ?? m[1]}${m[2] === "0" ? "" : ` FAILED (rc ${m[2]})`}  [${elapsed()}]`,
        );
    }
  };
}

async function startBackend(image: string, socket: string): Promise<Backend> {
  const { cmd, args } = virtioTsCommand();
  const flags = ["--socket-path", socket, "--image", image, "--num-queues", String(QUEUES)];
  say(`$ virtio-ts vhost-user-blk ${[...flags, "--serial", SERIAL].join(" ")}`);
  return spawnBackend(
    "virtio-ts vhost-user-blk",
    cmd,
    [...args, "vhost-user-blk", ...flags, "--serial", SERIAL],
    socket,
    { stdoutLine: /listening on / },
  );
}

/** From the host, after the backend stopped: e2fsck and a file the guest wrote. */
async function hostCheck(image: string): Promise<{ fsck: string; hello: string }> {
  await sh("e2fsck", ["-f", "-n", image]);
  const { stdout } = await sh("debugfs", ["-R", "cat /hello.txt", image]);
  return { fsck: "clean", hello: stdout.trim() };
}

function summary(r: GuestRunResult, host: { fsck: string; hello: string }, stop: string): string {
  const d = values(r, "disk");
  const w = values(r, "write");
  const fio = r.step("fio").output;
  const iops = /write: IOPS=([^,]+), BW=([^ ]+)/.exec(fio);
  const issued = /issued rwts: total=(\d+),(\d+)/.exec(fio);
  const boot = r.boots[0]?.hostInitMs;
  const secs = (name: string): string => {
    const s = r.step(name);
    return s.ended === null ? "?" : `${(s.ended - s.began).toFixed(1)} s`;
  };
  const mib = (bytes: string | undefined): string => `${Number(bytes) / MiB} MiB`;
  return [
    "",
    "Summary",
    `  disk     ${d.device} ${mib(d.bytes)}, serial ${d.serial}, ${d.queues} queues, ${d.lbs}-byte blocks, write cache: ${d.cache?.replace(/-/g, " ")}, ro=${d.ro}`,
    `  guest    booted to /init in ${boot === undefined ? "?" : (boot / 1000).toFixed(1)} s (QEMU TCG, ${QUEUES} vCPUs)`,
    `  ext4     mkfs ${secs("mkfs")}; wrote ${w.files} files (${(Number(w.kib) / 1024).toFixed(1)} MiB) in ${secs("write")}; sha256 of all ${values(r, "verify").verified} verified after a remount; e2fsck clean`,
    `  fio      4 KiB random writes, iodepth 32, ${QUEUES} jobs on ${QUEUES} queues: ${iops ? `IOPS ${iops[1]}, ${iops[2]}` : "?"}; crc32c verify of ${issued ? issued[2] : "?"} blocks passed (${secs("fio")})`,
    `  host     e2fsck -f -n on the image: ${host.fsck}; /hello.txt read from the image: "${host.hello}"`,
    `  stop     ${stop}`,
    `  total    ${elapsed()}`,
  ].join("\n");
}

async function main(): Promise<void> {
  say("virtio-ts guest demo: a Linux guest uses a disk served by virtio-ts over vhost-user\n");
  say("[1/5] prerequisites (QEMU, busybox, e2fsprogs, fio, a Debian kernel) ...");
  const { kernel, installed, kernelDownloaded } = await ensureGuestPrereqs();
  await ensureInitramfs(kernel, { fio: true });
  const got = [...installed, ...(kernelDownloaded ? [`kernel ${kernel.release}`] : [])];
  say(
    `  ${got.length > 0 ? `installed ${got.join(", ")}` : "all present"}; guest kernel ${kernel.release}  [${elapsed()}]`,
  );

  const dir = process.env.VIRTIO_TS_DEMO_DIR ?? join(REPO_ROOT, ".cache", "guest-demo");
  mkdirSync(dir, { recursive: true });
  const image = join(dir, "disk.img");
  const socket = join(dir, "vhost-user-blk.sock");
  rmSync(image, { force: true });
  writeFileSync(image, "");
  truncateSync(image, IMAGE_BYTES);
  say(`[2/5] disk image ${image}: ${IMAGE_BYTES / MiB} MiB, sparse, empty`);

  say("[3/5] backend");
  const backend = await startBackend(image, socket);
  say(`  listening on ${socket}  [${elapsed()}]`);

  say(`[4/5] guest: QEMU q35 (TCG), ${QUEUES} vCPUs, vhost-user-blk-pci num-queues=${QUEUES}`);
  let r: GuestRunResult;
  try {
    r = await runGuest({
      disk: { kind: "vhost-user", socket, numQueues: QUEUES },
      smp: QUEUES,
      fio: true,
      timeoutMs: RUN_TIMEOUT_MS,
      steps: STEPS,
      onSerial: progress(),
      diagnostics: () => backend.diagnostics(),
      abortIf: () => (backend.status ? "the backend exited during the run" : undefined),
    });
  } catch (e) {
    await backend.stop();
    throw e;
  }
  say(`  guest powered off  [${elapsed()}]`);

  say("[5/5] shutdown and host check");
  const status = await backend.stop();
  if (status.code !== 0)
    throw new Error(`the backend did not stop cleanly\n${backend.diagnostics()}`);
  if (existsSync(socket)) throw new Error(`the backend left its socket ${socket} behind`);
  const stop = "guest powered off; backend stopped on SIGTERM (exit 0), socket removed";
  const host = await hostCheck(image);
  if (host.hello !== HELLO) throw new Error(`/hello.txt in the image reads "${host.hello}"`);
  say(summary(r, host, stop));
  say(`\nThe image stays at ${image}; serve it yourself with`);
  say(`  npx virtio-ts vhost-user-blk --socket-path /tmp/vhost-user-blk.sock --image ${image}`);
  say("and see docs/cli.md for the QEMU and cloud-hypervisor command lines.");
}

main().catch((e: unknown) => {
  process.stderr.write(
    `\nguest demo FAILED after ${elapsed()}: ${e instanceof Error ? e.message : String(e)}\n`,
  );
  process.exit(1);
});

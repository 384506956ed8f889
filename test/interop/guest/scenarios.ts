/**
 * Real-guest scenarios for any vhost-user-blk backend: each one creates a
 * disk image, starts the backend through a {@link StartBackend}, boots Linux
 * against it and checks what the guest's virtio_blk driver and the host
 * image show. `guestScenarios(label, start)` registers them all as node:test
 * tests, so a new backend is covered with one line.
 *
 * @module
 */
import { before, describe, test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import {
  closeSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  truncateSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Backend, StartBackend } from "./backends.ts";
import { ensureInitramfs } from "./initramfs.ts";
import { ensureGuestPrereqs } from "./install.ts";
import { runGuest, type GuestRunOptions, type GuestRunResult } from "./runner.ts";

const MiB = 1024 * 1024;
/** Size of every test image. */
export const IMAGE_BYTES = 64 * MiB;
/** Deadline of one guest run without fio (boot is ~5 s, steps a few s). */
const RUN_TIMEOUT_MS = 120_000;
/** Deadline of a run with fio. */
const FIO_TIMEOUT_MS = 240_000;
/** node:test deadline of one scenario: the run, plus backend start and stop. */
const TEST_TIMEOUT_MS = FIO_TIMEOUT_MS + 60_000;
/** Installing packages and the kernel on a fresh machine. */
const SETUP_TIMEOUT_MS = 30 * 60_000;

/** What a scenario gets while its backend runs. */
export interface ScenarioEnv {
  readonly dir: string;
  readonly image: string;
  readonly socket: string;
  readonly backend: Backend;
  /** Run the guest against this backend (disk, deadline and diagnostics filled in). */
  guest(
    o: Omit<GuestRunOptions, "disk" | "timeoutMs"> & { timeoutMs?: number },
  ): Promise<GuestRunResult>;
}

/** Backend and image settings of one scenario. */
export interface ScenarioSetup {
  readonly numQueues: number;
  readonly readOnly?: boolean;
  /** Bytes written at offset 0 of the image before the backend starts. */
  readonly prefill?: Uint8Array;
  /** More flags for this project's CLI (other backends ignore them). */
  readonly cliArgs?: readonly string[];
}

/** A backend exit after our SIGTERM counts as clean when it is code 0 or the signal itself. */
function cleanStop(s: { code: number | null; signal: NodeJS.Signals | null }): boolean {
  return s.code === 0 || (s.code === null && s.signal === "SIGTERM");
}

/**
 * Create a sparse image, start the backend on it, run `fn`, stop the
 * backend. Fails if the backend died during the run or did not stop
 * cleanly. The work directory is removed on success and kept on failure.
 */
export async function withBackend<T>(
  start: StartBackend,
  setup: ScenarioSetup,
  fn: (env: ScenarioEnv) => Promise<T>,
): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), "vts-scn-"));
  const image = join(dir, "disk.img");
  const socket = join(dir, "vhost-user.sock");
  const fd = openSync(image, "w");
  if (setup.prefill) writeSync(fd, setup.prefill, 0, setup.prefill.length, 0);
  closeSync(fd);
  truncateSync(image, IMAGE_BYTES);
  const backend = await start({ socketPath: socket, imagePath: image, ...setup });
  const env: ScenarioEnv = {
    dir,
    image,
    socket,
    backend,
    guest: (o) =>
      runGuest({
        ...o,
        timeoutMs: o.timeoutMs ?? RUN_TIMEOUT_MS,
        disk: {
          kind: "vhost-user",
          socket,
          numQueues: setup.numQueues,
          packed: backend.packed === true,
        },
        diagnostics: () => backend.diagnostics(),
        abortIf: () => (backend.status ? `${backend.label} exited during the run` : undefined),
      }),
  };
  let result: T;
  try {
    result = await fn(env);
    if (backend.status)
      throw new Error(`${backend.label} exited during the run\n${backend.diagnostics()}`);
  } catch (e) {
    await backend.stop();
    (e as Error).message += `\n(scenario files kept in ${dir})`;
    throw e;
  }
  const stopped = await backend.stop();
  assert.ok(cleanStop(stopped), `${backend.label} did not stop cleanly\n${backend.diagnostics()}`);
  rmSync(dir, { recursive: true, force: true });
  return result;
}

/** Timing lines for the test log. */
export function timings(r: GuestRunResult): string {
  const at = (ms: number | undefined): string => (ms === undefined ? "?" : (ms / 1000).toFixed(1));
  const boots = r.boots
    .map((b) => `boot ${b.boot} reached /init after ${at(b.hostInitMs)} s`)
    .join(", ");
  const steps = r.steps
    .map((s) => `${s.name} ${s.ended === null ? "?" : (s.ended - s.began).toFixed(2)} s`)
    .join(", ");
  return `QEMU wall ${(r.wallMs / 1000).toFixed(1)} s; ${boots}; steps: ${steps}`;
}

/** Shell: `$dev` = the disk under test's name (e.g. `vda`), `$q` = its /sys/block directory. */
const SYSFS = "dev=${VTS_DISK#/dev/}; q=/sys/block/$dev";

/** Shell: make 8 files of 64..512 KiB from /dev/urandom plus a directory tree under $1. */
const WRITE_FILES = `
i=1
while [ $i -le 8 ]; do
  dd if=/dev/urandom of="$1/file$i" bs=64k count=$i 2>/dev/null
  i=$((i + 1))
done
mkdir -p "$1/tree"
cp -a /bin /usr/sbin "$1/tree/"
`;

/** Shell: checksum every regular file under $1 into $2, sorted. */
const SUM_FILES = `(cd "$1" && find . -type f ! -name SUMS | sort | xargs sha256sum) > "$2"; wc -l < "$2"`;

/**
 * mkfs.ext4, mount, write files, sync, umount, `e2fsck -f -n` clean,
 * remount and compare checksums. With `numQueues` > 1 the guest gets as many
 * vCPUs and writers run pinned to each CPU. Every virtqueue must have
 * interrupted the guest (its MSI-X vector `virtioN-req.Q` in
 * /proc/interrupts), i.e. completed requests.
 */
export async function ext4Scenario(
  start: StartBackend,
  numQueues: number,
): Promise<GuestRunResult> {
  return withBackend(start, { numQueues }, async (env) => {
    const writers =
      numQueues > 1
        ? `
for c in $(seq 0 ${numQueues - 1}); do
  mkdir -p /mnt/cpu$c
  taskset -c $c sh -c 'set -e; cd /mnt/cpu'$c'; i=0; while [ $i -lt 16 ]; do dd if=/dev/urandom of=f$i bs=64k count=4 conv=fsync 2>/dev/null; i=$((i+1)); done' &
done
wait
`
        : "";
    const r = await env.guest({
      smp: numQueues,
      steps: [
        {
          name: "device",
          // device/features: one character per negotiated feature bit, bit 0 first.
          sh: `${SYSFS}; echo ro=$(cat $q/ro) size=$(cat $q/size) mq=$(ls $q/mq | wc -l) packed=$(cut -c35 $q/device/features)`,
        },
        { name: "mkfs", sh: "mkfs.ext4 -q -F $VTS_DISK" },
        {
          name: "write",
          sh: `mount -t ext4 $VTS_DISK /mnt\nset -- /mnt\n${WRITE_FILES}${writers}set -- /mnt /tmp/sums\n${SUM_FILES}\nsync\numount /mnt`,
        },
        { name: "fsck", sh: "e2fsck -f -n $VTS_DISK" },
        {
          name: "verify",
          sh: "mount -t ext4 -o ro $VTS_DISK /mnt\ncd /mnt\nsha256sum -c -s /tmp/sums\necho verified $(wc -l < /tmp/sums) files\ncd /\numount /mnt",
        },
        {
          name: "queues",
          // Each virtqueue has its own MSI-X vector "virtioN-req.Q": count the interrupts.
          sh: `${SYSFS}; v=$(basename "$(readlink -f $q/device)")\ngrep -E " $v-req\\.[0-9]+$" /proc/interrupts`,
        },
      ],
    });
    const dev = /ro=(\d+) size=(\d+) mq=(\d+) packed=(\d)/.exec(r.step("device").output);
    assert.deepEqual(
      dev?.slice(1).map(Number),
      [0, IMAGE_BYTES / 512, numQueues, env.backend.packed === true ? 1 : 0],
      r.step("device").output,
    );
    assert.match(r.step("verify").output, /verified [1-9]\d* files/);
    const irqs = r
      .step("queues")
      .output.split("\n")
      .filter((l) => /-req\.\d+$/.test(l.trim()))
      .map((l) =>
        l
          .trim()
          .split(/\s+/)
          .slice(1)
          .filter((c) => /^\d+$/.test(c))
          .map(Number),
      )
      .map((counts) => counts.reduce((a, b) => a + b, 0));
    assert.equal(irqs.length, numQueues, r.step("queues").output);
    for (const n of irqs)
      assert.ok(n > 0, `every queue completed requests:\n${r.step("queues").output}`);
    return r;
  });
}

/**
 * fio: 4 KiB random writes over 16 MiB at iodepth 32 (libaio, O_DIRECT),
 * then fio reads everything back and checks each block's crc32c
 * (`--verify_fatal=1`). With `numQueues` > 1, one job per vCPU on its own
 * 16 MiB region.
 */
export async function fioScenario(start: StartBackend, numQueues: number): Promise<GuestRunResult> {
  return withBackend(start, { numQueues }, async (env) => {
    const jobs =
      numQueues > 1
        ? `--numjobs=${numQueues} --offset_increment=16M --cpus_allowed=0-${numQueues - 1} --cpus_allowed_policy=split`
        : "";
    const r = await env.guest({
      smp: numQueues,
      fio: true,
      timeoutMs: FIO_TIMEOUT_MS,
      steps: [
        {
          name: "fio",
          sh:
            "fio --name=randwrite-verify --filename=$VTS_DISK --ioengine=libaio --direct=1 --thread " +
            "--rw=randwrite --bs=4k --size=16M --iodepth=32 --verify=crc32c --verify_fatal=1 " +
            `--do_verify=1 --group_reporting ${jobs}`,
        },
      ],
    });
    const out = r.step("fio").output;
    assert.match(out, /err= 0/, out);
    const issued = /issued rwts: total=(\d+),(\d+)/.exec(out);
    const blocks = (16 * MiB * numQueues) / 4096;
    assert.deepEqual(
      issued?.slice(1).map(Number),
      [blocks, blocks],
      `all blocks written and verified:\n${out}`,
    );
    return r;
  });
}

/**
 * Two boots in one QEMU run: the first writes a filesystem and reboots
 * (`reboot -f`: the device is reset and started again), the second finds
 * the filesystem clean and every file intact.
 */
export async function rebootScenario(start: StartBackend): Promise<GuestRunResult> {
  const pattern = randomBytes(256 * 1024);
  return withBackend(start, { numQueues: 1 }, async (env) => {
    const r = await env.guest({
      boots: 2,
      files: { pattern },
      steps: [
        { name: "write", boot: 1, sh: "mkfs.ext4 -q -F $VTS_DISK\nmount -t ext4 $VTS_DISK /mnt" },
        {
          name: "files",
          boot: 1,
          sh: `set -- /mnt\n${WRITE_FILES}cp /vts/files/pattern /mnt/pattern\nset -- /mnt /mnt/SUMS\n${SUM_FILES}\nsync\numount /mnt`,
        },
        { name: "fsck", boot: 2, sh: "e2fsck -f -n $VTS_DISK" },
        {
          name: "verify",
          boot: 2,
          sh: "mount -t ext4 $VTS_DISK /mnt\ncd /mnt\ncmp pattern /vts/files/pattern\nsha256sum -c -s SUMS\necho verified $(wc -l < SUMS) files\ncd /\numount /mnt",
        },
      ],
    });
    assert.deepEqual(
      r.boots.map((b) => b.boot),
      [1, 2],
    );
    assert.match(r.step("verify", 2).output, /verified [1-9]\d* files/);
    return r;
  });
}

/**
 * A read-only export: the guest sees `/sys/block/vda/ro` = 1, reads return
 * the image's content, writes and mkfs fail, and the image is unchanged.
 */
export async function readOnlyScenario(start: StartBackend): Promise<GuestRunResult> {
  const prefill = randomBytes(MiB);
  const sha = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");
  return withBackend(start, { numQueues: 1, readOnly: true, prefill }, async (env) => {
    const before = sha(readFileSync(env.image));
    const r = await env.guest({
      steps: [
        { name: "ro-flag", sh: `${SYSFS}; echo ro=$(cat $q/ro)\ntest "$(cat $q/ro)" = 1` },
        { name: "read", sh: "echo sha=$(dd if=$VTS_DISK bs=64k count=16 2>/dev/null | sha256sum)" },
        {
          name: "write-fails",
          sh: "if dd if=/dev/zero of=$VTS_DISK bs=4k count=1 oflag=direct conv=notrunc; then echo WRITE-SUCCEEDED; exit 1; fi",
        },
        {
          name: "mkfs-fails",
          sh: "if mkfs.ext4 -q -F $VTS_DISK; then echo MKFS-SUCCEEDED; exit 1; fi",
        },
      ],
    });
    assert.match(r.step("ro-flag").output, /ro=1/);
    assert.match(r.step("read").output, new RegExp(`sha=${sha(prefill)}`), "guest reads the image");
    assert.equal(sha(readFileSync(env.image)), before, "image unchanged");
    return r;
  });
}

/** Where {@link hostCheckScenario} writes: [byte offset, bytes]. */
const HOST_CHECK_WRITES = [
  [5 * MiB + 12 * 4096, 192 * 1024], // 4 KiB aligned, not MiB aligned
  [40 * MiB + 7 * 512, 512], // one odd 512-byte sector
  [IMAGE_BYTES - 4096, 4096], // the last block
] as const;

/**
 * The guest writes known data at known offsets with O_DIRECT and powers
 * off; the host then finds exactly those bytes there and zeros everywhere
 * else in the image.
 */
export async function hostCheckScenario(start: StartBackend): Promise<GuestRunResult> {
  const chunks = HOST_CHECK_WRITES.map(([, len]) => randomBytes(len));
  const files = Object.fromEntries(chunks.map((c, i) => [`chunk${i}`, c]));
  return withBackend(start, { numQueues: 1 }, async (env) => {
    const writes = HOST_CHECK_WRITES.map(([off, len], i) => {
      const bs = len % 4096 === 0 ? 4096 : 512;
      const dd = `dd if=/vts/files/chunk${i} of=$VTS_DISK bs=${bs} seek=${off / bs} oflag=direct conv=notrunc,fsync`;
      return `${dd}\ndd if=$VTS_DISK bs=${bs} skip=${off / bs} count=${len / bs} iflag=direct 2>/dev/null | cmp - /vts/files/chunk${i}`;
    });
    const r = await env.guest({ files, steps: [{ name: "write", sh: writes.join("\n") }] });
    const image = readFileSync(env.image);
    assert.equal(image.length, IMAGE_BYTES);
    const expected = Buffer.alloc(IMAGE_BYTES);
    HOST_CHECK_WRITES.forEach(([off], i) => chunks[i]?.copy(expected, off));
    HOST_CHECK_WRITES.forEach(([off, len], i) => {
      assert.ok(
        image.subarray(off, off + len).equals(chunks[i] ?? Buffer.alloc(0)),
        `chunk ${i} at ${off}`,
      );
    });
    assert.ok(image.equals(expected), "nothing else in the image changed");
    return r;
  });
}

/**
 * Backend crash and restart under guest I/O (QEMU `reconnect=1`): the guest
 * reads and verifies known data in a loop; after a few passes the host
 * SIGKILLs the backend, starts a new one on the same socket and image, and
 * tells the guest through the extra drive. The guest's reads must continue
 * without error, and a write after the restart must reach the image.
 */
export async function reconnectScenario(start: StartBackend): Promise<GuestRunResult> {
  const data = randomBytes(4 * MiB);
  const dir = mkdtempSync(join(tmpdir(), "vts-scn-"));
  const image = join(dir, "disk.img");
  const flag = join(dir, "flag.img");
  const socket = join(dir, "vhost-user.sock");
  writeFileSync(image, data);
  truncateSync(image, IMAGE_BYTES);
  writeFileSync(flag, Buffer.alloc(4096));
  const setup = { socketPath: socket, imagePath: image, numQueues: 1 };
  let backend = await start(setup);
  let restart: Promise<void> | undefined;
  let restartError: string | undefined;
  const restartBackend = async (): Promise<void> => {
    backend.kill();
    await backend.stop();
    backend = await start(setup);
    writeFileSync(flag, "restarted\n"); // the guest polls this with O_DIRECT reads
  };
  try {
    const verify =
      "dd if=$VTS_DISK bs=64k count=64 iflag=direct 2>/dev/null | cmp - /vts/files/data";
    const r = await runGuest({
      disk: {
        kind: "vhost-user",
        socket,
        numQueues: 1,
        reconnectSeconds: 1,
        packed: backend.packed === true,
      },
      extraDrive: { image: flag, readOnly: true },
      files: { data },
      timeoutMs: RUN_TIMEOUT_MS,
      diagnostics: () => backend.diagnostics(),
      onSerial: (log) => {
        if (restart || !/^pass 3\r?$/m.test(log)) return;
        restart = restartBackend().catch((e: unknown) => {
          restartError = `backend restart failed: ${(e as Error).message}`;
        });
      },
      abortIf: () => restartError,
      steps: [
        {
          name: "io-across-restart",
          sh: `i=0
while :; do
  i=$((i + 1))
  ${verify}
  echo "pass $i"
  if dd if=$VTS_EXTRA bs=512 count=1 iflag=direct 2>/dev/null | grep -q restarted; then break; fi
  [ $i -lt 100000 ]
done
echo "restart seen after pass $i"`,
        },
        {
          name: "io-after-restart",
          sh: `${verify}
dd if=/vts/files/data of=$VTS_DISK bs=64k seek=512 oflag=direct conv=notrunc,fsync 2>/dev/null
dd if=$VTS_DISK bs=64k skip=512 count=64 iflag=direct 2>/dev/null | cmp - /vts/files/data
echo after-restart-ok`,
        },
      ],
    });
    await restart;
    assert.match(r.step("io-across-restart").output, /restart seen after pass ([4-9]|\d\d+)/);
    assert.match(r.step("io-after-restart").output, /after-restart-ok/);
    const stopped = await backend.stop();
    assert.ok(
      cleanStop(stopped),
      `${backend.label} did not stop cleanly\n${backend.diagnostics()}`,
    );
    const img = readFileSync(image);
    assert.ok(
      img.subarray(32 * MiB, 36 * MiB).equals(data),
      "write after the restart reached the image",
    );
    rmSync(dir, { recursive: true, force: true });
    return r;
  } catch (e) {
    await restart;
    await backend.stop();
    (e as Error).message += `\n(scenario files kept in ${dir})`;
    throw e;
  }
}

/** Which scenarios a backend runs (all by default). */
export interface ScenarioChoice {
  /**
   * The backend killed and restarted under guest I/O (QEMU reconnects; this
   * project's backend resumes from its inflight log, split or packed ring:
   * docs/reliability.md). `false` leaves it out.
   */
  readonly reconnect?: boolean;
}

/**
 * Register every scenario as a node:test test under `describe(label)`.
 * Setup (packages, kernel, initramfs) runs once in a `before` hook with its
 * own, longer deadline.
 */
export function guestScenarios(
  label: string,
  start: StartBackend,
  choice: ScenarioChoice = {},
): void {
  describe(`real Linux guest against ${label}`, () => {
    before(
      async () => {
        const { kernel } = await ensureGuestPrereqs();
        await ensureInitramfs(kernel, { fio: true });
      },
      { timeout: SETUP_TIMEOUT_MS },
    );
    const run = (name: string, fn: () => Promise<GuestRunResult>): void => {
      test(name, { timeout: TEST_TIMEOUT_MS }, async (t: TestContext) => {
        const r = await fn();
        t.diagnostic(timings(r));
      });
    };
    run("ext4 on 1 queue: mkfs, write, fsck clean, checksums after remount", () =>
      ext4Scenario(start, 1),
    );
    run("ext4 on 2 queues, 2 vCPUs: both queues carry I/O", () => ext4Scenario(start, 2));
    run("fio 4 KiB random writes at iodepth 32 with crc32c verify", () => fioScenario(start, 1));
    run("fio on 2 queues, one job per vCPU, crc32c verify", () => fioScenario(start, 2));
    run("guest reboot in the same QEMU run keeps the data", () => rebootScenario(start));
    run("read-only export: ro=1, reads match the image, writes fail", () =>
      readOnlyScenario(start),
    );
    run("after poweroff the host image holds exactly what the guest wrote", () =>
      hostCheckScenario(start),
    );
    if (choice.reconnect !== false)
      run("backend killed and restarted under guest I/O: QEMU reconnects, I/O goes on", () =>
        reconnectScenario(start),
      );
  });
}

/**
 * The backend SIGKILLed and restarted again and again under a real guest's
 * I/O (QEMU `-chardev socket,reconnect=1`): with inflight I/O tracking the
 * restarted backend resubmits exactly what the killed one left unfinished,
 * so the guest sees no error, nothing twice and nothing lost.
 *
 * The guest runs its workload in a loop — fio random writes of mixed sizes
 * (4 KiB–512 KiB) at iodepth 32 with crc32c verification, or files written
 * and synced on ext4 — while the host kills and restarts the backend; after
 * the last restart the host tells the guest through the extra drive, the
 * guest finishes its pass and checks everything (fio's verify, or `e2fsck -f
 * -n` and every file's checksum), and the host image must match the disk as
 * the guest read it at the end.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { Backend, StartBackend } from "./backends.ts";
import { runGuest, type GuestRunResult } from "./runner.ts";
import { IMAGE_BYTES } from "./scenarios.ts";

/** What one run does. */
export interface KillRestartOptions {
  readonly numQueues: number;
  readonly workload: "fio" | "ext4";
  /** Kills (and restarts) during the workload. */
  readonly kills: number;
  /** Flags for this project's CLI. */
  readonly cliArgs?: readonly string[];
  /** Deadline of the guest run (default 600 s). */
  readonly timeoutMs?: number;
}

/** What a run saw. */
export interface KillRestartResult {
  readonly run: GuestRunResult;
  /** Passes of the workload the guest completed. */
  readonly passes: number;
  readonly kills: number;
  /** Requests the restarted backends said they resubmitted from the inflight log. */
  readonly resubmitted: number;
}

/** The guest reports its disk's requests in flight (sysfs) three times a second. */
const REPORT_INFLIGHT = `d=\${VTS_DISK#/dev/}
(while :; do set -- $(cat /sys/block/$d/inflight); echo "INFLIGHT $(($1 + $2))"; sleep 0.3; done) &
reporter=$!`;

/** The loop's end: the guest polls the extra drive with O_DIRECT reads. */
const UNTIL_DONE = `if dd if=$VTS_EXTRA bs=512 count=1 iflag=direct 2>/dev/null | grep -q kills-done; then break; fi
  [ $i -lt 100000 ]`;

function fioLoop(numQueues: number): string {
  const jobs =
    numQueues > 1
      ? `--numjobs=${numQueues} --offset_increment=32M --cpus_allowed=0-${numQueues - 1} --cpus_allowed_policy=split`
      : "";
  return `${REPORT_INFLIGHT}
echo KILL-WINDOW
i=0
while :; do
  i=$((i + 1))
  fio --name=kill-verify --filename=$VTS_DISK --ioengine=libaio --direct=1 --thread \\
    --rw=randwrite --bsrange=4k-512k --size=24M --iodepth=32 --verify=crc32c --verify_fatal=1 \\
    --do_verify=1 --randseed=$i --group_reporting ${jobs} > /tmp/fio.out 2>&1
  rc=$?
  if [ $rc -ne 0 ] || ! grep -q "err= 0" /tmp/fio.out; then cat /tmp/fio.out; echo "FAILED pass $i rc=$rc"; exit 1; fi
  echo "pass $i ok"
  ${UNTIL_DONE}
done
echo "passes $i"
kill $reporter
md5sum $VTS_DISK`;
}

function ext4Loop(): string {
  return `mkfs.ext4 -q -F $VTS_DISK
mount -t ext4 $VTS_DISK /mnt
${REPORT_INFLIGHT}
echo KILL-WINDOW
i=0
while :; do
  i=$((i + 1))
  mkdir /mnt/d$i
  for f in 0 1 2 3; do cp /vts/files/data /mnt/d$i/f$f || { echo "FAILED cp pass $i"; exit 1; }; done
  sync || { echo "FAILED sync pass $i"; exit 1; }
  rm -rf /mnt/d$((i - 3))
  echo "pass $i ok"
  ${UNTIL_DONE}
done
echo "passes $i"
kill $reporter
umount /mnt
e2fsck -f -n $VTS_DISK || { echo "FAILED fsck"; exit 1; }
mount -t ext4 -o ro $VTS_DISK /mnt
want=$(md5sum < /vts/files/data)
n=0
for f in /mnt/d*/f*; do [ "$(md5sum < $f)" = "$want" ] || { echo "FAILED $f"; exit 1; }; n=$((n + 1)); done
echo "verified $n files"
umount /mnt
md5sum $VTS_DISK`;
}

/**
 * Kills and restarts the backend `kills` times, 1–3 s apart and each time
 * when the guest last reported at least `atInflight` requests in flight
 * (waiting at most 10 s for that), then raises the flag.
 */
class Killer {
  backend: Backend;
  kills = 0;
  resubmitted = 0;
  /** Requests in flight on the guest's disk as it last reported them. */
  guestInflight = 0;
  error: string | undefined;
  #run: Promise<void> | undefined;

  constructor(
    backend: Backend,
    private readonly restart: () => Promise<Backend>,
    private readonly flag: string,
    /** Requests the guest must report in flight before a kill. */
    private readonly atInflight: number,
  ) {
    this.backend = backend;
  }

  start(kills: number): void {
    this.#run ??= this.#loop(kills).catch((e: unknown) => {
      this.error = `backend restart failed: ${(e as Error).message}`;
    });
  }

  async #loop(kills: number): Promise<void> {
    for (let k = 0; k < kills; k++) {
      await sleep(1000 + Math.random() * 2000);
      for (let w = 0; w < 100 && this.guestInflight < this.atInflight; w++) await sleep(100);
      this.backend.kill();
      await this.backend.stop();
      this.count(this.backend);
      this.backend = await this.restart();
      this.kills++;
    }
    await sleep(1500);
    writeFileSync(this.flag, "kills-done\n");
  }

  /** Adds what `backend` logged as resubmitted (`queue N: resubmitting K request(s) ...`). */
  count(backend: Backend): void {
    for (const m of backend.diagnostics().matchAll(/resubmitting (\d+) request/g))
      this.resubmitted += Number(m[1]);
  }

  async done(): Promise<void> {
    await this.#run;
  }
}

/** Runs the guest workload while the backend is killed and restarted `o.kills` times. */
export async function killRestartScenario(
  start: StartBackend,
  o: KillRestartOptions,
): Promise<KillRestartResult> {
  const dir = mkdtempSync(join(tmpdir(), "vts-kill-"));
  const image = join(dir, "disk.img");
  const flag = join(dir, "flag.img");
  const socket = join(dir, "vhost-user.sock");
  writeFileSync(image, "");
  truncateSync(image, IMAGE_BYTES);
  writeFileSync(flag, Buffer.alloc(4096));
  const setup = {
    socketPath: socket,
    imagePath: image,
    numQueues: o.numQueues,
    ...(o.cliArgs ? { cliArgs: o.cliArgs } : {}),
  };
  // fio keeps many requests in flight; ext4 writes in short bursts.
  const atInflight = o.workload === "fio" ? 4 : 1;
  const killer = new Killer(await start(setup), () => start(setup), flag, atInflight);
  try {
    const run = await runGuest({
      disk: {
        kind: "vhost-user",
        socket,
        numQueues: o.numQueues,
        reconnectSeconds: 1,
        packed: killer.backend.packed === true,
      },
      extraDrive: { image: flag, readOnly: true },
      smp: o.numQueues,
      fio: o.workload === "fio",
      files: { data: randomBytes(2 << 20) },
      timeoutMs: o.timeoutMs ?? 600_000,
      diagnostics: () => killer.backend.diagnostics(),
      onSerial: (log) => {
        const last = log.lastIndexOf("INFLIGHT ");
        if (last >= 0) killer.guestInflight = Number(/^INFLIGHT (\d+)/.exec(log.slice(last))?.[1]);
        if (log.includes("KILL-WINDOW")) killer.start(o.kills);
      },
      abortIf: () => killer.error,
      steps: [{ name: o.workload, sh: o.workload === "fio" ? fioLoop(o.numQueues) : ext4Loop() }],
    });
    await killer.done();
    const out = run.step(o.workload).output;
    assert.doesNotMatch(out, /FAILED/, out);
    if (o.workload === "ext4") assert.match(out, /verified [1-9]\d* files/, out);
    const passes = Number(/passes (\d+)/.exec(out)?.[1] ?? 0);
    const guestSum = /^([0-9a-f]{32}) /m.exec(out.split("passes")[1] ?? "")?.[1];
    await killer.backend.stop();
    killer.count(killer.backend);
    const hostSum = createHash("md5").update(readFileSync(image)).digest("hex");
    assert.equal(hostSum, guestSum, "the host image holds what the guest read at the end");
    rmSync(dir, { recursive: true, force: true });
    return { run, passes, kills: killer.kills, resubmitted: killer.resubmitted };
  } catch (e) {
    await killer.done();
    await killer.backend.stop();
    (e as Error).message += `\n(scenario files kept in ${dir})`;
    throw e;
  }
}

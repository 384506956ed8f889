/**
 * The soak scenario: a real guest runs fio's mixed random reads and writes
 * (4 KiB, iodepth 32, libaio, O_DIRECT in the guest) for a while, and a
 * watchdog in the guest fails the run when requests are outstanding and no
 * completion arrives for a stall period (from the disk's `inflight` and
 * `stat` counters in sysfs). A hang — a lost wake-up, a request that never
 * completes — then fails with the number of requests stuck, instead of
 * passing as a slow run. Used by the suite (short) and `npm run soak` (long).
 *
 * @module
 */
import assert from "node:assert/strict";
import type { StartBackend } from "./backends.ts";
import type { GuestRunResult } from "./runner.ts";
import { withBackend } from "./scenarios.ts";

/** What one soak run does. */
export interface SoakOptions {
  readonly numQueues: number;
  /** Seconds of fio. */
  readonly seconds: number;
  /** No completion for this long with requests in flight fails the run (default 30). */
  readonly stallSeconds?: number;
  /** Flags for this project's CLI (e.g. `--direct`, `--io-threads 2`). */
  readonly cliArgs?: readonly string[];
}

/** What a soak run measured. */
export interface SoakResult {
  readonly run: GuestRunResult;
  /** fio's read and write I/Os completed. */
  readonly ios: readonly [number, number];
}

/** The guest's script: fio in the background, the stall watchdog in the foreground. */
function soakScript(o: SoakOptions): string {
  const stall = o.stallSeconds ?? 30;
  const jobs =
    o.numQueues > 1
      ? `--numjobs=${o.numQueues} --offset_increment=32M --cpus_allowed=0-${o.numQueues - 1} --cpus_allowed_policy=split`
      : "";
  return [
    `fio --name=soak --filename=$VTS_DISK --ioengine=libaio --direct=1 --thread --rw=randrw --bs=4k ` +
      `--size=32M --iodepth=32 --time_based --runtime=${o.seconds} --group_reporting ${jobs} > /tmp/fio.out 2>&1 &`,
    "pid=$!",
    "d=${VTS_DISK#/dev/}; last=-1; still=0",
    "while kill -0 $pid 2>/dev/null; do",
    "  sleep 2",
    "  set -- $(cat /sys/block/$d/stat); done_ios=$(($1 + $5))",
    "  set -- $(cat /sys/block/$d/inflight); busy=$(($1 + $2))",
    '  if [ "$done_ios" = "$last" ] && [ "$busy" -gt 0 ]; then still=$((still + 2)); else still=0; fi',
    "  last=$done_ios",
    `  if [ $still -ge ${stall} ]; then echo "STALL: $busy requests in flight, no completion for $still s"; exit 1; fi`,
    "done",
    "wait $pid",
    "cat /tmp/fio.out",
  ].join("\n");
}

/** Runs the soak scenario against a backend; fails on a stall, an fio error or no progress. */
export async function soakScenario(start: StartBackend, o: SoakOptions): Promise<SoakResult> {
  return withBackend(
    start,
    { numQueues: o.numQueues, ...(o.cliArgs ? { cliArgs: o.cliArgs } : {}) },
    async (env) => {
      const run = await env.guest({
        smp: o.numQueues,
        fio: true,
        timeoutMs: (o.seconds + 120) * 1000,
        steps: [{ name: "soak", sh: soakScript(o) }],
      });
      const out = run.step("soak").output;
      assert.doesNotMatch(out, /STALL/, out);
      assert.match(out, /err= 0/, out);
      const issued = /issued rwts: total=(\d+),(\d+)/.exec(out);
      assert.ok(issued !== null, out);
      const ios = [Number(issued[1]), Number(issued[2])] as const;
      assert.ok(ios[0] > 0 && ios[1] > 0, `reads and writes completed:\n${out}`);
      return { run, ios };
    },
  );
}

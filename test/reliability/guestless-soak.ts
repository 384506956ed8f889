/**
 * The guest-less soak scenario: the `virtio-ts vhost-user-blk` command
 * driven by the project's own front-end (`VhostUserBlk`) with 4 KiB random
 * reads and writes at depth 32, for a given time, with a stall watchdog and
 * a data check. The same load under which a real guest once hung with the
 * back-end idle (fio randrw QD32, `--direct --writeback`), without the guest.
 *
 * Each of the `depth` workers owns the blocks whose number modulo `depth`
 * is its own, so a block never has two requests at once: a write fills the
 * block with a pattern naming the block and its generation; a read checks
 * the block holds the last generation written (zeros before any). The
 * watchdog fails the run when requests are outstanding and none completes
 * for `stallSeconds`.
 *
 * Used by ./guestless-soak.test.ts (short runs in the suite), by
 * ./multi-export.test.ts (several disks of one process at once) and by
 * `npm run soak -- --guestless` (long runs).
 *
 * @module
 */
import { closeSync, ftruncateSync, openSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { VhostUserBlk } from "../../src/devices/blk/vhost-user-frontend.ts";
import { tempDir } from "../../src/native/test-support.ts";
import { CliProcess } from "../cli/support.ts";

const BLOCK = 4096;

/** One run's settings. */
export interface GuestlessSoakOptions {
  readonly numQueues: number;
  /** Extra flags of `virtio-ts vhost-user-blk` (e.g. `--direct --writeback`). */
  readonly cliArgs: readonly string[];
  readonly seconds: number;
  /** Requests in flight, in total (default 32). */
  readonly depth?: number;
  /** No completion for this long with requests outstanding fails the run (default 10). */
  readonly stallSeconds?: number;
  /** Image size in MiB (default 64). */
  readonly imageMiB?: number;
}

/** What one run did. */
export interface GuestlessSoakResult {
  readonly reads: number;
  readonly writes: number;
  /** The longest time without any completion while requests were outstanding. */
  readonly longestPauseMs: number;
  /** Back-end log lines about lost notifications or kicks it repaired. */
  readonly repaired: number;
}

/** Creates a sparse image of `mib` MiB at `path`; returns the path. */
export function sparseImage(path: string, mib: number): string {
  const fd = openSync(path, "w");
  ftruncateSync(fd, mib << 20);
  closeSync(fd);
  return path;
}

/** Fills `b` with a pattern naming the block and its generation (never all zeros). */
function pattern(b: Uint8Array, block: number, gen: number): void {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  for (let i = 0; i < b.byteLength; i += 8) {
    v.setUint32(i, block, true);
    v.setUint32(i + 4, (gen * 2654435761 + i) >>> 0, true);
  }
}

/** Runs the scenario; rejects on a stall, a data mismatch or a back-end exit. */
export async function guestlessSoak(o: GuestlessSoakOptions): Promise<GuestlessSoakResult> {
  const d = tempDir("virtio-ts-soak-");
  const image = sparseImage(join(d.path, "disk.img"), o.imageMiB ?? 64);
  const sock = join(d.path, "vu.sock");
  const cli = new CliProcess([
    "vhost-user-blk",
    ...["--socket", sock, "--image", image, "--num-queues", String(o.numQueues)],
    ...o.cliArgs,
  ]);
  let disk: VhostUserBlk | undefined;
  try {
    await cli.waitStdout(/listening on/);
    disk = await VhostUserBlk.connect(sock, { numQueues: o.numQueues });
    const r = await drive(
      disk,
      o,
      () => cli.proc.exitCode === null && cli.proc.signalCode === null,
    );
    return {
      ...r,
      repaired: cli.stderr.match(/a notification was lost|no kick arrived/g)?.length ?? 0,
    };
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    throw new Error(`${why}\nback-end stderr:\n${cli.stderr.slice(-4000)}`, { cause: e });
  } finally {
    await disk?.destroy();
    cli.proc.kill("SIGKILL");
    await cli.exited;
    d.remove();
  }
}

/**
 * The workers and the watchdog on one connected disk of `o.imageMiB` MiB;
 * rejects on a stall, a data mismatch or once `alive` says the back-end
 * exited.
 */
export async function drive(
  disk: VhostUserBlk,
  o: Pick<GuestlessSoakOptions, "seconds" | "depth" | "stallSeconds" | "imageMiB">,
  alive: () => boolean,
): Promise<Omit<GuestlessSoakResult, "repaired">> {
  const depth = o.depth ?? 32;
  const blocks = ((o.imageMiB ?? 64) << 20) / BLOCK;
  const gens = new Uint32Array(blocks);
  const count = { reads: 0, writes: 0, outstanding: 0, lastDone: Date.now(), longest: 0 };
  const end = Date.now() + o.seconds * 1000;
  let failure: Error | undefined;
  const worker = async (w: number): Promise<void> => {
    const buf = new Uint8Array(BLOCK);
    const want = new Uint8Array(BLOCK);
    while (Date.now() < end && failure === undefined) {
      const block = w + depth * Math.floor((Math.random() * (blocks - w)) / depth);
      const write = Math.random() < 0.5;
      count.outstanding++;
      if (write) {
        pattern(buf, block, gens[block]! + 1);
        await disk.write(block * BLOCK, buf);
        gens[block]!++;
        count.writes++;
      } else {
        await disk.read(block * BLOCK, buf);
        if (gens[block] === 0) want.fill(0);
        else pattern(want, block, gens[block]!);
        if (Buffer.compare(buf, want) !== 0)
          failure ??= new Error(`block ${block}: read differs from generation ${gens[block]}`);
        count.reads++;
      }
      count.outstanding--;
      count.lastDone = Date.now();
    }
  };
  const workers = Promise.all(Array.from({ length: depth }, (_, w) => worker(w)));
  let finished = false;
  void workers.then(
    () => (finished = true),
    (e: unknown) => (failure ??= e instanceof Error ? e : new Error(String(e))),
  );
  const stallMs = (o.stallSeconds ?? 10) * 1000;
  while (!finished && failure === undefined) {
    await sleep(100);
    const pause = count.outstanding > 0 ? Date.now() - count.lastDone : 0;
    count.longest = Math.max(count.longest, pause);
    if (pause > stallMs)
      failure = new Error(
        `stalled: ${count.outstanding} requests outstanding, none completed for ${pause} ms`,
      );
    if (!alive()) failure ??= new Error("the back-end exited");
  }
  if (failure !== undefined) throw failure;
  return { reads: count.reads, writes: count.writes, longestPauseMs: count.longest };
}

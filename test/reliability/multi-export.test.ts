/**
 * Several exports from one `virtio-ts vhost-user-blk` process (repeated
 * `--export`), sharing two I/O threads: two disks run the guest-less soak
 * at once (4 KiB random reads and writes at depth 32, every read checked
 * against the last write, a stall watchdog) while the third export's
 * front-end shrinks its guest memory under the back-end's mapping. That
 * connection alone is closed with one line naming its export; the soaks
 * never notice; the third export serves its next front-end normally; one
 * SIGTERM stops them all and removes every socket.
 */
import assert from "node:assert/strict";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { VhostUserBlk } from "../../src/devices/blk/vhost-user-frontend.ts";
import { ftruncate } from "../../src/native/index.ts";
import { tempDir } from "../../src/native/test-support.ts";
import { VIRTIO_BLK_S_OK } from "../../src/spec/blk.ts";
import { RawBlkFrontend, REGION } from "../cli/raw-frontend.ts";
import { CliProcess, lines } from "../cli/support.ts";
import { drive, sparseImage } from "./guestless-soak.ts";

async function readOk(fe: RawBlkFrontend, data: number): Promise<void> {
  const status = fe.submitRead(data, 4096);
  fe.kick();
  assert.equal(await fe.completion(status), VIRTIO_BLK_S_OK);
}

describe("one process, several exports", { timeout: 120_000 }, () => {
  test("two disks under load and a hostile front-end on a third: only its connection closes", async (t) => {
    const d = tempDir("virtio-ts-exports-");
    t.after(d.remove);
    const a = { sock: join(d.path, "a.sock"), image: sparseImage(join(d.path, "a.img"), 32) };
    const b = { sock: join(d.path, "b.sock"), image: sparseImage(join(d.path, "b.img"), 32) };
    const c = { sock: join(d.path, "c.sock"), image: join(d.path, "c.img") };
    writeFileSync(c.image, Buffer.alloc(1 << 20, 0x5a));
    const cli = new CliProcess([
      "vhost-user-blk",
      ...["--export", `id=a,socket=${a.sock},image=${a.image},direct`],
      ...["--export", `id=b,socket=${b.sock},image=${b.image},num-queues=2`],
      ...["--export", `id=c,socket=${c.sock},image=${c.image},read-only`],
      ...["--writeback", "--io-threads", "2", "--allow-unsealed-memory"],
    ]);
    t.after(() => cli.kill());
    for (const s of [a, b, c]) await cli.waitStdout(new RegExp(`listening on ${s.sock}`));
    const diskA = await VhostUserBlk.connect(a.sock, { numQueues: 1 });
    const diskB = await VhostUserBlk.connect(b.sock, { numQueues: 2 });
    t.after(() => Promise.all([diskA.destroy(), diskB.destroy()]));
    const soak = { seconds: 8, imageMiB: 32 };
    const alive = (): boolean => cli.proc.exitCode === null && cli.proc.signalCode === null;
    const runs = Promise.all([drive(diskA, soak, alive), drive(diskB, soak, alive)]);

    // The hostile front-end: its ring's memory goes away under the back-end.
    const bad = await RawBlkFrontend.connect(c.sock, [false, true]);
    await readOk(bad, REGION);
    ftruncate(bad.memfds[0], 0);
    bad.kick();
    await bad.closedByBackend();
    bad.close();
    const next = await RawBlkFrontend.connect(c.sock, [true, true]);
    await readOk(next, REGION);
    next.close();

    const [ra, rb] = await runs;
    for (const [name, r] of [
      ["a", ra],
      ["b", rb],
    ] as const) {
      assert.ok(r.reads > 0 && r.writes > 0, `${name}: ${r.reads} reads, ${r.writes} writes`);
      t.diagnostic(
        `${name}: ${r.reads} reads, ${r.writes} writes; longest pause ${r.longestPauseMs} ms`,
      );
    }
    cli.proc.kill("SIGTERM");
    assert.deepEqual(await cli.exit(), { code: 0, signal: null }, cli.dump());
    for (const s of [a, b, c]) assert.equal(existsSync(s.sock), false, `${s.sock} removed`);
    const err = lines(cli.stderr);
    for (const id of ["a", "b", "c"])
      assert.ok(
        err.some((l) => l.startsWith(`virtio-ts: ${id}: serving `)),
        cli.dump(),
      );
    const closing = err.filter((l) => / closing connection: /.test(l));
    assert.equal(closing.length, 1, cli.dump());
    assert.match(
      closing[0]!,
      /^virtio-ts: warning: c: conn 1: vhost-user: virtio-blk: closing connection: VIRTIO_ERR_MEM_FAULT: /,
    );
  });
});

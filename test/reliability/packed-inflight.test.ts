/**
 * Inflight I/O tracking over a packed virtqueue, end to end against the
 * back-end process: the project's front-end re-attaches after a crash over
 * split rings only, so a raw front-end (./packed-frontend.ts) plays QEMU's part — RING_PACKED and
 * INFLIGHT_SHMFD negotiated, the same inflight buffer and memory handed to
 * each back-end, and after a crash the stale ring state QEMU 7.2 sends. The
 * back-end is SIGKILLed with writes in flight whose ring slots the used
 * descriptors of out-of-order completions have overwritten; the restarted
 * one resubmits exactly those writes from the log's copies and resumes the
 * ring where the log says. Every request completes exactly once (the driver
 * refuses a used descriptor for an ID it does not wait on) and the image
 * holds what was written.
 *
 * @module
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { closeSync, ftruncateSync, openSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { tempDir } from "../../src/native/test-support.ts";
import { inflightPackedQueueRegionSize } from "../../src/spec/vhost-user.ts";
import { VIRTIO_BLK_T_OUT } from "../../src/spec/blk.ts";
import { killed, readImage, startBackend } from "./inflight-support.ts";
import { PackedConnection, PackedDriver, completions } from "./packed-frontend.ts";

const MiB = 1 << 20;
const QSIZE = 128;
const CHUNK = 32 * 1024;

/**
 * Waits (at most 10 s) until the back-end's stderr matches `re`: its line
 * about the recovered ring comes from the dataplane thread when the ring
 * starts, which may be just after the front-end's last message was taken.
 */
async function logged(out: { readonly stderr: string }, re: RegExp): Promise<void> {
  for (let waited = 0; !re.test(out.stderr) && waited < 10_000; waited += 20) await sleep(20);
  assert.match(out.stderr, re);
}

describe(
  "inflight I/O tracking over a packed virtqueue across back-end crashes",
  { timeout: 120_000 },
  () => {
    test("16 writes in flight behind 16 completed GET_IDs, SIGKILL, restart with a stale ring base: the writes complete once each; a second kill with nothing in flight resumes where the log says", async (t) => {
      const d = tempDir("virtio-ts-packed-inflight-");
      t.after(() => d.remove());
      const sock = join(d.path, "vu.sock");
      const image = join(d.path, "disk.img");
      const fd = openSync(image, "w");
      ftruncateSync(fd, 16 * MiB);
      closeSync(fd);
      const drv = new PackedDriver(QSIZE);
      t.after(() => drv.close());

      const first = await startBackend(sock, image, "hold");
      t.after(() => killed(first.child));
      const c1 = await PackedConnection.open(sock, drv);
      assert.equal(
        drv.inflight?.size,
        BigInt(inflightPackedQueueRegionSize(QSIZE)),
        "packed layout",
      );
      // Writes (held by this back-end) interleaved with GET_IDs (completed at once, out of order).
      const data = Array.from({ length: 16 }, () => new Uint8Array(randomBytes(CHUNK)));
      for (let i = 0; i < 16; i++) {
        drv.write(i * CHUNK, data[i]!);
        drv.getId();
      }
      c1.kick();
      const ids = await completions(drv, 16, "the GET_IDs");
      assert.ok(ids.every((r) => drv.idOf(r) === "inflight-test"));
      await sleep(200);
      assert.equal(drv.collect().length, 0, "the writes are held in the first back-end");
      await killed(first.child);
      c1.close();

      const second = await startBackend(sock, image, "serve");
      t.after(() => killed(second.child));
      const c2 = await PackedConnection.open(sock, drv); // QEMU 7.2's stale base: the ring's start
      c2.kick();
      const writes = await completions(drv, 16, "the writes, resubmitted by the new back-end");
      assert.ok(writes.every((r) => r.type === VIRTIO_BLK_T_OUT));
      await logged(
        second.out,
        /queue 0: resubmitting 16 request\(s\) left in flight by an earlier back-end \(buffer IDs [\d, ]+\); resuming at avail position 96 \(wrap 1\), used position 48 \(wrap 1\)/,
      );
      for (let i = 0; i < 16; i++)
        assert.deepEqual(readImage(image, i * CHUNK, CHUNK), data[i], `write ${i}`);

      // The ring goes on past its end; then a kill with nothing in flight, and the stale base again.
      const reads = Array.from({ length: 40 }, (_, i) => drv.read((i % 16) * CHUNK, CHUNK));
      c2.kick();
      await completions(drv, 40, "reads after the restart");
      reads.forEach((r, i) => assert.deepEqual(drv.dataOf(r, CHUNK), data[i % 16], `read ${i}`));
      await killed(second.child);
      c2.close();
      const third = await startBackend(sock, image, "serve");
      t.after(() => killed(third.child));
      const c3 = await PackedConnection.open(sock, drv);
      await logged(
        third.out,
        /queue 0: nothing left in flight by an earlier back-end; resuming at avail position 88 \(wrap 0\), used position 88 \(wrap 0\) as the inflight log says \(SET_VRING_BASE said avail position 0 \(wrap 1\), used position 0 \(wrap 1\)\)/,
      );
      const last = drv.getId();
      c3.kick();
      const [done] = await completions(drv, 1, "a GET_ID after the second restart");
      assert.equal(done?.n, last.n);
      assert.equal(drv.pending, 0);
      c3.close();
    });
  },
);

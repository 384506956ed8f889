/**
 * Inflight I/O tracking end to end: the project's front-end (VhostUserBlk
 * with `reconnectMs`) against back-ends that are SIGKILLed with requests in
 * flight and restarted. Every request completes exactly once — the driver
 * refuses a used element for a request it is not waiting for, so a repeat
 * breaks the disk and fails the test — and the image holds what was written.
 *
 * @module
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { openSync, closeSync, ftruncateSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { VhostUserBlk } from "../../src/devices/blk/vhost-user-frontend.ts";
import { tempDir, within } from "../../src/native/test-support.ts";
import { CliProcess } from "../cli/support.ts";
import { killed, readImage, startBackend } from "./inflight-support.ts";
const MiB = 1 << 20;

function newImage(dir: string, size: number): string {
  const image = join(dir, "disk.img");
  const fd = openSync(image, "w");
  ftruncateSync(fd, size);
  closeSync(fd);
  return image;
}

describe("inflight I/O tracking across a back-end crash", { timeout: 180_000 }, () => {
  test("32 in flight, completed out of order, SIGKILL, restart: every request completes exactly once", async (t) => {
    const d = tempDir("virtio-ts-inflight-");
    t.after(() => d.remove());
    const sock = join(d.path, "vu.sock");
    const image = newImage(d.path, 16 * MiB);
    const first = await startBackend(sock, image, "hold");
    t.after(() => killed(first.child));
    const disk = await VhostUserBlk.connect(sock, {
      queueSize: 64,
      bounceBytes: 8 * MiB,
      reconnectMs: 30_000,
    });
    t.after(() => disk.destroy());
    assert.ok(disk.frontend.hasProtocolFeature(12), "INFLIGHT_SHMFD negotiated");
    // 16 writes of 256 KiB (held by the back-end) interleaved with 16 GET_IDs (completed at once).
    const data = Array.from({ length: 16 }, () => new Uint8Array(randomBytes(256 * 1024)));
    const writes: Promise<void>[] = [];
    const ids: Promise<string>[] = [];
    for (let i = 0; i < 16; i++) {
      writes.push(disk.write(i * 256 * 1024, data[i]!));
      ids.push(disk.getId());
    }
    const idsDone = await within(Promise.all(ids), 20_000, "GET_IDs");
    assert.ok(idsDone.every((id) => id === "inflight-test"));
    let writesDone = 0;
    for (const w of writes) void w.then(() => writesDone++);
    await sleep(200);
    assert.equal(writesDone, 0, "the writes are held in the first back-end");
    await killed(first.child);
    const second = await startBackend(sock, image, "serve");
    t.after(() => killed(second.child));
    await within(Promise.all(writes), 30_000, "the writes, resubmitted by the new back-end");
    assert.equal(disk.reconnects, 1);
    assert.match(
      second.out.stderr,
      /queue 0: resubmitting 16 request\(s\) left in flight by an earlier back-end/,
    );
    for (let i = 0; i < 16; i++)
      assert.deepEqual(readImage(image, i * 256 * 1024, 256 * 1024), data[i], `write ${i}`);
    const back = new Uint8Array(256 * 1024);
    await disk.read(3 * 256 * 1024, back);
    assert.deepEqual(back, data[3]);
    await disk.close();
  });

  test("the CLI back-end (--direct --writeback) SIGKILLed and restarted 10 times under random writes at depth 32: the image matches", async (t) => {
    const d = tempDir("virtio-ts-inflight-cli-");
    t.after(() => d.remove());
    const sock = join(d.path, "vu.sock");
    const SLOT = 128 * 1024;
    const SLOTS = 256;
    const image = newImage(d.path, SLOT * SLOTS);
    const args = ["vhost-user-blk", "--socket", sock, "--image", image, "--direct", "--writeback"];
    let cli = new CliProcess(args);
    t.after(() => cli.kill());
    await cli.waitStdout(/listening on/);
    const disk = await VhostUserBlk.connect(sock, { reconnectMs: 30_000 });
    t.after(() => disk.destroy());
    // Each slot has one write at a time; the model holds its last completed content.
    const model = new Map<number, Uint8Array>();
    const busy = new Set<number>();
    let stop = false;
    let completed = 0;
    const worker = async (): Promise<void> => {
      while (!stop) {
        const slot = Math.floor(Math.random() * SLOTS);
        if (busy.has(slot)) continue;
        busy.add(slot);
        const len = 4096 * (1 + Math.floor(Math.random() * (SLOT / 4096)));
        const bytes = new Uint8Array(randomBytes(len));
        await disk.write(slot * SLOT, bytes);
        const m = model.get(slot) ?? new Uint8Array(SLOT);
        m.set(bytes);
        model.set(slot, m);
        busy.delete(slot);
        completed++;
      }
    };
    const workers = Array.from({ length: 32 }, () => worker());
    const kills: number[] = [];
    let resubmitted = 0;
    const count = (p: CliProcess): void => {
      for (const m of p.stderr.matchAll(/resubmitting (\d+) request/g)) resubmitted += Number(m[1]);
    };
    for (let k = 0; k < 10; k++) {
      const before = completed;
      await sleep(300 + Math.random() * 500);
      await within(
        (async () => {
          while (completed === before) await sleep(20);
        })(),
        30_000,
        `progress before kill ${k + 1}`,
      );
      kills.push(completed);
      cli.proc.kill("SIGKILL");
      await cli.exited;
      count(cli);
      cli = new CliProcess(args);
      await cli.waitStdout(/listening on/);
    }
    await sleep(300);
    stop = true;
    await within(Promise.all(workers), 60_000, "the workers to finish");
    await disk.flush();
    assert.equal(disk.reconnects, 10, `kills after ${kills.join(", ")} completed writes`);
    await disk.close();
    count(cli);
    assert.ok(resubmitted > 0, `the restarted back-ends resubmitted nothing\n${cli.stderr}`);
    for (const [slot, want] of model)
      assert.deepEqual(readImage(image, slot * SLOT, SLOT), want, `slot ${slot}`);
    t.diagnostic(
      `${completed} writes, 10 kills, ${resubmitted} requests resubmitted, ${model.size} slots checked`,
    );
  });
});

/**
 * Scenarios for the vhost-user front-end and the virtio-blk driver against
 * a vhost-user-blk back-end process, with no guest: handshake, reads /
 * writes / flush / discard / write-zeroes / GET_ID with many requests in
 * flight on 2 queues, checked against a model of the disk and, after the
 * back-end stopped, against the image file itself; a read-only export; the
 * back-end killed under I/O. `frontendScenarios(label, start, expect, rings)`
 * registers them for one back-end and one ring layout: split rings (VIRTIO
 * 1.2 §2.7), or packed rings (§2.8, VIRTIO_F_RING_PACKED, at a queue size
 * that is not a power of two) with a back-end that offers them (see
 * frontend-qsd.test.ts, frontend-virtio-ts.test.ts).
 *
 * @module
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { ErrorCode, isVirtioError } from "../../src/errors.ts";
import type { BlkFeatureName } from "../../src/devices/blk/config.ts";
import type { RingLayoutKind } from "../../src/ring/ring-layout.ts";
import { VIRTIO_F_RING_PACKED, hasFeature } from "../../src/spec/virtio.ts";
import { BlkIoError } from "../../src/devices/blk/driver-request.ts";
import { fdSnapshot, fdsOpenedSince, within } from "../../src/native/test-support.ts";
import { mappingCount, watchCount } from "../../src/native/index.ts";
import { VhostUserBlk } from "../../src/devices/blk/vhost-user-frontend.ts";
import type { Backend, StartBackend } from "./guest/backends.ts";

const IMAGE_BYTES = 32 << 20;
const SECTOR = 512;
const WAIT_MS = 60_000;

/** What a back-end is expected to report. */
export interface FrontendExpectations {
  /** The GET_ID answer. */
  readonly id: string;
  /** Runs before the back-end starts (e.g. installs it). */
  readonly prepare?: () => Promise<void>;
}

/** The rings a run uses. */
export interface FrontendRings {
  /** The layout the disk must negotiate. */
  readonly layout: RingLayoutKind;
  /** Queue size of the main scenarios (packed: any; split: a power of two). */
  readonly queueSize: number;
  /** Features the disk does not accept (`["RING_PACKED"]`: split rings with a back-end that offers packed ones). */
  readonly exclude?: readonly BlkFeatureName[];
}

/** A small deterministic PRNG (mulberry32). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

function randomBytes(rand: () => number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 4) {
    const v = (rand() * 2 ** 32) >>> 0;
    out[i] = v;
    out[i + 1] = v >>> 8;
    out[i + 2] = v >>> 16;
    out[i + 3] = v >>> 24;
  }
  return out;
}

/** What the disk must hold: bytes, and sectors whose content is unspecified (discarded). */
class DiskModel {
  readonly bytes: Uint8Array;
  readonly unknown = new Uint8Array(IMAGE_BYTES / SECTOR);
  constructor(initial: Uint8Array) {
    this.bytes = initial.slice();
  }
  write(offset: number, data: Uint8Array): void {
    this.bytes.set(data, offset);
    this.unknown.fill(0, offset / SECTOR, (offset + data.length) / SECTOR);
  }
  zero(offset: number, length: number): void {
    this.bytes.fill(0, offset, offset + length);
    this.unknown.fill(0, offset / SECTOR, (offset + length) / SECTOR);
  }
  discard(offset: number, length: number): void {
    this.unknown.fill(1, offset / SECTOR, (offset + length) / SECTOR);
  }
  /** Asserts `got` equals the model at `offset`, sector by sector, skipping unknown sectors. */
  check(offset: number, got: Uint8Array, what: string): void {
    for (let s = 0; s < got.length / SECTOR; s++) {
      const at = offset + s * SECTOR;
      if (this.unknown[at / SECTOR] === 1) continue;
      const want = this.bytes.subarray(at, at + SECTOR);
      const have = got.subarray(s * SECTOR, (s + 1) * SECTOR);
      if (Buffer.compare(Buffer.from(want), Buffer.from(have)) !== 0)
        assert.fail(`${what}: sector ${at / SECTOR} (byte ${at}) differs from the model`);
    }
  }
}

/** `count` disjoint random ranges of 1..maxSectors sectors (sorted start positions, shuffled). */
function disjointRanges(
  rand: () => number,
  count: number,
  maxSectors: number,
): { offset: number; length: number }[] {
  const slot = Math.floor(IMAGE_BYTES / SECTOR / count);
  assert.ok(slot >= maxSectors, "ranges must fit their slots");
  const out = [];
  for (let i = 0; i < count; i++) {
    const sectors = 1 + Math.floor(rand() * maxSectors);
    const start = i * slot + Math.floor(rand() * (slot - sectors + 1));
    out.push({ offset: start * SECTOR, length: sectors * SECTOR });
  }
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

interface Fixture {
  readonly dir: string;
  readonly image: string;
  readonly socket: string;
  readonly initial: Uint8Array;
}

function makeFixture(name: string, seed: number): Fixture {
  const dir = mkdtempSync(join(tmpdir(), `vts-frontend-${name}-`));
  const image = join(dir, "disk.img");
  const initial = randomBytes(prng(seed), IMAGE_BYTES);
  writeFileSync(image, initial);
  return { dir, image, socket: join(dir, "backend.sock"), initial };
}

/** Registers the scenarios against the back-end `start` launches. */
export function frontendScenarios(
  label: string,
  start: StartBackend,
  expect: FrontendExpectations,
  rings: FrontendRings = { layout: "split", queueSize: 128 },
): void {
  const exclude = rings.exclude ?? [];
  const on = `${rings.layout} rings`;
  describe(`vhost-user front-end against ${label}, ${on}`, { timeout: 240_000 }, () => {
    let fx: Fixture;
    let backend: Backend;
    let disk: VhostUserBlk;
    let model: DiskModel;
    let fdsBefore: Map<number, string>;
    let mappingsBefore: number;
    let watchesBefore: number;
    const rand = prng(0x5eed);

    before(async () => {
      await expect.prepare?.();
      fx = makeFixture("rw", 1);
      model = new DiskModel(fx.initial);
      backend = await start({ socketPath: fx.socket, imagePath: fx.image, numQueues: 2 });
      fdsBefore = fdSnapshot();
      mappingsBefore = mappingCount();
      watchesBefore = watchCount();
      disk = await within(
        VhostUserBlk.connect(fx.socket, {
          numQueues: 2,
          queueSize: rings.queueSize,
          bufferBytes: 1 << 20,
          exclude,
        }),
        WAIT_MS,
        "connect",
      );
    });

    after(async () => {
      // After a failure part-way, do not wait on the back-end: tear down at once.
      await disk?.destroy();
      await backend?.stop();
      rmSync(fx.dir, { recursive: true, force: true });
    });

    test("handshake: protocol features, queues, memory slots, config space, GET_ID", async () => {
      const fe = disk.frontend;
      // The front-end keeps MQ | REPLY_ACK | CONFIG | INFLIGHT_SHMFD | CONFIGURE_MEM_SLOTS of
      // what is offered (qemu-storage-daemon 7.2 offers 0x8f2b); REPLY_ACK and CONFIG are required.
      assert.equal(fe.protocolFeatures, fe.deviceProtocolFeatures & 0x9209n);
      assert.equal(fe.protocolFeatures & 0x208n, 0x208n);
      assert.ok(fe.maxQueues >= 2);
      assert.ok(fe.maxMemSlots >= 1);
      assert.equal(hasFeature(fe.features, VIRTIO_F_RING_PACKED), rings.layout === "packed", on);
      assert.equal(disk.numQueues, 2);
      const c = disk.config;
      assert.equal(c.capacityBytes, IMAGE_BYTES);
      assert.equal(c.blockSize, 512);
      assert.equal(c.numQueues, 2);
      assert.equal(c.readOnly, false);
      assert.ok(c.flush && c.discard && c.writeZeroes);
      assert.equal(await disk.getId({ queue: 0 }), expect.id);
      assert.equal(await disk.getId({ queue: 1 }), expect.id);
    });

    test("256 reads in flight on 2 queues return the image's content", async () => {
      const ranges = disjointRanges(rand, 256, 64);
      const bufs = ranges.map((r) => new Uint8Array(r.length));
      await within(
        Promise.all(ranges.map((r, i) => disk.read(r.offset, bufs[i]!, { queue: i % 2 }))),
        WAIT_MS,
        "reads",
      );
      ranges.forEach((r, i) => model.check(r.offset, bufs[i]!, `read ${i}`));
    });

    test("writes and reads in flight together (disjoint ranges), then read back", async () => {
      const ranges = disjointRanges(rand, 384, 128);
      const writes = ranges.slice(0, 256);
      const reads = ranges.slice(256);
      const data = writes.map((r) => randomBytes(rand, r.length));
      const readBufs = reads.map((r) => new Uint8Array(r.length));
      const ops: Promise<void>[] = [];
      for (let i = 0; i < 256; i++) {
        ops.push(disk.write(writes[i]!.offset, data[i]!, { queue: i % 2 }));
        if (i < reads.length) ops.push(disk.read(reads[i]!.offset, readBufs[i]!));
      }
      await within(Promise.all(ops), WAIT_MS, "mixed I/O");
      reads.forEach((r, i) => model.check(r.offset, readBufs[i]!, `concurrent read ${i}`));
      writes.forEach((r, i) => model.write(r.offset, data[i]!));
      const back = writes.map((r) => new Uint8Array(r.length));
      await within(
        Promise.all(writes.map((r, i) => disk.read(r.offset, back[i]!, { queue: (i + 1) % 2 }))),
        WAIT_MS,
        "read back",
      );
      writes.forEach((r, i) => model.check(r.offset, back[i]!, `read back ${i}`));
      assert.ok(disk.stats.requests >= 384 + 256);
    });

    test("a 3 MiB transfer is split into several requests and comes back intact", async () => {
      const offset = 5 << 20;
      const data = randomBytes(rand, 3 << 20);
      const before = disk.stats.requests;
      await within(disk.write(offset, data), WAIT_MS, "big write");
      assert.ok(disk.stats.requests - before > 1, "split into several requests");
      model.write(offset, data);
      const back = new Uint8Array(data.length);
      await within(disk.read(offset, back), WAIT_MS, "big read");
      model.check(offset, back, "big read");
    });

    test("zero-copy reads and writes from buffers in shared memory", async () => {
      const a = disk.allocBuffer(64 * 1024);
      const b = disk.allocBuffer(64 * 1024);
      a.bytes.set(randomBytes(rand, a.len));
      const offset = 9 << 20;
      await within(
        disk.writeSegments(offset, [
          { addr: a.addr, len: 8192 },
          { addr: a.addr + 8192, len: a.len - 8192 },
        ]),
        WAIT_MS,
        "zero-copy write",
      );
      model.write(offset, a.bytes.slice());
      await within(
        disk.readSegments(offset, [{ addr: b.addr, len: b.len }]),
        WAIT_MS,
        "zero-copy read",
      );
      model.check(offset, b.bytes, "zero-copy read");
    });

    test("write-zeroes and discard in flight with writes; flush on both queues", async () => {
      const ranges = disjointRanges(rand, 96, 128);
      const ops: Promise<void>[] = [];
      ranges.forEach((r, i) => {
        const queue = i % 2;
        if (i % 3 === 0) {
          ops.push(disk.writeZeroes([r], { queue, unmap: i % 2 === 0 }));
          model.zero(r.offset, r.length);
        } else if (i % 3 === 1) {
          ops.push(disk.discard([r], { queue }));
          model.discard(r.offset, r.length);
        } else {
          const data = randomBytes(rand, r.length);
          ops.push(disk.write(r.offset, data, { queue }));
          model.write(r.offset, data);
        }
      });
      await within(Promise.all(ops), WAIT_MS, "zeroes, discards, writes");
      await within(
        Promise.all([disk.flush({ queue: 0 }), disk.flush({ queue: 1 })]),
        WAIT_MS,
        "flush",
      );
      const back = ranges.map((r) => new Uint8Array(r.length).fill(0xaa));
      await within(
        Promise.all(ranges.map((r, i) => disk.read(r.offset, back[i]!))),
        WAIT_MS,
        "read back",
      );
      ranges.forEach((r, i) => {
        model.check(r.offset, back[i]!, `range ${i}`);
        if (i % 3 === 0)
          assert.ok(
            back[i]!.every((x) => x === 0),
            `write-zeroes range ${i} reads zeroes`,
          );
      });
    });

    test("close() waits for the requests in flight, then releases every fd, mapping and watch", async () => {
      const ranges = disjointRanges(rand, 64, 32);
      const data = ranges.map((r) => randomBytes(rand, r.length));
      const writes = ranges.map((r, i) => disk.write(r.offset, data[i]!, { queue: i % 2 }));
      const closing = disk.close();
      await assert.rejects(disk.read(0, new Uint8Array(512)), (e) =>
        isVirtioError(e, ErrorCode.VHOST_USER_DISCONNECTED),
      );
      await within(Promise.all(writes), WAIT_MS, "writes before close");
      ranges.forEach((r, i) => model.write(r.offset, data[i]!));
      await within(closing, WAIT_MS, "close");
      assert.equal(disk.frontend.error?.code, ErrorCode.VHOST_USER_DISCONNECTED);
      assert.deepEqual(fdsOpenedSince(fdsBefore), []);
      assert.equal(mappingCount(), mappingsBefore);
      assert.equal(watchCount(), watchesBefore);
    });

    test("the image file holds what the model says after the back-end stopped", async () => {
      const status = await backend.stop();
      assert.ok(
        status.code === 0 || status.signal === "SIGTERM",
        `${label} exit ${JSON.stringify(status)}`,
      );
      model.check(0, new Uint8Array(readFileSync(fx.image)), "image file");
    });
  });

  describe(
    `vhost-user front-end against a read-only ${label} export, ${on}`,
    { timeout: 120_000 },
    () => {
      test("VIRTIO_BLK_F_RO: reads work, writes are refused locally", async (t) => {
        await expect.prepare?.();
        const fx = makeFixture("ro", 2);
        const be = await start({
          socketPath: fx.socket,
          imagePath: fx.image,
          numQueues: 1,
          readOnly: true,
        });
        t.after(async () => {
          await be.stop();
          rmSync(fx.dir, { recursive: true, force: true });
        });
        const disk = await within(VhostUserBlk.connect(fx.socket, { exclude }), WAIT_MS, "connect");
        t.after(() => disk.destroy());
        assert.equal(
          hasFeature(disk.frontend.features, VIRTIO_F_RING_PACKED),
          rings.layout === "packed",
        );
        assert.equal(disk.config.readOnly, true);
        assert.equal(disk.numQueues, 1);
        const buf = new Uint8Array(8192);
        await disk.read(4096, buf);
        assert.deepEqual(buf, fx.initial.subarray(4096, 4096 + 8192));
        await assert.rejects(
          disk.write(0, new Uint8Array(512)),
          (e) => e instanceof BlkIoError && e.local && e.code === ErrorCode.BLK_IOERR,
        );
        await disk.close();
        // A back-end serves one front-end at a time: ask for too many queues once the first is gone.
        await assert.rejects(VhostUserBlk.connect(fx.socket, { numQueues: 2, exclude }), (e) =>
          isVirtioError(e, ErrorCode.VHOST_USER_INCOMPATIBLE),
        );
        // Split rings need a power-of-two queue size; packed rings take any.
        const odd = VhostUserBlk.connect(fx.socket, { queueSize: 100, exclude });
        if (rings.layout === "split")
          await assert.rejects(odd, (e) => isVirtioError(e, ErrorCode.VHOST_USER_INCOMPATIBLE));
        else await (await within(odd, WAIT_MS, "connect with 100 entries")).close();
        // A disk that may re-attach to a restarted back-end keeps split rings (resumable from memory).
        const resumable = await within(
          VhostUserBlk.connect(fx.socket, { reconnectMs: 50 }),
          WAIT_MS,
          "connect with reconnectMs",
        );
        assert.equal(hasFeature(resumable.frontend.features, VIRTIO_F_RING_PACKED), false);
        await resumable.read(0, buf);
        await resumable.close();
      });
    },
  );

  describe(`vhost-user front-end when ${label} dies under I/O, ${on}`, { timeout: 120_000 }, () => {
    test("pending operations reject with DEVICE_BROKEN caused by the disconnect; nothing leaks", async (t) => {
      await expect.prepare?.();
      const fx = makeFixture("kill", 3);
      const be = await start({ socketPath: fx.socket, imagePath: fx.image, numQueues: 2 });
      t.after(async () => {
        await be.stop();
        rmSync(fx.dir, { recursive: true, force: true });
      });
      const fdsBefore = fdSnapshot();
      const mappingsBefore = mappingCount();
      const watchesBefore = watchCount();
      const disk = await within(VhostUserBlk.connect(fx.socket, { exclude }), WAIT_MS, "connect");
      t.after(() => disk.destroy());
      await disk.read(0, new Uint8Array(4096));
      // Keep the disk busy, then kill the back-end while requests are in flight.
      const rand = prng(7);
      const ops = disjointRanges(rand, 512, 64).map((r, i) =>
        disk.write(r.offset, randomBytes(rand, r.length), { queue: i % 2 }).then(
          () => "ok",
          (e: unknown) => e,
        ),
      );
      be.kill();
      const results = await within(Promise.all(ops), WAIT_MS, "operations settle");
      const failures = results.filter((r) => r !== "ok");
      assert.ok(failures.length > 0, "the back-end died before completing everything");
      for (const f of failures) {
        assert.ok(isVirtioError(f, ErrorCode.DEVICE_BROKEN), `got ${String(f)}`);
        assert.ok(isVirtioError((f as Error).cause, ErrorCode.VHOST_USER_DISCONNECTED));
      }
      const why = await within(disk.closed, WAIT_MS, "closed");
      assert.equal(why.code, ErrorCode.VHOST_USER_DISCONNECTED);
      await assert.rejects(disk.read(0, new Uint8Array(512)), (e) =>
        isVirtioError(e, ErrorCode.DEVICE_BROKEN),
      );
      await within(disk.close(), WAIT_MS, "close");
      assert.deepEqual(fdsOpenedSince(fdsBefore), []);
      assert.equal(mappingCount(), mappingsBefore);
      assert.equal(watchCount(), watchesBefore);
    });
  });
}

/**
 * virtio-blk end to end through the in-process transport: the driver in a
 * worker, the device's control (VirtioDevice) on the test thread, the queues
 * on a dataplane worker, the image in a temporary directory. Each request
 * type and each docs/conformance.md "virtio-blk requests" case (the shapes of
 * test/conformance/blk-requests.test.ts), read back from the used ring, the
 * status byte, guest memory and the file on disk; on split and on packed
 * rings (VIRTIO 1.2 §2.7 / §2.8).
 */
import { splitOnly } from "../../src/testing/index.ts";
import type { RingLayoutKind } from "../../src/ring/ring-layout.ts";
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { ErrorCode } from "../../src/errors.ts";
import * as blk from "../../src/spec/blk.ts";
import {
  VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET as NEEDS_RESET,
  VIRTIO_CONFIG_S_DRIVER_OK as DRIVER_OK,
  featureBit,
} from "../../src/spec/virtio.ts";
import { InprocBlkRig, pattern, segments, tempDir, until, writeImage } from "./blk-harness.ts";
import { RING_LAYOUTS, type RawReq } from "./blk-layout.ts";
import type { TestFileSpec } from "./blk-test-worker.ts";

const {
  VIRTIO_BLK_S_OK: OK,
  VIRTIO_BLK_S_IOERR: IOERR,
  VIRTIO_BLK_S_UNSUPP: UNSUPP,
  VIRTIO_BLK_T_IN: IN,
  VIRTIO_BLK_T_OUT: OUT,
  VIRTIO_BLK_T_FLUSH: FLUSH,
  VIRTIO_BLK_T_GET_ID: GET_ID,
  VIRTIO_BLK_T_DISCARD: DISCARD,
  VIRTIO_BLK_T_WRITE_ZEROES: WRITE_ZEROES,
  VIRTIO_BLK_T_GET_LIFETIME: GET_LIFETIME,
  VIRTIO_BLK_T_SECURE_ERASE: SECURE_ERASE,
} = blk;
const UNMAP = blk.VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP;

const DISK_BYTES = 1 << 20;
const CAPACITY = DISK_BYTES / 512;
const SERIAL = "virtio-ts-inproc-01";
const initial = pattern(DISK_BYTES, 11);
const slice = (from: number, len: number) => initial.subarray(from, from + len);
const TEST_WORKER = new URL("./blk-test-worker.ts", import.meta.url);

const tmp = tempDir();
after(() => tmp.cleanup());
let imageNo = 0;
const image = (content: Uint8Array = initial) =>
  writeImage(tmp.dir, `disk-${imageNo++}.img`, content);
const fileBytes = (path: string) => new Uint8Array(readFileSync(path));

/** The features a driver on `layout` rings accepts of `offered`. */
const forLayout = (layout: RingLayoutKind, offered: bigint): bigint =>
  layout === "split" ? splitOnly(offered) : offered;

for (const layout of RING_LAYOUTS) {
  describe(`request types and CONFORMANCE cases (file image, one dataplane worker), ${layout} rings`, () => {
    let rig: InprocBlkRig;
    let path: string;
    const disk = () => fileBytes(path);

    before(async () => {
      path = image();
      rig = await InprocBlkRig.start({
        layout,
        backing: { kind: "test-file", path, logFlush: true } satisfies TestFileSpec,
        workerModule: TEST_WORKER,
        serial: SERIAL,
        maxDiscardSeg: 2,
        maxWriteZeroesSeg: 2,
      });
      const { status } = await rig.init();
      assert.equal(status & DRIVER_OK, DRIVER_OK);
    });
    after(() => rig.close());

    test("the device runs on one dataplane worker; the control thread is not woken for kicks", async () => {
      assert.equal(rig.blk.workerCount, 1);
      const r = await rig.one({ type: IN, sector: 0, inLen: 512 });
      assert.equal(r.status, OK);
      const stats = await rig.blk.stats();
      assert.equal(stats.queues.length, 1);
      assert.ok(stats.queues[0]!.wakeups >= 2, "the worker took the kick itself");
      assert.equal(
        rig.device.stats.notificationsSent,
        0,
        "calls leave from the worker, not the framework",
      );
    });

    test("IN reads sectors: one buffer, split buffers, a split header (indirect tables)", async () => {
      for (const shape of [{}, { piece: 512 }, { piece: 700, headerSplit: [3, 13] }]) {
        const r = await rig.one({ type: IN, sector: 8, inLen: 4096, ...shape });
        assert.equal(r.status, OK);
        assert.equal(r.len, 4097, "used len = data + status byte");
        assert.deepEqual(r.data, slice(8 * 512, 4096));
      }
    });

    test("OUT writes sectors to the file; a later IN returns them; neighbours untouched", async () => {
      const data = pattern(2048, 99);
      const w = await rig.one({ type: OUT, sector: 3, out: data, piece: 700 });
      assert.equal(w.status, OK);
      assert.equal(w.len, 1);
      const rd = await rig.one({ type: IN, sector: 3, inLen: 2048 });
      assert.deepEqual(rd.data, data);
      const d = disk();
      assert.deepEqual(d.subarray(3 * 512, 3 * 512 + 2048), data);
      assert.deepEqual(d.subarray(0, 3 * 512), slice(0, 3 * 512));
      assert.deepEqual(d.subarray(7 * 512, 8 * 512), slice(7 * 512, 512));
    });

    test("the legacy BARRIER bit in type is masked off", async () => {
      const r = await rig.one({ type: IN | blk.VIRTIO_BLK_T_BARRIER, sector: 20, inLen: 512 });
      assert.equal(r.status, OK);
      assert.deepEqual(r.data, slice(20 * 512, 512));
    });

    test("FLUSH completes OK (an fdatasync reached the file); a non-zero sector is ignored", async () => {
      for (const sector of [0, 12345, 2n ** 64n - 1n]) {
        const before = rig.log.warnings.length;
        const r = await rig.one({ type: FLUSH, sector });
        assert.equal(r.status, OK);
        assert.equal(r.len, 1);
        assert.ok(rig.log.warnings.slice(before).includes("test-backing flush"));
      }
    });

    test("GET_ID writes min(buffer, 20) bytes of the NUL-padded serial", async () => {
      const id = new Uint8Array(20);
      id.set(new TextEncoder().encode(SERIAL));
      for (const buf of [20, 8, 64, 0]) {
        const r = await rig.one({ type: GET_ID, inLen: buf });
        assert.equal(r.status, OK, `buffer ${buf}`);
        const n = Math.min(buf, 20);
        assert.equal(r.len, n + 1);
        assert.deepEqual(r.data.subarray(0, n), id.subarray(0, n));
        assert.ok(
          r.data.subarray(n).every((b) => b === 0xee),
          "bytes past the ID untouched",
        );
      }
    });

    test("WRITE_ZEROES with and without UNMAP: reads return zeroes, the file too, neighbours untouched", async () => {
      const r = await rig.one({
        type: WRITE_ZEROES,
        out: segments([
          { sector: 100, num: 3 },
          { sector: 140, num: 8, flags: UNMAP },
        ]),
      });
      assert.equal(r.status, OK);
      assert.equal(r.len, 1);
      for (const [sector, num] of [
        [100, 3],
        [140, 8],
      ] as const) {
        const rd = await rig.one({ type: IN, sector, inLen: num * 512 });
        assert.ok(
          rd.data.every((b) => b === 0),
          `sectors ${sector}+${num} read as zeroes`,
        );
      }
      const d = disk();
      assert.ok(d.subarray(100 * 512, 103 * 512).every((b) => b === 0));
      assert.ok(d.subarray(140 * 512, 148 * 512).every((b) => b === 0));
      assert.deepEqual(d.subarray(99 * 512, 100 * 512), slice(99 * 512, 512));
      assert.deepEqual(d.subarray(103 * 512, 140 * 512), slice(103 * 512, 37 * 512));
      assert.deepEqual(d.subarray(148 * 512, 149 * 512), slice(148 * 512, 512));
    });

    test("DISCARD completes OK; data outside its range untouched", async () => {
      const r = await rig.one({ type: DISCARD, out: segments([{ sector: 200, num: 16 }]) });
      assert.equal(r.status, OK);
      const d = disk();
      assert.deepEqual(d.subarray(150 * 512, 200 * 512), slice(150 * 512, 50 * 512));
      assert.deepEqual(d.subarray(216 * 512), initial.subarray(216 * 512));
    });

    test("a status descriptor longer than 1 byte: the status is its last byte, the rest untouched", async () => {
      const r = await rig.one({ type: FLUSH, statusLen: 4 });
      assert.equal(r.status, OK);
      assert.equal(r.len, 1);
      assert.deepEqual([...r.statusBuf.subarray(0, 3)], [0xee, 0xee, 0xee]);
    });

    test("a 16-byte header spread over five descriptors is accepted", async () => {
      const r = await rig.one({ type: IN, sector: 2, headerSplit: [1, 1, 2, 4, 8], inLen: 512 });
      assert.equal(r.status, OK);
      assert.deepEqual(r.data, slice(1024, 512));
    });

    test("IN/OUT length not a multiple of 512 → IOERR, nothing transferred", async () => {
      const before = disk();
      const rd = await rig.one({ type: IN, sector: 0, inLen: 1000 });
      assert.equal(rd.status, IOERR);
      assert.equal(rd.len, 1);
      assert.ok(rd.data.every((b) => b === 0xee));
      const wr = await rig.one({ type: OUT, sector: 0, out: pattern(700, 1) });
      assert.equal(wr.status, IOERR);
      assert.deepEqual(disk(), before);
    });

    test("sector range beyond capacity or overflowing 64 bits → IOERR, nothing transferred", async () => {
      const before = disk();
      const cases: [number | bigint, number][] = [
        [CAPACITY, 512],
        [CAPACITY - 1, 1024],
        [CAPACITY + 1, 0],
        [2n ** 64n - 1n, 512],
        [2n ** 64n - 2n, 1024],
        [2n ** 63n, 512],
        [2 ** 53, 512],
      ];
      const reqs: RawReq[] = cases.flatMap(([sector, bytes]) => [
        { type: IN, sector, inLen: bytes },
        { type: OUT, sector, out: pattern(bytes, 3) },
      ]);
      const r = await rig.run(reqs);
      r.results.forEach((res, i) => {
        assert.equal(res!.status, IOERR, `request ${i}`);
        assert.ok(res!.data.every((b) => b === 0xee));
      });
      assert.deepEqual(disk(), before);
      const last = await rig.one({ type: IN, sector: CAPACITY - 1, inLen: 512 });
      assert.equal(last.status, OK);
      assert.deepEqual(last.data, disk().subarray(DISK_BYTES - 512));
      assert.equal((await rig.one({ type: IN, sector: CAPACITY, inLen: 0 })).status, OK);
    });

    test("data in the wrong direction → IOERR", async () => {
      const before = disk();
      const rd = await rig.one({ type: IN, sector: 0, out: new Uint8Array(512), inLen: 512 });
      assert.equal(rd.status, IOERR);
      assert.ok(rd.data.every((b) => b === 0xee));
      const wr = await rig.one({ type: OUT, sector: 0, out: pattern(512, 4), inLen: 512 });
      assert.equal(wr.status, IOERR);
      assert.deepEqual(disk(), before);
    });

    test("unknown types, GET_LIFETIME and SECURE_ERASE → UNSUPP", async () => {
      const types = [2, 3, 5, 6, 7, 9, 12, GET_LIFETIME, SECURE_ERASE, 15, 99, 0x7fffffff];
      const r = await rig.run(types.map((type) => ({ type, inLen: 512, out: new Uint8Array(16) })));
      r.results.forEach((res, i) => {
        assert.equal(res!.status, UNSUPP, `type ${types[i]}`);
        assert.equal(res!.len, 1);
      });
    });

    test("DISCARD / WRITE_ZEROES payload not a multiple of 16 → IOERR", async () => {
      const reqs = [DISCARD, WRITE_ZEROES].flatMap((type) =>
        [8, 24, 17].map((n) => ({ type, out: new Uint8Array(n) })),
      );
      for (const res of (await rig.run(reqs)).results) assert.equal(res!.status, IOERR);
    });

    test("more segments than max_discard_seg / max_write_zeroes_seg → UNSUPP, nothing done", async () => {
      const before = disk();
      const three = segments([
        { sector: 0, num: 1 },
        { sector: 8, num: 1 },
        { sector: 16, num: 1 },
      ]);
      assert.equal((await rig.one({ type: DISCARD, out: three })).status, UNSUPP);
      assert.equal((await rig.one({ type: WRITE_ZEROES, out: three })).status, UNSUPP);
      assert.deepEqual(disk(), before);
    });

    test("segment flags other than UNMAP, or UNMAP on DISCARD → UNSUPP", async () => {
      const before = disk();
      const cases: [number, number][] = [
        [WRITE_ZEROES, 2],
        [WRITE_ZEROES, 0x80000000],
        [WRITE_ZEROES, UNMAP | 4],
        [DISCARD, UNMAP],
        [DISCARD, 2],
      ];
      const r = await rig.run(
        cases.map(([type, flags]) => ({ type, out: segments([{ sector: 0, num: 8, flags }]) })),
      );
      for (const res of r.results) assert.equal(res!.status, UNSUPP);
      assert.deepEqual(disk(), before);
    });

    test("cache mode: writeback → a write completes without fdatasync; write-through → each write is flushed", async () => {
      const wb = blk.BlkConfig.writeback;
      const flushes = async (expected: number): Promise<number> => {
        const before = rig.log.warnings.length;
        const count = () =>
          rig.log.warnings.slice(before).filter((l) => l === "test-backing flush").length;
        const r = await rig.one({ type: OUT, sector: 300, out: pattern(512, 8) });
        assert.equal(r.status, OK);
        // The worker logs the flush before the write completes; the line travels on another port.
        if (expected > 0) await until(() => count() >= expected, "the flush log line");
        return count();
      };
      assert.deepEqual(
        [...(await rig.command<Uint8Array>({ cmd: "read-config", offset: wb, length: 1 }))],
        [1],
      );
      assert.equal(await flushes(0), 0, "writeback: no flush per write");
      assert.equal(
        await rig.command({ cmd: "write-config", offset: wb, bytes: Uint8Array.of(0) }),
        1,
      );
      assert.deepEqual(
        [...(await rig.command<Uint8Array>({ cmd: "read-config", offset: wb, length: 1 }))],
        [0],
      );
      // The very next write after the acknowledged config write is already write-through.
      assert.equal(await flushes(1), 1, "write-through: the write was flushed before it completed");
      assert.equal(
        await rig.command({ cmd: "write-config", offset: wb, bytes: Uint8Array.of(1) }),
        1,
      );
      assert.equal(await flushes(0), 0);
    });

    test("fewer than 16 header bytes → device broken (BLK_MISSING_HEADERS): NEEDS_RESET, nothing completed; reset recovers", async () => {
      const r = await rig.run([{ type: IN, headerSplit: [8, 7], inLen: 512 }]);
      assert.equal(r.broken, true);
      assert.equal(r.status & NEEDS_RESET, NEEDS_RESET);
      assert.equal(r.results[0], null, "nothing on the used ring");
      assert.equal(rig.device.broken?.code, ErrorCode.BLK_MISSING_HEADERS);
      assert.ok(
        rig.log.errors.some((l) => /vq 0: device broken: VIRTIO_ERR_BLK_MISSING_HEADERS/.test(l)),
      );
      assert.equal(await rig.reset(), 1, "the driver fails the request it still had");
      assert.equal(rig.device.broken, null);
      await rig.init();
      assert.equal((await rig.one({ type: IN, sector: 1, inLen: 512 })).status, OK);
    });

    test("no device-writable byte → device broken (BLK_MISSING_HEADERS); nothing written", async () => {
      const before = disk();
      const r = await rig.run([{ type: OUT, out: new Uint8Array(512), statusLen: 0 }]);
      assert.equal(r.broken, true);
      assert.equal(rig.device.broken?.code, ErrorCode.BLK_MISSING_HEADERS);
      assert.deepEqual(disk(), before);
      await rig.reset();
      await rig.init();
    });

    test("a ring violation in the worker (descriptor outside guest memory) → device broken, NEEDS_RESET, config change", async () => {
      const configBefore = rig.device.stats.configNotifications;
      const r = await rig.run([{ type: IN, sector: 0, inLen: 512, corruptHead: true }]);
      assert.equal(r.broken, true);
      assert.equal(r.status & NEEDS_RESET, NEEDS_RESET);
      assert.ok(
        rig.device.broken?.code === ErrorCode.DESC_OUT_OF_BOUNDS ||
          rig.device.broken?.code === ErrorCode.INDIRECT_TABLE,
        `code ${rig.device.broken?.code}`,
      );
      assert.equal(rig.device.stats.configNotifications, configBefore + 1);
      await rig.reset();
      await rig.init();
      assert.equal((await rig.one({ type: GET_ID, inLen: 20 })).status, OK);
    });
  });

  describe(`features not negotiated, direct descriptors, shared-memory disk, ${layout} rings`, () => {
    test("FLUSH, DISCARD, WRITE_ZEROES whose feature was not negotiated → UNSUPP; IN/OUT over direct chains", async () => {
      const buffer = new SharedArrayBuffer(DISK_BYTES);
      new Uint8Array(buffer).set(initial);
      const rig = await InprocBlkRig.start({
        layout,
        backing: { kind: "shared-memory", buffer },
      });
      try {
        let features = forLayout(layout, rig.device.readDeviceFeatures());
        for (const bit of [
          blk.VIRTIO_BLK_F_FLUSH,
          blk.VIRTIO_BLK_F_DISCARD,
          blk.VIRTIO_BLK_F_WRITE_ZEROES,
          blk.VIRTIO_BLK_F_CONFIG_WCE,
        ])
          features &= ~featureBit(bit);
        await rig.init({ features, indirect: false });
        const seg = segments([{ sector: 0, num: 8 }]);
        const r = await rig.run([
          { type: FLUSH },
          { type: DISCARD, out: seg },
          { type: WRITE_ZEROES, out: seg },
        ]);
        for (const res of r.results) assert.equal(res!.status, UNSUPP);
        const data = pattern(3072, 5);
        assert.equal((await rig.one({ type: OUT, sector: 9, out: data, piece: 1000 })).status, OK);
        const rd = await rig.one({ type: IN, sector: 9, inLen: 3072, piece: 512 });
        assert.deepEqual(rd.data, data);
        assert.deepEqual(
          new Uint8Array(buffer, 9 * 512, 3072),
          data,
          "the shared disk holds the write",
        );
      } finally {
        await rig.close();
      }
    });
  });

  describe(`limits: 4096-byte logical blocks, segment limits and alignment, ${layout} rings`, () => {
    test("512-byte or unaligned IN/OUT → IOERR; segments too long, unaligned or beyond capacity → IOERR, none done", async () => {
      const path = image();
      const rig = await InprocBlkRig.start({
        layout,
        backing: { kind: "file", path },
        logicalBlockSize: 4096,
        maxDiscardSectors: 64,
        maxWriteZeroesSectors: 64,
        discardSectorAlignment: 16,
        maxDiscardSeg: 2,
        maxWriteZeroesSeg: 2,
      });
      try {
        await rig.init();
        const io = await rig.run([
          { type: IN, sector: 0, inLen: 512 },
          { type: IN, sector: 1, inLen: 4096 },
          { type: OUT, sector: 4, out: pattern(4096, 2) },
          { type: IN, sector: 8, inLen: 8192 },
        ]);
        assert.deepEqual(
          io.results.map((r) => r!.status),
          [IOERR, IOERR, IOERR, OK],
        );
        const bad: [number, { sector: number | bigint; num: number }][] = [
          [WRITE_ZEROES, { sector: 0, num: 72 }],
          [DISCARD, { sector: 0, num: 72 }],
          [DISCARD, { sector: 8, num: 16 }],
          [DISCARD, { sector: 16, num: 8 }],
          [WRITE_ZEROES, { sector: 4, num: 8 }],
          [WRITE_ZEROES, { sector: 8, num: 12 }],
          [WRITE_ZEROES, { sector: CAPACITY - 8, num: 16 }],
          [DISCARD, { sector: CAPACITY, num: 16 }],
          [WRITE_ZEROES, { sector: 2n ** 64n - 8n, num: 8 }],
        ];
        const r = await rig.run(
          bad.map(([type, seg]) => ({ type, out: segments([{ sector: 32, num: 16 }, seg]) })),
        );
        r.results.forEach((res, i) => assert.equal(res!.status, IOERR, `case ${i}`));
        assert.deepEqual(fileBytes(path), initial, "no segment was executed");
        const ok = await rig.one({
          type: WRITE_ZEROES,
          out: segments([{ sector: CAPACITY - 64, num: 64 }]),
        });
        assert.equal(ok.status, OK);
        assert.ok(
          fileBytes(path)
            .subarray(DISK_BYTES - 64 * 512)
            .every((b) => b === 0),
        );
      } finally {
        await rig.close();
      }
    });
  });

  describe(`backing-store errors, ${layout} rings`, () => {
    test("a failing read or flush → IOERR, logged by the worker with queue and request; the device stays usable", async () => {
      const path = image();
      const rig = await InprocBlkRig.start({
        layout,
        backing: {
          kind: "test-file",
          path,
          failReads: true,
          failFlush: true,
        } satisfies TestFileSpec,
        workerModule: TEST_WORKER,
      });
      try {
        await rig.init();
        const r = await rig.run([{ type: IN, sector: 0, inLen: 512 }, { type: FLUSH }]);
        assert.equal(r.broken, false);
        assert.deepEqual(
          r.results.map((x) => [x!.status, x!.len]),
          [
            [IOERR, 1],
            [IOERR, 1],
          ],
        );
        assert.equal(rig.device.broken, null);
        await until(() => rig.log.errors.length >= 2, "two error lines");
        const read = rig.log.errors.findIndex((l) =>
          /vq 0 req \d+: IN sector 0 len 512 failed: .*injected read failure/.test(l),
        );
        assert.ok(read >= 0, rig.log.errors.join("\n"));
        const head = Number(/ req (\d+):/.exec(rig.log.errors[read]!)![1]);
        assert.deepEqual(
          rig.log.errorFields[read],
          { queue: 0, req: head },
          "fields for collectors",
        );
        assert.ok(
          rig.log.errors.some((l) => /vq 0 req \d+: FLUSH .*injected flush failure/.test(l)),
        );
        assert.equal((await rig.one({ type: OUT, sector: 0, out: pattern(512, 5) })).status, OK);
      } finally {
        await rig.close();
      }
    });
  });
}

describe("device creation errors come from the worker that opens the image", () => {
  test("missing image, size not a multiple of the block size, a read-only image under a writable device", async () => {
    const missing = `${tmp.dir}/missing.img`;
    await assert.rejects(
      InprocBlkRig.start({ backing: { kind: "file", path: missing } }),
      (e: unknown) =>
        (e as { code?: string }).code === ErrorCode.BLK_IMAGE && /does not exist/.test(String(e)),
    );
    const odd = writeImage(tmp.dir, "odd.img", new Uint8Array(1000));
    await assert.rejects(
      InprocBlkRig.start({ backing: { kind: "file", path: odd } }),
      /not a multiple of the 512-byte logical block size/,
    );
    const small = writeImage(tmp.dir, "block.img", new Uint8Array(4096 + 512));
    await assert.rejects(
      InprocBlkRig.start({ backing: { kind: "file", path: small }, logicalBlockSize: 4096 }),
      /not a multiple of the 4096-byte/,
    );
    await assert.rejects(
      InprocBlkRig.start({
        backing: { kind: "file", path: odd.replace("odd", "block"), readOnly: true },
        readOnly: false,
      }),
      (e: unknown) =>
        e instanceof RangeError &&
        /read-only backing store needs a read-only device/.test(e.message),
    );
  });
});

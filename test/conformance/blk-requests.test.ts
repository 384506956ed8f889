/**
 * virtio-blk requests, one docs/conformance.md "virtio-blk requests" case per
 * test, end to end in one thread: the mock driver builds the chain, the
 * DeviceQueue pops it, the queue engine parses and executes it on a
 * MemoryBacking and on a FileBacking (temporary directory), and the result
 * is read back from the used ring, the status byte and the disk.
 */
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ErrorCode } from "../../src/errors.ts";
import { MemoryBacking, type BlkBacking } from "../../src/devices/blk/backing.ts";
import { FileBacking } from "../../src/devices/blk/file-backing.ts";
import * as blk from "../../src/spec/blk.ts";
import { BlkRig, type RigOptions, pattern, segments, without } from "./blk-harness.ts";

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
const SERIAL = "virtio-ts-disk-01";

const tmp = mkdtempSync(join(tmpdir(), "virtio-ts-blk-"));
const opened: BlkBacking[] = [];
after(async () => {
  for (const b of opened) await b.close();
  rmSync(tmp, { recursive: true, force: true });
});
let fileNo = 0;

interface Kind {
  name: string;
  make(content: Uint8Array, readOnly?: boolean): Promise<BlkBacking>;
  /** The disk's bytes as stored. */
  bytes(b: BlkBacking): Uint8Array;
}

const KINDS: Kind[] = [
  {
    name: "MemoryBacking",
    make: (content, readOnly) => Promise.resolve(new MemoryBacking(content, { readOnly })),
    bytes: (b) => (b as MemoryBacking).snapshot(),
  },
  {
    name: "FileBacking",
    make: (content, readOnly) => {
      const path = join(tmp, `disk-${fileNo++}.img`);
      writeFileSync(path, content);
      return FileBacking.open(path, { readOnly, fallocate: null });
    },
    bytes: (b) => new Uint8Array(readFileSync((b as FileBacking).path)),
  },
  {
    name: "FileBacking with native fallocate",
    make: (content, readOnly) => {
      const path = join(tmp, `disk-${fileNo++}.img`);
      writeFileSync(path, content);
      return FileBacking.open(path, { readOnly });
    },
    bytes: (b) => new Uint8Array(readFileSync((b as FileBacking).path)),
  },
];

const initial = pattern(DISK_BYTES, 7);

async function rig(kind: Kind, o: Partial<RigOptions> & { readOnly?: boolean } = {}) {
  const backing = await kind.make(initial, o.readOnly);
  opened.push(backing);
  return new BlkRig({ config: { serial: SERIAL, ...o.config }, ...o, backing });
}

const slice = (from: number, len: number) => initial.subarray(from, from + len);

for (const kind of KINDS) {
  describe(kind.name, () => {
    describe("request types", () => {
      test("IN reads sectors into a chain split across descriptors and through an indirect table", async () => {
        for (const shape of [
          {},
          { piece: 512, headerSplit: [3, 13] },
          { indirect: true, piece: 1024 },
        ]) {
          const r = await rig(kind);
          const { req, status, len } = await r.run({ type: IN, sector: 8, inLen: 4096, ...shape });
          assert.equal(status, OK);
          assert.equal(len, 4097, "used len = data + status byte");
          assert.deepEqual(r.readIn(req), slice(8 * 512, 4096));
          assert.equal(r.broken.length, 0);
        }
      });

      test("OUT writes sectors; a later IN returns them", async () => {
        const r = await rig(kind);
        const data = pattern(2048, 99);
        const w = await r.run({ type: OUT, sector: 3, out: data, piece: 700 });
        assert.equal(w.status, OK);
        assert.equal(w.len, 1);
        const rd = await r.run({ type: IN, sector: 3, inLen: 2048 });
        assert.deepEqual(r.readIn(rd.req), data);
        const disk = kind.bytes(r.backing);
        assert.deepEqual(disk.subarray(3 * 512, 3 * 512 + 2048), data);
        assert.deepEqual(disk.subarray(0, 3 * 512), slice(0, 3 * 512), "bytes before untouched");
        assert.deepEqual(
          disk.subarray(7 * 512, 8 * 512),
          slice(7 * 512, 512),
          "bytes after untouched",
        );
      });

      test("the legacy BARRIER bit in type is masked off", async () => {
        const r = await rig(kind);
        const { req, status } = await r.run({
          type: IN | blk.VIRTIO_BLK_T_BARRIER,
          sector: 1,
          inLen: 512,
        });
        assert.equal(status, OK);
        assert.deepEqual(r.readIn(req), slice(512, 512));
      });

      test("FLUSH completes OK; a non-zero sector is accepted and ignored", async () => {
        const r = await rig(kind);
        for (const sector of [0, 12345, 2n ** 64n - 1n]) {
          const { status, len } = await r.run({ type: FLUSH, sector });
          assert.equal(status, OK);
          assert.equal(len, 1);
        }
      });

      test("GET_ID writes min(buffer, 20) bytes of the NUL-padded serial, OK", async () => {
        const r = await rig(kind);
        const id = new Uint8Array(20);
        id.set(new TextEncoder().encode(SERIAL));
        for (const buf of [20, 8, 64, 0]) {
          const { req, status, len } = await r.run({ type: GET_ID, inLen: buf });
          assert.equal(status, OK, `buffer ${buf}`);
          const n = Math.min(buf, 20);
          assert.equal(len, n + 1, `buffer ${buf}: used len`);
          const got = r.readIn(req);
          assert.deepEqual(got.subarray(0, n), id.subarray(0, n));
          assert.ok(
            got.subarray(n).every((b) => b === 0xee),
            "bytes past the ID untouched",
          );
        }
      });

      test("WRITE_ZEROES (with and without UNMAP) makes reads return zeroes; neighbours untouched", async () => {
        const r = await rig(kind, { config: { maxWriteZeroesSeg: 4 } });
        const { status, len } = await r.run({
          type: WRITE_ZEROES,
          out: segments([
            { sector: 10, num: 3 },
            { sector: 40, num: 8, flags: UNMAP },
          ]),
        });
        assert.equal(status, OK);
        assert.equal(len, 1);
        for (const [sector, num] of [
          [10, 3],
          [40, 8],
        ] as const) {
          const rd = await r.run({ type: IN, sector, inLen: num * 512 });
          assert.ok(
            r.readIn(rd.req).every((b) => b === 0),
            `sectors ${sector}+${num} read as zeroes`,
          );
        }
        const disk = kind.bytes(r.backing);
        assert.deepEqual(disk.subarray(9 * 512, 10 * 512), slice(9 * 512, 512));
        assert.deepEqual(disk.subarray(13 * 512, 40 * 512), slice(13 * 512, 27 * 512));
        assert.deepEqual(disk.subarray(48 * 512, 49 * 512), slice(48 * 512, 512));
      });

      test("DISCARD completes OK and leaves data outside its range untouched", async () => {
        const r = await rig(kind);
        const { status } = await r.run({ type: DISCARD, out: segments([{ sector: 16, num: 16 }]) });
        assert.equal(status, OK);
        const disk = kind.bytes(r.backing);
        assert.deepEqual(disk.subarray(0, 16 * 512), slice(0, 16 * 512));
        assert.deepEqual(disk.subarray(32 * 512), initial.subarray(32 * 512));
      });

      test("a status descriptor longer than 1 byte: status is its last byte, the rest untouched", async () => {
        const r = await rig(kind);
        const { req, status, len } = await r.run({ type: FLUSH, statusLen: 4 });
        assert.equal(status, OK);
        assert.equal(len, 1);
        for (let i = 1; i < 4; i++) assert.equal(r.mem.readU8(req.statusAddr - i), 0xee);
      });
    });

    describe("CONFORMANCE cases", () => {
      test("fewer than 16 readable header bytes → device broken (BLK_MISSING_HEADERS), nothing completed", async () => {
        for (const split of [[15], [8, 7], [1]]) {
          const r = await rig(kind);
          const req = r.add({ type: IN, headerSplit: split, inLen: 0 });
          r.engine.kick();
          await new Promise((res) => setImmediate(res));
          assert.equal(r.broken.length, 1, `header ${split.join("+")}`);
          assert.equal(r.broken[0]!.code, ErrorCode.BLK_MISSING_HEADERS);
          assert.equal(r.q.broken?.code, ErrorCode.BLK_MISSING_HEADERS);
          assert.equal(r.engine.halted, true);
          assert.equal(r.drv.usedIdx, 0, "nothing on the used ring");
          assert.equal(r.status(req), 0xee, "status byte not written");
        }
      });

      test("no device-writable byte → device broken (BLK_MISSING_HEADERS)", async () => {
        const r = await rig(kind);
        r.add({ type: OUT, out: new Uint8Array(512), statusLen: 0 });
        r.engine.kick();
        await new Promise((res) => setImmediate(res));
        assert.equal(r.broken[0]?.code, ErrorCode.BLK_MISSING_HEADERS);
        assert.equal(r.drv.usedIdx, 0);
        assert.deepEqual(kind.bytes(r.backing), initial, "nothing written");
      });

      test("a 16-byte header spread over several descriptors is accepted", async () => {
        const r = await rig(kind);
        const { status } = await r.run({
          type: IN,
          sector: 2,
          headerSplit: [1, 1, 2, 4, 8],
          inLen: 512,
        });
        assert.equal(status, OK);
      });

      test("IN/OUT length not a multiple of 512 → IOERR, nothing transferred", async () => {
        const r = await rig(kind);
        const rd = await r.run({ type: IN, sector: 0, inLen: 1000 });
        assert.equal(rd.status, IOERR);
        assert.equal(rd.len, 1);
        assert.ok(
          r.readIn(rd.req).every((b) => b === 0xee),
          "no data written to the guest",
        );
        const wr = await r.run({ type: OUT, sector: 0, out: pattern(700, 1) });
        assert.equal(wr.status, IOERR);
        assert.deepEqual(kind.bytes(r.backing), initial, "nothing written to the disk");
      });

      test("with a 4096-byte logical block: 512-byte or unaligned IN/OUT → IOERR", async () => {
        const r = await rig(kind, { config: { logicalBlockSize: 4096 } });
        assert.equal((await r.run({ type: IN, sector: 0, inLen: 512 })).status, IOERR);
        assert.equal((await r.run({ type: IN, sector: 1, inLen: 4096 })).status, IOERR);
        assert.equal((await r.run({ type: OUT, sector: 4, out: pattern(4096, 2) })).status, IOERR);
        assert.equal((await r.run({ type: IN, sector: 8, inLen: 8192 })).status, OK);
        assert.deepEqual(kind.bytes(r.backing), initial);
      });

      test("sector range beyond capacity or overflowing 64 bits → IOERR, nothing transferred", async () => {
        const r = await rig(kind);
        const cases: [number | bigint, number][] = [
          [CAPACITY, 512],
          [CAPACITY - 1, 1024],
          [CAPACITY + 1, 0],
          [2n ** 64n - 1n, 512],
          [2n ** 64n - 2n, 1024],
          [2n ** 63n, 512],
          [2 ** 53, 512],
          [2n ** 32n, 512],
        ];
        for (const [sector, bytes] of cases) {
          const rd = await r.run({ type: IN, sector, inLen: bytes });
          assert.equal(rd.status, IOERR, `IN sector ${sector} + ${bytes}`);
          assert.ok(r.readIn(rd.req).every((b) => b === 0xee));
          const wr = await r.run({ type: OUT, sector, out: pattern(bytes, 3) });
          assert.equal(wr.status, IOERR, `OUT sector ${sector} + ${bytes}`);
        }
        assert.deepEqual(kind.bytes(r.backing), initial);
        // The last sector itself, and a zero-length access at the end, are inside.
        const last = await r.run({ type: IN, sector: CAPACITY - 1, inLen: 512 });
        assert.equal(last.status, OK);
        assert.deepEqual(r.readIn(last.req), slice(DISK_BYTES - 512, 512));
        assert.equal((await r.run({ type: IN, sector: CAPACITY, inLen: 0 })).status, OK);
      });

      test("data in the wrong direction → IOERR (IN data readable, OUT data writable)", async () => {
        const r = await rig(kind);
        const rd = await r.run({ type: IN, sector: 0, out: new Uint8Array(512), inLen: 512 });
        assert.equal(rd.status, IOERR);
        assert.ok(r.readIn(rd.req).every((b) => b === 0xee));
        const wr = await r.run({ type: OUT, sector: 0, out: pattern(512, 4), inLen: 512 });
        assert.equal(wr.status, IOERR);
        assert.ok(r.readIn(wr.req).every((b) => b === 0xee));
        assert.deepEqual(kind.bytes(r.backing), initial);
      });

      test("unknown types, GET_LIFETIME and SECURE_ERASE → UNSUPP", async () => {
        const r = await rig(kind);
        for (const type of [
          2,
          3,
          5,
          6,
          7,
          9,
          12,
          GET_LIFETIME,
          SECURE_ERASE,
          15,
          16,
          99,
          0x7fffffff,
        ]) {
          const { status, len } = await r.run({ type, inLen: 512, out: new Uint8Array(16) });
          assert.equal(status, UNSUPP, `type ${type}`);
          assert.equal(len, 1);
        }
        assert.deepEqual(kind.bytes(r.backing), initial);
      });

      test("FLUSH, DISCARD, WRITE_ZEROES whose feature was not negotiated → UNSUPP", async () => {
        const r = await rig(kind, {
          features: (cfg) =>
            without(
              cfg,
              blk.VIRTIO_BLK_F_FLUSH,
              blk.VIRTIO_BLK_F_DISCARD,
              blk.VIRTIO_BLK_F_WRITE_ZEROES,
              blk.VIRTIO_BLK_F_CONFIG_WCE,
            ),
        });
        assert.equal((await r.run({ type: FLUSH })).status, UNSUPP);
        const seg = segments([{ sector: 0, num: 8 }]);
        assert.equal((await r.run({ type: DISCARD, out: seg })).status, UNSUPP);
        assert.equal((await r.run({ type: WRITE_ZEROES, out: seg })).status, UNSUPP);
        assert.deepEqual(kind.bytes(r.backing), initial);
      });

      test("DISCARD / WRITE_ZEROES payload not a multiple of 16 → IOERR", async () => {
        const r = await rig(kind);
        for (const type of [DISCARD, WRITE_ZEROES]) {
          for (const n of [8, 24, 17]) {
            const out = new Uint8Array(n); // a zero sector, 0 sectors: harmless if it were run
            assert.equal((await r.run({ type, out })).status, IOERR, `type ${type} payload ${n}`);
          }
        }
      });

      test("more segments than max_discard_seg / max_write_zeroes_seg → UNSUPP, nothing done", async () => {
        const r = await rig(kind, { config: { maxDiscardSeg: 2, maxWriteZeroesSeg: 2 } });
        const three = segments([
          { sector: 0, num: 1 },
          { sector: 8, num: 1 },
          { sector: 16, num: 1 },
        ]);
        assert.equal((await r.run({ type: DISCARD, out: three })).status, UNSUPP);
        assert.equal((await r.run({ type: WRITE_ZEROES, out: three })).status, UNSUPP);
        assert.deepEqual(kind.bytes(r.backing), initial);
        const two = segments([
          { sector: 0, num: 1 },
          { sector: 8, num: 1 },
        ]);
        assert.equal((await r.run({ type: WRITE_ZEROES, out: two })).status, OK);
      });

      test("segment flags other than UNMAP, or UNMAP on DISCARD → UNSUPP", async () => {
        const r = await rig(kind);
        const cases: [number, number][] = [
          [WRITE_ZEROES, 2],
          [WRITE_ZEROES, 0x80000000],
          [WRITE_ZEROES, UNMAP | 4],
          [DISCARD, UNMAP],
          [DISCARD, 2],
        ];
        for (const [type, flags] of cases) {
          const { status } = await r.run({ type, out: segments([{ sector: 0, num: 8, flags }]) });
          assert.equal(status, UNSUPP, `type ${type} flags ${flags}`);
        }
        assert.deepEqual(kind.bytes(r.backing), initial);
      });

      test("segment too long, unaligned or beyond capacity → IOERR, no segment done", async () => {
        const r = await rig(kind, {
          config: {
            maxDiscardSectors: 64,
            maxWriteZeroesSectors: 64,
            discardSectorAlignment: 8,
            maxDiscardSeg: 2,
            maxWriteZeroesSeg: 2,
            logicalBlockSize: 1024,
          },
        });
        const bad: [number, { sector: number | bigint; num: number }][] = [
          [WRITE_ZEROES, { sector: 0, num: 66 }],
          [DISCARD, { sector: 0, num: 72 }],
          [DISCARD, { sector: 4, num: 8 }],
          [DISCARD, { sector: 8, num: 4 }],
          [WRITE_ZEROES, { sector: 1, num: 2 }],
          [WRITE_ZEROES, { sector: 2, num: 3 }],
          [WRITE_ZEROES, { sector: CAPACITY - 2, num: 4 }],
          [DISCARD, { sector: CAPACITY, num: 8 }],
          [WRITE_ZEROES, { sector: 2n ** 64n - 2n, num: 4 }],
        ];
        for (const [type, seg] of bad) {
          // A valid first segment must not be executed either.
          const out = segments([{ sector: 16, num: 8 }, seg]);
          const { status } = await r.run({ type, out });
          assert.equal(status, IOERR, `type ${type} segment ${seg.sector}+${seg.num}`);
        }
        assert.deepEqual(kind.bytes(r.backing), initial);
        const ok = await r.run({
          type: WRITE_ZEROES,
          out: segments([{ sector: CAPACITY - 64, num: 64 }]),
        });
        assert.equal(ok.status, OK);
      });

      test("a backing-store I/O error → IOERR, logged with queue and request; the device stays usable", async () => {
        const inner = await kind.make(initial);
        opened.push(inner);
        const failing: BlkBacking = {
          get size() {
            return inner.size;
          },
          readOnly: false,
          readv: () => Promise.reject(new Error("EIO: injected read failure")),
          writev: (o, v) => inner.writev(o, v),
          flush: () => Promise.reject(new Error("EIO: injected flush failure")),
          discard: (o, l) => inner.discard(o, l),
          writeZeroes: (o, l, u) => inner.writeZeroes(o, l, u),
          close: () => inner.close(),
        };
        const r = new BlkRig({ backing: failing });
        const rd = await r.run({ type: IN, sector: 0, inLen: 512 });
        assert.equal(rd.status, IOERR);
        assert.equal(rd.len, 1, "no data bytes claimed");
        const fl = await r.run({ type: FLUSH });
        assert.equal(fl.status, IOERR);
        assert.equal(r.broken.length, 0, "device not broken");
        assert.equal(r.engine.halted, false);
        assert.equal(r.log.errors.length, 2);
        assert.match(
          r.log.errors[0]!,
          new RegExp(`vq 0 req ${rd.req.head}: IN .*injected read failure`),
        );
        assert.match(
          r.log.errors[1]!,
          new RegExp(`vq 0 req ${fl.req.head}: FLUSH .*injected flush failure`),
        );
        const wr = await r.run({ type: OUT, sector: 0, out: pattern(512, 5) });
        assert.equal(wr.status, OK, "still serving");
      });
    });

    describe("read-only device", () => {
      test("every write-type request fails with IOERR; the disk's bytes (and a file's mtime) are unchanged", async () => {
        const r = await rig(kind, { readOnly: true });
        assert.equal(r.cfg.readOnly, true);
        const path = r.backing instanceof FileBacking ? r.backing.path : undefined;
        const past = new Date("2020-01-01T00:00:00Z");
        if (path !== undefined) utimesSync(path, past, past);
        const before = path === undefined ? 0 : statSync(path).mtimeMs;
        const writes = [
          { type: OUT, sector: 0, out: pattern(4096, 6) },
          { type: OUT, sector: CAPACITY - 1, out: pattern(512, 6) },
          { type: WRITE_ZEROES, out: segments([{ sector: 0, num: 8 }]) },
          { type: WRITE_ZEROES, out: segments([{ sector: 0, num: 8, flags: UNMAP }]) },
          { type: DISCARD, out: segments([{ sector: 0, num: 8 }]) },
        ];
        for (const spec of writes) {
          const { status, len } = await r.run(spec);
          assert.equal(status, IOERR, `type ${spec.type}`);
          assert.equal(len, 1);
        }
        // Reads, FLUSH and GET_ID still work.
        const rd = await r.run({ type: IN, sector: 0, inLen: 4096 });
        assert.equal(rd.status, OK);
        assert.deepEqual(r.readIn(rd.req), slice(0, 4096));
        assert.equal((await r.run({ type: FLUSH })).status, OK);
        assert.equal((await r.run({ type: GET_ID, inLen: 20 })).status, OK);
        assert.deepEqual(kind.bytes(r.backing), initial);
        if (path !== undefined) assert.equal(statSync(path).mtimeMs, before, "mtime unchanged");
      });
    });
  });
}

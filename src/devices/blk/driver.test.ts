/**
 * BlkDriver against this project's device (the ring openRing builds +
 * BlkQueueEngine + a backing store) in one thread, every case on split and
 * on packed rings (packed at sizes that are not powers of two): every request type, local refusals and
 * API misuse, status errors, used-length checks, splitting at seg_max /
 * size_max, indirect tables, many requests in flight (slot, descriptor and
 * bounce waits), multiple queues, reset and broken devices.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { ErrorCode, VirtioError, isVirtioError } from "../../errors.ts";
import {
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_OUT,
} from "../../spec/blk.ts";
import { MemoryBacking } from "./backing.ts";
import { BlkIoError } from "./driver-request.ts";
import type { RingLayoutKind } from "../../ring/ring-layout.ts";
import {
  ControlledBacking,
  blkRig as newRig,
  outcomes,
  patternBytes,
  within,
  type BlkRigOptions,
} from "./driver-test-support.ts";

const KiB = 1024;

function controlled(bytes = 1 << 20, readOnly = false): ControlledBacking {
  return new ControlledBacking(new MemoryBacking(bytes, { readOnly }));
}

function disk(r: { backing: unknown }): Uint8Array {
  const b = r.backing;
  return b instanceof ControlledBacking ? b.inner.snapshot() : (b as MemoryBacking).snapshot();
}

function assertCode(e: unknown, code: string): void {
  assert.ok(isVirtioError(e), `expected a VirtioError, got ${String(e)}`);
  assert.equal(e.code, code);
}

/** Packed rings run at sizes that are not powers of two: 7/8 of the split size (64 → 56, 16 → 14, 8 → 7). */
const sizeFor = (layout: RingLayoutKind, n: number): number =>
  layout === "packed" ? n - n / 8 : n;

/** Every case, on rings of `layout`. */
function driverCases(layout: RingLayoutKind): void {
  // The cases' rig: `layout` rings, sized for the layout.
  const blkRig = (o: BlkRigOptions = {}): ReturnType<typeof newRig> =>
    newRig({ ...o, layout, queueSize: sizeFor(layout, o.queueSize ?? 64) });

  for (const call of ["microtask", "sync"] as const) {
    for (const eventIdx of [true, false]) {
      const name = `${call} calls, ${eventIdx ? "EVENT_IDX" : "flags"}`;
      const opts: BlkRigOptions = { call, exclude: eventIdx ? [] : ["RING_EVENT_IDX"] };

      test(`round trip: write then read, copy and zero-copy (${name})`, async () => {
        const r = blkRig(opts);
        assert.equal(r.driverQueues[0]!.layout, layout);
        const data = patternBytes(64 * KiB, 1);
        await within(r.driver.write(4096, data));
        const back = new Uint8Array(64 * KiB);
        await within(r.driver.read(4096, back));
        assert.deepEqual(back, data);
        assert.deepEqual(disk(r).subarray(4096, 4096 + data.length), data);
        // Zero-copy: two segments in guest memory above the driver's plan.
        const base = r.plan.end + 0x10000;
        const segs = [
          { addr: base, len: 1536 },
          { addr: base + 8192, len: 2560 },
        ];
        r.memory.write(base, data.subarray(0, 1536));
        r.memory.write(base + 8192, data.subarray(1536, 4096));
        await within(r.driver.writeSegments(512 * KiB, segs));
        assert.deepEqual(disk(r).subarray(512 * KiB, 512 * KiB + 4096), data.subarray(0, 4096));
        r.memory.fill(base, 16384, 0);
        await within(r.driver.readSegments(4096, segs));
        const got = new Uint8Array(4096);
        r.memory.read(base, got.subarray(0, 1536));
        r.memory.read(base + 8192, got.subarray(1536));
        assert.deepEqual(got, data.subarray(0, 4096));
        // GET_ID completes inside the kick (a re-entrant call in "sync" mode).
        assert.equal(await within(r.driver.getId()), "virtio-ts-disk");
        assert.equal(r.driver.pending, 0);
        assert.equal(r.driver.bounceFreeBytes, 1 << 20, "every bounce page is back");
      });

      test(`many requests at once: one kick per batch, all complete (${name})`, async () => {
        const r = blkRig({ ...opts, queueSize: 16 });
        const ps: Promise<void>[] = [];
        for (let i = 0; i < 100; i++) ps.push(r.driver.write(i * 4096, patternBytes(4096, i)));
        const res = await outcomes(ps);
        assert.ok(res.every((x) => x.status === "fulfilled"));
        const d = disk(r);
        for (let i = 0; i < 100; i++)
          assert.deepEqual(d.subarray(i * 4096, (i + 1) * 4096), patternBytes(4096, i));
        assert.equal(r.driver.stats.requests, 100);
        assert.equal(r.driver.stats.completions, 100);
        assert.ok(r.driver.stats.slotWaits > 0, "more requests than slots waited");
        assert.ok(r.kicks[0]! < 100, `kicks ${r.kicks[0]} are batched`);
      });
    }
  }

  test("flush, getId, discard and writeZeroes reach the device", async () => {
    const backing = controlled();
    const r = blkRig({ backing, device: { serial: "disk-serial-0123" } });
    await within(r.driver.write(0, patternBytes(64 * KiB, 3)));
    await within(r.driver.flush());
    assert.equal(backing.calls.flush, 1);
    assert.equal(await within(r.driver.getId()), "disk-serial-0123");
    await within(r.driver.discard([{ offset: 4096, length: 8192 }]));
    assert.equal(backing.calls.discard, 1);
    await within(r.driver.writeZeroes([{ offset: 32 * KiB, length: 4096 }], { unmap: true }));
    await within(r.driver.writeZeroes([{ offset: 48 * KiB, length: 512 }]));
    assert.deepEqual(backing.unmaps, [true, false]);
    const d = backing.inner.snapshot();
    assert.ok(d.subarray(4096, 12288).every((b) => b === 0));
    assert.ok(d.subarray(32 * KiB, 36 * KiB).every((b) => b === 0));
    assert.ok(d.subarray(48 * KiB, 48 * KiB + 512).every((b) => b === 0));
    assert.deepEqual(
      d.subarray(12288, 32 * KiB),
      patternBytes(64 * KiB, 3).subarray(12288, 32 * KiB),
    );
    // A 20-byte serial has no NUL terminator.
    const r20 = blkRig({ device: { serial: "ABCDEFGHIJKLMNOPQRST" } });
    assert.equal(await within(r20.driver.getId()), "ABCDEFGHIJKLMNOPQRST");
  });

  test("DISCARD and WRITE_ZEROES split at max sectors and max segments", async () => {
    const backing = controlled();
    const r = blkRig({
      backing,
      device: {
        maxDiscardSectors: 16,
        maxDiscardSeg: 3,
        maxWriteZeroesSectors: 8,
        maxWriteZeroesSeg: 1,
      },
    });
    await within(r.driver.write(0, patternBytes(1 << 20, 9)));
    r.deviceQueues[0]!.chains.length = 0;
    // 64 KiB = 128 sectors → 8 segments of 16 → 3 requests of ≤ 3 segments.
    await within(r.driver.discard([{ offset: 0, length: 64 * KiB }]));
    const discards = r.deviceQueues[0]!.chains;
    assert.equal(discards.length, 3);
    assert.deepEqual(
      discards.map((c) => c.readable[1]),
      [48, 48, 32],
    );
    assert.ok(
      backing.inner
        .snapshot()
        .subarray(0, 64 * KiB)
        .every((b) => b === 0),
    );
    r.deviceQueues[0]!.chains.length = 0;
    await within(
      r.driver.writeZeroes([
        { offset: 128 * KiB, length: 8192 },
        { offset: 256 * KiB, length: 512 },
      ]),
    );
    assert.equal(r.deviceQueues[0]!.chains.length, 3); // 16 sectors / 8 → 2, plus one
    const d = backing.inner.snapshot();
    assert.ok(d.subarray(128 * KiB, 136 * KiB).every((b) => b === 0));
    assert.ok(d.subarray(256 * KiB, 256 * KiB + 512).every((b) => b === 0));
  });

  test("DISCARD ranges are trimmed to discard_sector_alignment; nothing aligned sends nothing", async () => {
    const backing = controlled();
    const r = blkRig({ backing, device: { discardSectorAlignment: 8 } });
    await within(r.driver.write(0, patternBytes(64 * KiB, 4)));
    const before = r.driver.stats.requests;
    await within(r.driver.discard([{ offset: 512, length: 2048 }]));
    assert.equal(r.driver.stats.requests, before, "no aligned part: nothing sent");
    await within(r.driver.discard([{ offset: 512, length: 12 * KiB }]));
    const d = backing.inner.snapshot();
    const want = patternBytes(64 * KiB, 4);
    assert.deepEqual(d.subarray(0, 4096), want.subarray(0, 4096), "unaligned head kept");
    assert.ok(
      d.subarray(4096, 12288).every((b) => b === 0),
      "aligned middle discarded",
    );
    assert.deepEqual(d.subarray(12288, 16384), want.subarray(12288, 16384), "unaligned tail kept");
  });

  test("copy path splits at size_max and seg_max; chains respect both", async () => {
    const r = blkRig({ device: { segMax: 4, sizeMax: 4096 }, indirectEntries: 0 });
    assert.equal(r.driver.maxSegments, 4);
    assert.equal(r.driver.maxRequestBytes, 16 * KiB);
    const data = patternBytes(100 * KiB, 5);
    await within(r.driver.write(0, data));
    const chains = r.deviceQueues[0]!.chains;
    assert.equal(chains.length, 7); // 100 KiB / 16 KiB
    for (const c of chains) {
      assert.equal(c.readable[0], 16, "header first");
      assert.deepEqual(c.writable, [1], "status last");
      const dataSegs = c.readable.slice(1);
      assert.ok(dataSegs.length <= 4);
      assert.ok(dataSegs.every((n) => n <= 4096));
      assert.equal(c.indirect, false);
    }
    const back = new Uint8Array(data.length);
    await within(r.driver.read(0, back));
    assert.deepEqual(back, data);
  });

  test("long zero-copy scatter-gather lists use indirect tables, split at seg_max, unaligned pieces", async () => {
    const r = blkRig({ queueSize: 64, indirectEntries: 32, device: { sizeMax: 1000 } });
    assert.equal(r.driver.maxSegments, 30);
    // 150 segments of 300 bytes at scattered addresses: 45000 bytes… padded to a block multiple.
    const base = r.plan.end + 0x10000;
    const segs = [];
    let total = 0;
    for (let i = 0; i < 150; i++) {
      const len = i === 149 ? 300 + (512 - ((150 * 300) % 512)) : 300;
      segs.push({ addr: base + i * 2048, len });
      total += len;
    }
    assert.equal(total % 512, 0);
    const data = patternBytes(total, 6);
    let at = 0;
    for (const s of segs) {
      r.memory.write(s.addr, data.subarray(at, at + s.len));
      at += s.len;
    }
    await within(r.driver.writeSegments(8192, segs));
    const chains = r.deviceQueues[0]!.chains;
    assert.ok(chains.length >= 2);
    for (const c of chains) {
      assert.equal(c.indirect, true, "every request in one indirect table");
      const dataSegs = c.readable.slice(1);
      assert.ok(dataSegs.length <= 30, `${dataSegs.length} data segments`);
      assert.ok(dataSegs.every((n) => n <= 1000));
      assert.equal(dataSegs.reduce((a, b) => a + b, 0) % 512, 0, "each request is whole blocks");
    }
    assert.deepEqual(disk(r).subarray(8192, 8192 + total), data);
    for (const s of segs) r.memory.fill(s.addr, s.len, 0);
    await within(r.driver.readSegments(8192, segs));
    at = 0;
    for (const s of segs) {
      const got = new Uint8Array(s.len);
      r.memory.read(s.addr, got);
      assert.deepEqual(got, data.subarray(at, at + s.len));
      at += s.len;
    }
  });

  test("without indirect tables, direct chains wait for free descriptors", async () => {
    const r = blkRig({ queueSize: 8, indirectEntries: 0, device: { sizeMax: 512 } });
    // Each 2 KiB write is 4 data segments + 2 = 6 descriptors: only one fits an 8-entry ring at a time.
    const ps = [];
    for (let i = 0; i < 12; i++) ps.push(r.driver.write(i * 2048, patternBytes(2048, 20 + i)));
    const res = await outcomes(ps);
    assert.ok(res.every((x) => x.status === "fulfilled"));
    assert.ok(r.driver.stats.descriptorWaits > 0);
    for (let i = 0; i < 12; i++)
      assert.deepEqual(disk(r).subarray(i * 2048, (i + 1) * 2048), patternBytes(2048, 20 + i));
  });

  test("an exhausted bounce pool makes requests wait, first come first served across queues", async () => {
    const r = blkRig({ numQueues: 3, bounceBytes: 16 * KiB, device: {} });
    const ps: Promise<void>[] = [];
    const data: Uint8Array[] = [];
    for (let i = 0; i < 30; i++) {
      data.push(patternBytes(12 * KiB, 40 + i));
      ps.push(r.driver.write(i * 12 * KiB, data[i]!));
    }
    const res = await outcomes(ps);
    assert.ok(res.every((x) => x.status === "fulfilled"));
    assert.ok(r.driver.stats.bounceWaits > 0);
    assert.equal(r.driver.bounceFreeBytes, 16 * KiB);
    const backs = data.map((d) => new Uint8Array(d.length));
    await within(Promise.all(backs.map((b, i) => r.driver.read(i * 12 * KiB, b))));
    backs.forEach((b, i) => assert.deepEqual(b, data[i]));
  });

  test("a transfer larger than the bounce pool goes through in pieces", async () => {
    const r = blkRig({ bounceBytes: 8 * KiB, diskBytes: 2 << 20 });
    const data = patternBytes(1 << 20, 7);
    await within(r.driver.write(4096, data));
    const back = new Uint8Array(data.length);
    await within(r.driver.read(4096, back));
    assert.deepEqual(back, data);
    assert.ok(r.driver.stats.requests >= 256);
  });

  test("multiple queues: round robin, explicit queue, each engine serves its own", async () => {
    const r = blkRig({ numQueues: 4 });
    const ps = [];
    for (let i = 0; i < 40; i++) ps.push(r.driver.write(i * 512, patternBytes(512, i)));
    await within(Promise.all(ps));
    for (const q of r.deviceQueues) assert.equal(q.chains.length, 10);
    await within(r.driver.flush({ queue: 2 }));
    assert.equal(r.deviceQueues[2]!.chains.length, 11);
    await assert.rejects(r.driver.flush({ queue: 4 }), RangeError);
    assert.deepEqual(
      disk(r).subarray(0, 40 * 512),
      Uint8Array.from(
        { length: 40 * 512 },
        (_, j) => patternBytes(512, Math.floor(j / 512))[j % 512]!,
      ),
    );
  });

  test("device status IOERR and UNSUPP reject with BlkIoError; other requests are unaffected", async () => {
    const backing = controlled();
    const r = blkRig({ backing, device: { sizeMax: 4096, segMax: 1 } });
    backing.failAt.add(8192);
    // A 16 KiB write is 4 requests; the one at 8192 fails.
    const bad = r.driver.write(0, patternBytes(16 * KiB, 1));
    const good = r.driver.write(64 * KiB, patternBytes(4096, 2));
    const [b, g] = await outcomes([bad, good]);
    assert.equal(g!.status, "fulfilled");
    assert.equal(b!.status, "rejected");
    const e = (b as PromiseRejectedResult).reason as unknown;
    assert.ok(e instanceof BlkIoError);
    assert.equal(e.code, ErrorCode.BLK_IOERR);
    assert.equal(e.status, VIRTIO_BLK_S_IOERR);
    assert.equal(e.type, VIRTIO_BLK_T_OUT);
    assert.equal(e.local, false);
    assert.equal(r.driver.pending, 0);
    // Read failures too.
    backing.failAt.add(4096 * 30);
    await assert.rejects(r.driver.read(4096 * 30, new Uint8Array(4096)), (x: unknown) => {
      assert.ok(x instanceof BlkIoError);
      return x.status === VIRTIO_BLK_S_IOERR;
    });
    backing.failFlush = true;
    await assert.rejects(r.driver.flush(), BlkIoError);
    // UNSUPP: the driver believes DISCARD was negotiated, the device did not take it.
    const r2 = blkRig({ deviceFeatures: (f) => f & ~(1n << 13n) });
    await assert.rejects(r2.driver.discard([{ offset: 0, length: 512 }]), (x: unknown) => {
      assert.ok(x instanceof BlkIoError);
      assert.equal(x.code, ErrorCode.BLK_UNSUPP);
      assert.equal(x.status, VIRTIO_BLK_S_UNSUPP);
      assert.equal(x.local, false);
      return true;
    });
    await within(r2.driver.write(0, new Uint8Array(512)));
  });

  test("read-only device: writes are refused locally; the device would answer IOERR too", async () => {
    const backing = controlled(1 << 20, true);
    const r = blkRig({ backing });
    assert.equal(r.driver.config.readOnly, true);
    for (const p of [
      r.driver.write(0, new Uint8Array(512)),
      r.driver.discard([{ offset: 0, length: 512 }]),
      r.driver.writeZeroes([{ offset: 0, length: 512 }]),
    ]) {
      await assert.rejects(p, (x: unknown) => {
        assert.ok(x instanceof BlkIoError);
        assert.equal(x.local, true);
        assert.equal(x.status, VIRTIO_BLK_S_IOERR);
        return true;
      });
    }
    assert.equal(r.driver.stats.requests, 0);
    await within(r.driver.read(0, new Uint8Array(4096)));
    // A driver that ignores RO gets IOERR from the device, which writes nothing.
    const r2 = blkRig({
      backing: controlled(1 << 20, true),
      driverConfig: (c) => ({ ...c, readOnly: false }),
    });
    await assert.rejects(within(r2.driver.write(0, new Uint8Array(512).fill(7))), (x: unknown) => {
      assert.ok(x instanceof BlkIoError);
      assert.equal(x.local, false);
      return x.status === VIRTIO_BLK_S_IOERR;
    });
    assert.ok((r2.backing as ControlledBacking).inner.snapshot().every((b) => b === 0));
  });

  test("features not negotiated: DISCARD / WRITE_ZEROES refused locally, FLUSH is a no-op", async () => {
    const backing = controlled();
    const r = blkRig({ backing, exclude: ["DISCARD", "WRITE_ZEROES", "FLUSH"] });
    await assert.rejects(r.driver.discard([{ offset: 0, length: 512 }]), (x: unknown) => {
      assert.ok(x instanceof BlkIoError);
      assert.equal(x.code, ErrorCode.BLK_UNSUPP);
      assert.equal(x.type, VIRTIO_BLK_T_DISCARD);
      return x.local;
    });
    await assert.rejects(r.driver.writeZeroes([{ offset: 0, length: 512 }]), BlkIoError);
    await within(r.driver.flush());
    assert.equal(backing.calls.flush, 0);
    assert.equal(r.driver.stats.requests, 0);
    assert.equal(r.driver.config.writeback, false);
  });

  test("API misuse rejects with RangeError / TypeError and sends nothing", async () => {
    const r = blkRig();
    const cap = r.driver.config.capacityBytes;
    const base = r.plan.end + 0x10000;
    const cases: [
      Promise<unknown>,
      ErrorConstructor | RangeErrorConstructor | TypeErrorConstructor,
    ][] = [
      [r.driver.read(100, new Uint8Array(512)), RangeError],
      [r.driver.read(0, new Uint8Array(100)), RangeError],
      [r.driver.read(-512, new Uint8Array(512)), RangeError],
      [r.driver.read(cap, new Uint8Array(512)), RangeError],
      [r.driver.write(cap - 512, new Uint8Array(1024)), RangeError],
      [r.driver.read(0, [1, 2] as unknown as Uint8Array), TypeError],
      [r.driver.read(0, new Uint8Array(512), { queue: 1 }), RangeError],
      [r.driver.readSegments(0, [{ addr: 16 << 20, len: 512 }]), RangeError],
      [r.driver.readSegments(0, [{ addr: base, len: 0 }]), RangeError],
      [r.driver.readSegments(0, [{ addr: r.plan.arena.addr, len: 512 }]), RangeError],
      [r.driver.readSegments(0, "x" as unknown as []), TypeError],
      [r.driver.discard([{ offset: 0, length: 100 }]), RangeError],
      [r.driver.writeZeroes([{ offset: cap, length: 512 }]), RangeError],
      [r.driver.discard([null] as unknown as []), TypeError],
    ];
    for (const [p, type] of cases) await assert.rejects(p, type);
    // Too fragmented: seg_max 2 segments of 100 bytes never make a block.
    const r2 = blkRig({ device: { segMax: 2 } });
    const segs = Array.from({ length: 10 }, (_, i) => ({
      addr: base + i * 256,
      len: i < 9 ? 100 : 124,
    }));
    await assert.rejects(r2.driver.readSegments(0, segs), /fragmented/);
    assert.equal(r.driver.stats.requests + r2.driver.stats.requests, 0);
    // Zero-length transfers resolve without a request.
    await within(r.driver.read(0, new Uint8Array(0)));
    assert.equal(r.driver.stats.requests, 0);
  });

  test("used length 0, a short OK read and an unknown status reject with codes", async () => {
    const r = blkRig();
    const dq = r.deviceQueues[0]!;
    dq.usedLenOverride = 0;
    await assert.rejects(r.driver.flush(), (e: unknown) => {
      assertCode(e, ErrorCode.BLK_USED_LEN);
      return true;
    });
    dq.usedLenOverride = 100; // a 4 KiB read claims 100 bytes
    await assert.rejects(r.driver.read(0, new Uint8Array(4096)), (e: unknown) => {
      assertCode(e, ErrorCode.BLK_USED_LEN);
      return true;
    });
    dq.usedLenOverride = null;
    dq.statusOverride = 7;
    await assert.rejects(r.driver.write(0, new Uint8Array(512)), (e: unknown) => {
      assertCode(e, ErrorCode.BLK_BAD_STATUS);
      assert.equal((e as VirtioError).details.status, 7);
      return true;
    });
    dq.statusOverride = null;
    await within(r.driver.write(0, new Uint8Array(512)));
  });

  test("reset with requests in flight: the device's completions resolve, the rest reject DEVICE_RESET", async () => {
    const backing = controlled();
    const r = blkRig({ backing, maxInFlight: 4 });
    backing.hold = true;
    const settled: string[] = [];
    const ps = Array.from({ length: 20 }, (_, i) => {
      const p = r.driver.write(i * 4096, patternBytes(4096, i));
      p.then(
        () => settled.push(`ok ${i}`),
        () => settled.push(`err ${i}`),
      );
      return p;
    });
    await new Promise((res) => setTimeout(res, 10));
    assert.equal(backing.heldCount, 4, "the device took 4 requests");
    // Device reset: in-flight I/O completes into the used ring, then the device stops.
    const stopped = Promise.all(r.engines.map((e) => e.stop()));
    backing.release();
    await within(stopped);
    r.driver.reset();
    const res = await outcomes(ps);
    assert.equal(res.filter((x) => x.status === "fulfilled").length, 4);
    for (const x of res.filter((y) => y.status === "rejected"))
      assertCode(x.reason, ErrorCode.DEVICE_RESET);
    assert.equal(r.driver.pending, 0);
    assert.equal(r.driver.state, "reset");
    assert.equal(r.driverQueues[0]!.numFree, r.driverQueues[0]!.size);
    assert.equal(r.driverQueues[0]!.numOutstanding, 0);
    const count = settled.length;
    await assert.rejects(r.driver.read(0, new Uint8Array(512)), (e: unknown) => {
      assertCode(e, ErrorCode.DEVICE_RESET);
      return true;
    });
    r.driver.processUsed(0);
    await new Promise((res) => setTimeout(res, 5));
    assert.equal(settled.length, count, "nothing settles twice");
    assert.equal(new Set(settled.map((s) => s.split(" ")[1])).size, 20);
  });

  test("reset while the device still holds requests: all pending reject, none resolves afterwards", async () => {
    const backing = controlled();
    const r = blkRig({ backing });
    backing.hold = true;
    let resolved = 0;
    const ps = Array.from({ length: 70 }, (_, i) => {
      const p = r.driver.read(i * 512, new Uint8Array(512));
      p.then(
        () => resolved++,
        () => {},
      );
      return p;
    });
    await new Promise((res) => setTimeout(res, 10));
    // The device drops its in-flight work (as a reset that lost them) and is reset.
    for (const e of r.engines) e.halt();
    r.driver.reset();
    const res = await outcomes(ps);
    assert.ok(res.every((x) => x.status === "rejected"));
    for (const x of res) assertCode(x.reason, ErrorCode.DEVICE_RESET);
    backing.release();
    await new Promise((res) => setTimeout(res, 10));
    r.driver.processUsed(0);
    assert.equal(resolved, 0);
    assert.equal(r.driver.bounceFreeBytes, 1 << 20, "every bounce page is back");
  });

  test("a device that breaks the ring: pending requests on that queue reject QUEUE_BROKEN, other queues go on", async () => {
    const backing = controlled();
    const broken: [number, string][] = [];
    const r = blkRig({
      backing,
      numQueues: 2,
      driver: { onQueueBroken: (i, e) => broken.push([i, e.code]) },
    });
    await within(r.driver.write(0, patternBytes(4096, 1), { queue: 0 }));
    backing.hold = true;
    const q0 = Array.from({ length: 10 }, (_, i) =>
      r.driver.read(i * 512, new Uint8Array(512), { queue: 0 }),
    );
    const q1 = r.driver.read(0, new Uint8Array(4096), { queue: 1 });
    await new Promise((res) => setTimeout(res, 10));
    r.deviceQueues[0]!.corruptUsedId = 9999;
    backing.release();
    const res = await outcomes(q0);
    // Entries the device published before the bad one are good: those requests resolve.
    const rejected = res.filter((x) => x.status === "rejected");
    assert.ok(rejected.length >= 1);
    for (const x of rejected) {
      const e = x.reason as VirtioError;
      assertCode(e, ErrorCode.QUEUE_BROKEN);
      assert.equal(e.details.reason, ErrorCode.USED_ID_OUT_OF_RANGE);
      assertCode(e.cause, ErrorCode.USED_ID_OUT_OF_RANGE);
    }
    await within(q1);
    assert.deepEqual(broken, [[0, ErrorCode.USED_ID_OUT_OF_RANGE]]);
    assert.ok(r.driver.queueBroken(0) !== null);
    assert.equal(r.driver.queueBroken(1), null);
    await assert.rejects(r.driver.flush({ queue: 0 }), (e: unknown) => {
      assertCode(e, ErrorCode.QUEUE_BROKEN);
      return true;
    });
    // Round robin skips the broken queue.
    for (let i = 0; i < 4; i++) await within(r.driver.read(0, new Uint8Array(512)));
    assert.equal(r.driver.pending, 0);
    // A reset clears it.
    r.driver.reset();
    assert.equal(r.driverQueues[0]!.broken, null);
  });

  test("DEVICE_NEEDS_RESET: every pending request rejects DEVICE_BROKEN; later completions are ignored", async () => {
    const backing = controlled();
    const r = blkRig({ backing, numQueues: 2 });
    backing.hold = true;
    let resolved = 0;
    const ps = Array.from({ length: 8 }, (_, i) => {
      const p = r.driver.write(i * 512, new Uint8Array(512));
      p.then(
        () => resolved++,
        () => {},
      );
      return p;
    });
    await new Promise((res) => setTimeout(res, 10));
    const cause = new VirtioError(ErrorCode.DESC_LOOP, "device saw a loop");
    r.driver.markDeviceBroken(cause);
    const res = await outcomes(ps);
    for (const x of res) {
      const e = (x as PromiseRejectedResult).reason as VirtioError;
      assertCode(e, ErrorCode.DEVICE_BROKEN);
      assert.equal(e.cause, cause);
    }
    backing.release();
    await new Promise((res) => setTimeout(res, 10));
    r.driver.processUsed(0);
    r.driver.processUsed(1);
    assert.equal(resolved, 0);
    await assert.rejects(r.driver.getId(), (e: unknown) => {
      assertCode(e, ErrorCode.DEVICE_BROKEN);
      return true;
    });
    assert.equal(r.driver.state, "broken");
    r.driver.reset();
    assert.equal(r.driver.state, "reset");
  });

  test("a transport whose notify throws makes the device broken; nothing hangs", async () => {
    const r = blkRig({
      driver: {
        transport: {
          notify: () => {
            throw new Error("eventfd closed");
          },
        },
      },
    });
    await assert.rejects(within(r.driver.read(0, new Uint8Array(512))), (e: unknown) => {
      assertCode(e, ErrorCode.DEVICE_BROKEN);
      return /eventfd closed/.test((e as Error).message);
    });
  });

  test("kicks: one check per turn with batchKicks (default), one per submission without", async () => {
    for (const batchKicks of [true, false]) {
      const r = blkRig({ driver: { batchKicks } });
      const ps = [];
      for (let i = 0; i < 5; i++) ps.push(r.driver.write(i * 512, new Uint8Array(512)));
      await within(Promise.all(ps));
      const checks = r.driver.stats.kicks + r.driver.stats.kicksSuppressed;
      assert.equal(checks, batchKicks ? 1 : 5, `batchKicks ${batchKicks}`);
      assert.equal(r.kicks[0], r.driver.stats.kicks);
    }
  });

  test("70000 requests through a small ring: the 16-bit indexes (split) or the wrap counters (packed) wrap many times", async () => {
    const r = blkRig({ queueSize: 8, call: "sync" });
    const q = r.driverQueues[0]!;
    const ids = new Set<string>();
    const TOTAL = 70_000;
    for (let done = 0; done < TOTAL;) {
      const batch = Array.from({ length: Math.min(32, TOTAL - done) }, (_, i) =>
        (done + i) % 2 === 0
          ? r.driver.getId()
          : r.driver.read(((done + i) % 64) * 512, new Uint8Array(512)),
      );
      for (const v of await within(Promise.all(batch), 10_000))
        if (typeof v === "string") ids.add(v);
      done += batch.length;
    }
    assert.deepEqual([...ids], ["virtio-ts-disk"]);
    assert.equal(r.driver.stats.completions, TOTAL);
    assert.equal(q.numOutstanding, 0);
    assert.equal(q.broken, null);
    // Where the driver's next request goes: split, avail.idx mod 2^16; packed, slot and wrap counter
    // (every request here is header + data + status: one descriptor with indirect tables).
    const at =
      layout === "split"
        ? TOTAL & 0xffff
        : (TOTAL % q.size) | (((Math.floor(TOTAL / q.size) + 1) % 2) << 15);
    assert.equal(q.notificationData, at);
  });

  test("updateConfig takes a new capacity", async () => {
    const r = blkRig({ diskBytes: 1 << 20 });
    const cap = r.driver.config.capacityBytes;
    await assert.rejects(r.driver.read(cap, new Uint8Array(512)), RangeError);
    r.driver.updateConfig({ ...r.driver.config, capacity: 1, capacityBytes: 512 });
    assert.equal(r.driver.config.capacityBytes, 512);
    await assert.rejects(r.driver.read(512, new Uint8Array(512)), RangeError);
    await within(r.driver.read(0, new Uint8Array(512)));
  });

  test("a transport that decides kicks itself (kick form); exactly one form is required", async () => {
    const asked: number[] = [];
    const holder: { r: ReturnType<typeof blkRig> | null } = { r: null };
    const r = blkRig({
      driver: {
        transport: {
          kick: (i) => {
            asked.push(i);
            const dq = holder.r!.driverQueues[i]!;
            if (!dq.kickNeeded()) return false;
            holder.r!.engines[i]!.kick();
            return true;
          },
        },
      },
    });
    holder.r = r;
    await within(r.driver.write(0, patternBytes(8192, 2)));
    assert.ok(asked.length >= 1);
    assert.equal(r.driver.stats.kicks + r.driver.stats.kicksSuppressed, asked.length);
    const { BlkDriver } = await import("./driver.ts");
    const base = {
      memory: r.memory,
      queues: r.driverQueues,
      config: r.driver.config,
      arena: r.plan.arena,
      indirectEntries: r.plan.indirectEntries,
    };
    assert.throws(() => new BlkDriver({ ...base, transport: {} }), TypeError);
    assert.throws(
      () => new BlkDriver({ ...base, transport: { notify: () => {}, kick: () => true } }),
      TypeError,
    );
    assert.throws(
      () => new BlkDriver({ ...base, transport: { notify: () => {} }, indirectEntries: undefined }),
      RangeError,
    );
  });

  test("bounce memory is served first come first served: a small request does not pass a waiting large one", async () => {
    const backing = controlled();
    const r = blkRig({ backing, numQueues: 3, bounceBytes: 16 * KiB });
    assert.equal(r.driver.bounceFreeBytes, 16 * KiB);
    backing.hold = true;
    const a = r.driver.write(0, patternBytes(8 * KiB, 1), { queue: 0 });
    await new Promise((res) => setTimeout(res, 5));
    assert.equal(r.driver.stats.requests, 1);
    const b = r.driver.write(64 * KiB, patternBytes(12 * KiB, 2), { queue: 1 }); // 8 KiB free: waits
    const c = r.driver.write(128 * KiB, patternBytes(4 * KiB, 3), { queue: 2 }); // would fit: waits behind b
    await new Promise((res) => setTimeout(res, 5));
    assert.equal(r.driver.stats.requests, 1, "neither b nor c was submitted");
    assert.ok(r.driver.stats.bounceWaits >= 2);
    assert.equal(r.deviceQueues[2]!.chains.length, 0);
    backing.release();
    await within(Promise.all([a, b, c]));
    assert.equal(r.driver.stats.requests, 3);
    const d = backing.inner.snapshot();
    assert.deepEqual(d.subarray(64 * KiB, 76 * KiB), patternBytes(12 * KiB, 2));
    assert.deepEqual(d.subarray(128 * KiB, 132 * KiB), patternBytes(4 * KiB, 3));
  });
}

for (const layout of ["split", "packed"] as const)
  describe(`${layout} rings`, () => driverCases(layout));

/**
 * docs/conformance.md "Ring violations": every case of the table, on the device
 * side of the split virtqueue, plus the configuration rejections and the
 * cases that must be accepted. Each violation is checked for the documented
 * code, a broken and inert queue, one onBroken call, and untouched memory
 * (rings and buffers sit in regions surrounded by holes, next to canary
 * guard regions; see ring-fixture.ts).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { ErrorCode, isVirtioError } from "../../src/errors.ts";
import { GuestMemory } from "../../src/memory/guest-memory.ts";
import { DeviceQueue } from "../../src/ring/device-queue.ts";
import { vringLayout } from "../../src/ring/layout.ts";
import { MockSplitQueue, chainEntries } from "../../src/testing/index.ts";
import {
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  availRingSize,
  descTableSize,
  usedRingSize,
} from "../../src/spec/virtqueue.ts";
import { Fixture, layoutFor } from "./ring-fixture.ts";

const N = 8;
const NEXT = VIRTQ_DESC_F_NEXT;
const WRITE = VIRTQ_DESC_F_WRITE;
const INDIRECT = VIRTQ_DESC_F_INDIRECT;

/** A primed fixture (one chain completed, one in flight) with descriptors 4.. free. */
const primed = (size = N, config = {}) => new Fixture(size, config).prime();

// ---- avail ring ----------------------------------------------------------------

test("AVAIL_IDX_JUMP: avail.idx more than queue-size ahead (mod 2^16), via every entry point", () => {
  for (const ahead of [N + 1, N + 2, 0x8000, 0xffff]) {
    for (const entry of ["popAvail", "hasAvailable", "enableNotification"] as const) {
      for (const eventIdx of [false, true]) {
        const fx = primed(N, { eventIdx });
        // enableNotification legitimately writes avail_event / used.flags before its re-check
        // finds the jump; write the same value beforehand so "no byte changed" stays exact.
        if (entry === "enableNotification") assert.equal(fx.q.enableNotification(), false);
        fx.drv.availIdx = fx.q.nextAvail + ahead;
        const what = `ahead ${ahead} via ${entry}, eventIdx ${eventIdx}`;
        const err = fx.expectBroken(ErrorCode.AVAIL_IDX_JUMP, what, () => fx.q[entry]());
        assert.equal(err.details.availIdx, (fx.q.nextAvail + ahead) & 0xffff);
        assert.equal(err.details.nextAvail, fx.q.nextAvail);
      }
    }
  }
});

test("AVAIL_IDX_JUMP: the index moving backwards, and from a start near the wrap", () => {
  const fx = primed();
  fx.drv.availIdx = fx.q.nextAvail - 1;
  fx.expectBroken(ErrorCode.AVAIL_IDX_JUMP, "backwards");
  const fx2 = new Fixture(N, { nextAvail: 65530 });
  fx2.drv.availIdx = 65530 + N + 1; // wraps to 3
  fx2.expectBroken(ErrorCode.AVAIL_IDX_JUMP, "across the wrap");
});

test("HEAD_OUT_OF_RANGE: a head from the avail ring ≥ queue size", () => {
  for (const head of [N, N + 1, 0x8000, 0xffff]) {
    const fx = primed();
    fx.drv.publish(head);
    const err = fx.expectBroken(ErrorCode.HEAD_OUT_OF_RANGE, `head ${head}`);
    assert.equal(err.details.head, head);
    assert.match(err.message, new RegExp(`head ${head}\\b`));
  }
});

test("TOO_MANY_IN_FLIGHT: more chains in flight than the queue size", () => {
  const fx = new Fixture(4);
  for (let k = 0; k < 4; k++)
    fx.drv.addChain([{ addr: fx.alloc.alloc(4), len: 4, writable: true }]);
  for (let k = 0; k < 4; k++) assert.ok(fx.q.popAvail(), `pop ${k}`);
  fx.inFlight = null;
  assert.equal(fx.q.inFlight, 4);
  fx.drv.publish(2);
  const err = fx.expectBroken(ErrorCode.TOO_MANY_IN_FLIGHT, "fifth chain on a queue of 4");
  assert.equal(err.details.inFlight, 4);
});

test("HEAD_IN_USE: a head published again while its chain is in flight", () => {
  const fx = primed();
  fx.drv.publish(fx.inFlight!.head);
  fx.expectBroken(ErrorCode.HEAD_IN_USE, "republished in-flight head");
});

// ---- descriptor chains -----------------------------------------------------------

test("NEXT_OUT_OF_RANGE: next ≥ table size with NEXT set (main table and indirect table)", () => {
  for (const next of [N, N + 1, 0xffff]) {
    const fx = primed();
    fx.drv.writeDesc(4, { addr: fx.layout.dataAddr, len: 4, flags: NEXT, next });
    fx.drv.publish(4);
    const err = fx.expectBroken(ErrorCode.NEXT_OUT_OF_RANGE, `direct next ${next}`);
    assert.equal(err.details.next, next);
  }
  for (const next of [2, 3, 0xffff]) {
    const fx = primed();
    const table = fx.alloc.alloc(32);
    fx.drv.writeTable(table, [
      { addr: fx.layout.dataAddr, len: 4, flags: NEXT, next: 1 },
      { addr: fx.layout.dataAddr, len: 4, flags: NEXT, next },
    ]);
    fx.drv.writeDesc(4, { addr: table, len: 32, flags: INDIRECT });
    fx.drv.publish(4);
    const err = fx.expectBroken(ErrorCode.NEXT_OUT_OF_RANGE, `indirect next ${next}`);
    assert.match(err.message, /indirect table of descriptor 4/);
  }
});

test("DESC_LOOP: loops in the main table", () => {
  const loops: [string, [number, number][]][] = [
    ["self loop", [[4, 4]]],
    [
      "two-cycle",
      [
        [4, 5],
        [5, 4],
      ],
    ],
    [
      "tail loop",
      [
        [4, 5],
        [5, 6],
        [6, 5],
      ],
    ],
    [
      "cycle through every descriptor",
      [
        [4, 5],
        [5, 6],
        [6, 7],
        [7, 0],
        [0, 1],
        [1, 2],
        [2, 3],
        [3, 4],
      ],
    ],
  ];
  for (const [what, links] of loops) {
    const fx = primed();
    for (const [i, next] of links)
      fx.drv.writeDesc(i, { addr: fx.layout.dataAddr, len: 1, flags: NEXT, next });
    fx.drv.publish(4);
    fx.expectBroken(ErrorCode.DESC_LOOP, what);
  }
});

test("DESC_LOOP: loops inside an indirect table", () => {
  for (const [what, entries] of [
    ["self loop", [{ next: 0 }]],
    ["back to the start", [{ next: 1 }, { next: 2 }, { next: 0 }]],
    ["inner loop", [{ next: 1 }, { next: 2 }, { next: 1 }, { next: 0 }]],
  ] as const) {
    const fx = primed();
    const table = fx.alloc.alloc(16 * entries.length);
    fx.drv.writeTable(
      table,
      entries.map((e) => ({ addr: fx.layout.dataAddr, len: 1, flags: NEXT, next: e.next })),
    );
    fx.drv.writeDesc(4, { addr: table, len: 16 * entries.length, flags: INDIRECT });
    fx.drv.publish(4);
    fx.expectBroken(ErrorCode.DESC_LOOP, `indirect ${what}`);
  }
});

test("DESC_LOOP: chain longer than the queue size, direct and indirect entries counted together", () => {
  // size 8: 4 direct buffers + a table of 5 = 9 buffers.
  const fx = primed();
  const bufs = Array.from({ length: 9 }, () => ({ addr: fx.layout.dataAddr, len: 1 }));
  fx.drv.buildChain(bufs, {
    indices: [4, 5, 6, 7, 0],
    indirectTable: fx.alloc.alloc(80),
    directCount: 4,
  });
  fx.drv.publish(4);
  const err = fx.expectBroken(ErrorCode.DESC_LOOP, "4 direct + 5 indirect on a queue of 8");
  assert.equal(err.details.size, N);
  // A table of size + 1 entries, no loop.
  const fx2 = primed();
  fx2.drv.buildChain(
    Array.from({ length: N + 1 }, () => ({ addr: fx2.layout.dataAddr, len: 1 })),
    { indices: [4], indirectTable: fx2.alloc.alloc(16 * (N + 1)) },
  );
  fx2.drv.publish(4);
  fx2.expectBroken(ErrorCode.DESC_LOOP, "indirect table of size + 1 chained entries");
});

test("CHAIN_TOO_LONG: total length above 2^32 - 1 bytes (direct and indirect)", () => {
  const MiB = 0x10_0000;
  for (const indirect of [false, true]) {
    // 4096 buffers of 1 MiB reference the same data: 2^32 bytes in total.
    const fx = new Fixture(8192, {}, MiB);
    const d = fx.layout.dataAddr;
    const bufs = Array.from({ length: 4096 }, () => ({ addr: d, len: MiB }));
    const table = fx.layout.dataAddr + MiB; // in data2
    fx.drv.addChain(bufs, indirect ? { indices: [0], indirectTable: table } : {});
    const err = fx.expectBroken(ErrorCode.CHAIN_TOO_LONG, `4096 × 1 MiB, indirect ${indirect}`);
    assert.equal(err.details.total, 2 ** 32);
  }
  // One byte less is accepted (exactly 2^32 - 1).
  const fx = new Fixture(8192, {}, MiB);
  const d = fx.layout.dataAddr;
  const bufs = Array.from({ length: 4096 }, (_, k) => ({ addr: d, len: k === 0 ? MiB - 1 : MiB }));
  fx.drv.addChain(bufs);
  const c = fx.expectAccepted("2^32 - 1 bytes");
  assert.equal(c.readableBytes, 2 ** 32 - 1);
});

test("DESC_OUT_OF_BOUNDS: buffer not entirely inside guest memory, or address + length overflowing", () => {
  const cases: [string, number | bigint, number][] = [];
  const L = layoutFor(N);
  cases.push(["in a hole", L.holeAddr, 4]);
  cases.push(["crossing the end of the data into a hole", L.dataEnd - 4, 8]);
  cases.push(["starting before the data in a hole", L.dataAddr - 4, 8]);
  cases.push(["longer than memory", L.dataAddr, 0xffff_ffff]);
  cases.push(["at 2^53", 2 ** 53, 1]);
  cases.push(["at 2^64 - 16, wrapping", 0xffff_ffff_ffff_fff0n, 32]);
  cases.push(["at 2^64 - 1", 0xffff_ffff_ffff_ffffn, 1]);
  cases.push(["used ring + 1 past its region", L.usedAddr + usedRingSize(N) - 1, 2]);
  for (const [what, addr, len] of cases) {
    for (const [how, writable, indirect] of [
      ["readable", false, false],
      ["writable", true, false],
      ["in an indirect table", true, true],
    ] as const) {
      const fx = primed();
      const flags = writable ? WRITE : 0;
      if (indirect) {
        const table = fx.alloc.alloc(32);
        fx.drv.writeTable(table, [
          { addr: fx.layout.dataAddr, len: 4, flags: NEXT, next: 1 },
          { addr, len, flags },
        ]);
        fx.drv.writeDesc(4, { addr: table, len: 32, flags: INDIRECT });
      } else {
        fx.drv.writeDesc(4, { addr: fx.layout.dataAddr, len: 4, flags: NEXT, next: 5 });
        fx.drv.writeDesc(5, { addr, len, flags });
      }
      fx.drv.publish(4);
      const err = fx.expectBroken(ErrorCode.DESC_OUT_OF_BOUNDS, `${what}, ${how}`);
      assert.equal(err.details.len, len);
    }
  }
});

test("READ_AFTER_WRITE: a device-readable descriptor after a device-writable one", () => {
  // Direct.
  let fx = primed();
  fx.drv.buildChain(
    [
      { addr: fx.layout.dataAddr, len: 4, writable: true },
      { addr: fx.layout.dataAddr, len: 4 },
    ],
    { indices: [4, 5] },
  );
  fx.drv.publish(4);
  fx.expectBroken(ErrorCode.READ_AFTER_WRITE, "direct W, R");
  // Writable direct prefix, readable entry in the indirect table.
  fx = primed();
  fx.drv.buildChain(
    [
      { addr: fx.layout.dataAddr, len: 4, writable: true },
      { addr: fx.layout.dataAddr, len: 4 },
    ],
    { indices: [4, 5], indirectTable: fx.alloc.alloc(16), directCount: 1 },
  );
  fx.drv.publish(4);
  fx.expectBroken(ErrorCode.READ_AFTER_WRITE, "direct W, indirect R");
  // Inside an indirect table: R, W, R.
  fx = primed();
  fx.drv.buildChain(
    [
      { addr: fx.layout.dataAddr, len: 4 },
      { addr: fx.layout.dataAddr, len: 4, writable: true },
      { addr: fx.layout.dataAddr, len: 4 },
    ],
    { indices: [4], indirectTable: fx.alloc.alloc(48) },
  );
  fx.drv.publish(4);
  fx.expectBroken(ErrorCode.READ_AFTER_WRITE, "indirect R, W, R");
  // Zero-length readable after writable is still out of order.
  fx = primed();
  fx.drv.buildChain(
    [
      { addr: fx.layout.dataAddr, len: 4, writable: true },
      { addr: fx.layout.dataAddr, len: 0 },
    ],
    { indices: [4, 5] },
  );
  fx.drv.publish(4);
  fx.expectBroken(ErrorCode.READ_AFTER_WRITE, "W, zero-length R");
});

// ---- indirect tables ---------------------------------------------------------------

test("INDIRECT_TABLE: length 0, not a multiple of 16, above the cap, not inside guest memory", () => {
  const L = layoutFor(N);
  const cases: [string, number | bigint, number, number?][] = [
    ["length 0", L.dataAddr, 0],
    ["length 8", L.dataAddr, 8],
    ["length 17", L.dataAddr, 17],
    ["length 0xffff_fff0 (above 65535 entries)", L.dataAddr, 0xffff_fff0],
    ["5 entries with a cap of 4", L.dataAddr, 80, 4],
    ["in a hole", L.holeAddr, 32],
    ["crossing the end of the data into a hole", L.dataEnd - 16, 32],
    ["starting in a hole", L.dataAddr - 16, 32],
    ["at 2^53", 2 ** 53, 16],
    ["at 2^64 - 16", 0xffff_ffff_ffff_fff0n, 16],
  ];
  for (const [what, addr, len, cap] of cases) {
    for (const direct of [0, 2]) {
      const fx = primed(N, cap === undefined ? {} : { maxIndirectEntries: cap });
      for (let k = 0; k < direct; k++)
        fx.drv.writeDesc(4 + k, { addr: fx.layout.dataAddr, len: 4, flags: NEXT, next: 5 + k });
      fx.drv.writeDesc(4 + direct, { addr, len, flags: INDIRECT });
      fx.drv.publish(4);
      const err = fx.expectBroken(ErrorCode.INDIRECT_TABLE, `${what}, after ${direct} direct`);
      assert.equal(err.details.desc, 4 + direct);
      assert.equal(err.details.len, len);
    }
  }
});

test("INDIRECT_TABLE: INDIRECT when VIRTIO_F_INDIRECT_DESC was not negotiated", () => {
  const fx = primed(N, { indirect: false });
  fx.drv.buildChain([{ addr: fx.layout.dataAddr, len: 4 }], {
    indices: [4],
    indirectTable: fx.alloc.alloc(16),
  });
  fx.drv.publish(4);
  const err = fx.expectBroken(ErrorCode.INDIRECT_TABLE, "not negotiated");
  assert.match(err.message, /not negotiated/);
});

test("INDIRECT_NESTED: INDIRECT inside an indirect table", () => {
  for (const pos of [0, 1]) {
    const fx = primed();
    const inner = fx.alloc.alloc(16);
    fx.drv.writeTable(inner, chainEntries([{ addr: fx.layout.dataAddr, len: 4 }]));
    const table = fx.alloc.alloc(32);
    const entries = [
      { addr: fx.layout.dataAddr, len: 4, flags: NEXT, next: 1 },
      { addr: fx.layout.dataAddr, len: 4 },
    ];
    entries[pos] = { addr: inner, len: 16, flags: INDIRECT | (pos === 0 ? NEXT : 0), next: 1 };
    fx.drv.writeTable(table, entries);
    fx.drv.writeDesc(4, { addr: table, len: 32, flags: INDIRECT });
    fx.drv.publish(4);
    fx.expectBroken(ErrorCode.INDIRECT_NESTED, `nested at entry ${pos}`);
  }
});

test("INDIRECT_NEXT: INDIRECT together with NEXT", () => {
  for (const direct of [0, 1, 3]) {
    const fx = primed();
    const table = fx.alloc.alloc(16);
    fx.drv.writeTable(table, chainEntries([{ addr: fx.layout.dataAddr, len: 4 }]));
    for (let k = 0; k < direct; k++)
      fx.drv.writeDesc(4 + k, { addr: fx.layout.dataAddr, len: 4, flags: NEXT, next: 5 + k });
    // NEXT points to a perfectly good descriptor: still refused.
    fx.drv.writeDesc(4 + direct, { addr: table, len: 16, flags: INDIRECT | NEXT, next: 0 });
    fx.drv.publish(4);
    const err = fx.expectBroken(ErrorCode.INDIRECT_NEXT, `after ${direct} direct`);
    assert.equal(err.details.desc, 4 + direct);
  }
});

// ---- queue configuration --------------------------------------------------------------

test("queue configuration: bad size, misaligned or misplaced parts are refused (QUEUE_CONFIG)", () => {
  const L = layoutFor(N);
  const mem = GuestMemory.createShared(L.regions);
  const good = { size: N, descAddr: L.descAddr, availAddr: L.availAddr, usedAddr: L.usedAddr };
  assert.ok(new DeviceQueue(mem, good), "good config");
  const snap = L.regions.map((r) => {
    const b = new Uint8Array(r.size);
    mem.read(r.guestPhysAddr, b);
    return b;
  });
  const bad: [string, Partial<typeof good> & { nextAvail?: number }][] = [
    ["size 0", { size: 0 }],
    ["size 3", { size: 3 }],
    ["size 6", { size: 6 }],
    ["size 32769", { size: 32769 }],
    ["size 65536", { size: 65536 }],
    ["size 1.5", { size: 1.5 }],
    ["size NaN", { size: Number.NaN }],
    ["desc 8-aligned", { descAddr: L.descAddr + 8 }],
    ["desc 1-aligned", { descAddr: L.descAddr + 1 }],
    ["avail odd", { availAddr: L.availAddr + 1 }],
    ["used 2-aligned", { usedAddr: L.usedAddr + 2 }],
    ["desc past its region", { descAddr: L.descAddr + 16 }],
    ["avail past its region", { availAddr: L.availAddr + 2 }],
    ["used past its region", { usedAddr: L.usedAddr + 4 }],
    ["desc in a hole", { descAddr: L.descAddr - 0x100 }],
    ["used in a hole", { usedAddr: L.holeAddr }],
    ["desc crossing two contiguous regions", { descAddr: L.dataAddr + L.dataSize - 64 }],
    ["avail at 2^53", { availAddr: 2 ** 53 }],
    ["used negative", { usedAddr: -4 }],
    ["desc NaN", { descAddr: Number.NaN }],
    ["nextAvail 65536", { nextAvail: 65536 }],
    ["nextAvail -1", { nextAvail: -1 }],
  ];
  for (const [what, patch] of bad) {
    assert.throws(
      () => new DeviceQueue(mem, { ...good, ...patch }),
      (e) => isVirtioError(e, ErrorCode.QUEUE_CONFIG) && /\d|NaN/.test(e.message),
      what,
    );
  }
  // A size-1 ring (the smallest) and a size-32768 ring (the largest) are fine.
  const l32k = vringLayout(32768, 0);
  const big = GuestMemory.createShared([{ guestPhysAddr: 0, size: l32k.totalBytes }]);
  assert.equal(new DeviceQueue(big, l32k).size, 32768);
  assert.equal(new DeviceQueue(big, { size: 1, descAddr: 0, availAddr: 16, usedAddr: 24 }).size, 1);
  // maxIndirectEntries is set by the embedding program: RangeError.
  for (const m of [0, 65536, 1.5])
    assert.throws(() => new DeviceQueue(mem, { ...good, maxIndirectEntries: m }), RangeError);
  // Configuring (and refusing) wrote nothing.
  L.regions.forEach((r, k) => {
    const b = new Uint8Array(r.size);
    mem.read(r.guestPhysAddr, b);
    assert.deepEqual(b, snap[k], r.name);
  });
});

// ---- accepted ---------------------------------------------------------------------------

test("accepted: normal descriptors followed by one INDIRECT descriptor as the last element", () => {
  for (const direct of [0, 1, 3]) {
    const fx = primed();
    const bufs = [
      { addr: fx.alloc.alloc(16), len: 16 },
      { addr: fx.alloc.alloc(16), len: 16 },
      { addr: fx.alloc.alloc(16), len: 16 },
      { addr: fx.alloc.alloc(64), len: 64, writable: true },
      { addr: fx.alloc.alloc(1), len: 1, writable: true },
    ];
    const indices = Array.from({ length: direct + 1 }, (_, k) => 4 + k);
    fx.drv.buildChain(bufs, {
      indices,
      indirectTable: fx.alloc.alloc(16 * (5 - direct)),
      directCount: direct,
    });
    fx.drv.publish(4);
    const c = fx.expectAccepted(`${direct} direct + indirect`);
    assert.deepEqual(
      [c.head, c.numSegs, c.numReadable, c.readableBytes, c.writableBytes, c.descCount],
      [4, 5, 3, 48, 65, 6],
    );
    for (let k = 0; k < 5; k++) {
      assert.equal(c.segAddr[k], bufs[k]!.addr);
      assert.equal(c.segLen[k], bufs[k]!.len);
    }
  }
});

test("accepted: the WRITE flag on an INDIRECT descriptor is ignored", () => {
  const fx = primed();
  fx.drv.buildChain(
    [
      { addr: fx.alloc.alloc(16), len: 16 },
      { addr: fx.alloc.alloc(8), len: 8, writable: true },
    ],
    { indices: [4], indirectTable: fx.alloc.alloc(32), indirectFlags: WRITE },
  );
  fx.drv.publish(4);
  const c = fx.expectAccepted("WRITE on INDIRECT");
  assert.deepEqual([c.numReadable, c.readableBytes, c.writableBytes], [1, 16, 8]);
});

test("accepted: unaligned indirect tables, and a table straddling two contiguous regions", () => {
  const L = layoutFor(N);
  for (const addr of [
    L.dataAddr + 0x101,
    L.dataAddr + 0x104,
    L.dataAddr + 0x108,
    L.dataAddr + L.dataSize - 24,
  ]) {
    const fx = primed();
    fx.drv.buildChain(
      [
        { addr: L.dataAddr, len: 2 },
        { addr: L.dataAddr + 0x10, len: 3 },
        { addr: L.dataAddr + 0x20, len: 4, writable: true },
      ],
      { indices: [4], indirectTable: addr },
    );
    fx.drv.publish(4);
    const c = fx.expectAccepted(`table at 0x${addr.toString(16)}`);
    assert.deepEqual([c.numSegs, c.readableBytes, c.writableBytes], [3, 5, 4]);
  }
});

test("accepted: buffers spanning two contiguous regions", () => {
  const fx = primed();
  const L = fx.layout;
  fx.drv.buildChain(
    [
      { addr: L.dataAddr + L.dataSize - 8, len: 16 },
      { addr: L.dataAddr + 1, len: 2 * L.dataSize - 1, writable: true },
    ],
    { indices: [4, 5] },
  );
  fx.drv.publish(4);
  const c = fx.expectAccepted("spanning");
  assert.deepEqual([c.readableBytes, c.writableBytes], [16, 2 * L.dataSize - 1]);
});

test("accepted: zero-length buffers, whatever their address", () => {
  const fx = primed();
  const L = fx.layout;
  fx.drv.writeTable(L.dataAddr + 0x400, [
    { addr: L.holeAddr, len: 0, flags: NEXT, next: 1 },
    { addr: 0xffff_ffff_ffff_ffffn, len: 0, flags: WRITE },
  ]);
  fx.drv.writeDesc(4, { addr: 2 ** 53, len: 0, flags: NEXT, next: 5 });
  fx.drv.writeDesc(5, { addr: L.dataAddr, len: 4, flags: NEXT, next: 6 });
  fx.drv.writeDesc(6, { addr: L.dataAddr + 0x400, len: 32, flags: INDIRECT });
  fx.drv.publish(4);
  const c = fx.expectAccepted("zero-length");
  assert.deepEqual([c.numSegs, c.readableBytes, c.writableBytes, c.descCount], [1, 4, 0, 5]);
  // A chain of nothing but one zero-length descriptor.
  fx.drv.writeDesc(7, { addr: 0, len: 0 });
  fx.drv.publish(7);
  const c2 = fx.expectAccepted("single zero-length");
  assert.deepEqual([c2.numSegs, c2.readableBytes, c2.writableBytes], [0, 0, 0]);
  fx.q.addUsed(c2.head, 0);
});

test("accepted: spurious kicks (nothing available) change nothing", () => {
  for (const eventIdx of [false, true]) {
    const fx = primed(N, { eventIdx });
    const snap = fx.snapshot();
    for (let k = 0; k < 3; k++) {
      assert.equal(fx.q.hasAvailable(), false);
      assert.equal(fx.q.popAvail(), null);
    }
    fx.assertUnchanged(snap, "spurious kick");
    assert.equal(fx.q.enableNotification(), false);
    assert.equal(fx.q.broken, null);
    assert.equal(fx.brokenCalls.length, 0);
  }
});

test("accepted: exactly queue-size entries ahead, a chain of exactly queue-size buffers, a table at the cap", () => {
  const fx = new Fixture(4, { maxIndirectEntries: 4 });
  // Full ring: 4 chains; the last uses an indirect table of exactly 4 entries (= size = cap).
  for (let k = 0; k < 3; k++)
    fx.drv.addChain([{ addr: fx.layout.dataAddr, len: 1 }], { indices: [k] });
  fx.drv.addChain(
    Array.from({ length: 4 }, () => ({ addr: fx.layout.dataAddr, len: 1 })),
    { indices: [3], indirectTable: fx.alloc.alloc(64) },
  );
  for (let k = 0; k < 4; k++) fx.expectAccepted(`full ring entry ${k}`);
  assert.equal(fx.q.inFlight, 4);
  // Direct chain through every descriptor of a fresh queue.
  const fx2 = new Fixture(N);
  fx2.drv.addChain(
    Array.from({ length: N }, (_, k) => ({ addr: fx2.layout.dataAddr, len: 1, writable: k >= 4 })),
  );
  const c = fx2.expectAccepted("chain of N");
  assert.deepEqual([c.descCount, c.readableBytes, c.writableBytes], [N, 4, 4]);
});

test("accepted: an indirect table longer than the entries it chains; vhost-user ring resume", () => {
  const fx = primed();
  const table = fx.alloc.alloc(16 * 6);
  fx.drv.writeTable(table, [
    ...chainEntries([{ addr: fx.layout.dataAddr, len: 5 }]),
    { addr: 0xdead, len: 0xffff_ffff, flags: INDIRECT | NEXT, next: 0xffff }, // never reached
  ]);
  fx.drv.writeDesc(4, { addr: table, len: 16 * 6, flags: INDIRECT });
  fx.drv.publish(4);
  assert.equal(fx.expectAccepted("long table").readableBytes, 5);
  // Resume: nextAvail and used.idx taken over from a previous backend.
  const fx2 = new Fixture(N);
  fx2.drv.availIdx = 1000;
  fx2.drv.usedIdx = 998;
  const q = new DeviceQueue(fx2.mem, {
    ...fx2.drv.addresses,
    nextAvail: 999,
    usedIdxFromMemory: true,
  });
  fx2.drv.setAvailEntry(999, 6);
  fx2.drv.writeDesc(6, { addr: fx2.layout.dataAddr, len: 4, flags: WRITE });
  const c = q.popAvail()!;
  assert.equal(c.head, 6);
  q.addUsed(6, 4);
  q.publishUsed();
  assert.equal(fx2.drv.usedIdx, 999);
  assert.deepEqual(fx2.drv.usedElem(998), { id: 6, len: 4 });
});

test("a chain that fails validation leaves the other queues' users unaffected: new queue, fresh state", () => {
  const fx = primed();
  fx.drv.publish(N);
  fx.expectBroken(ErrorCode.HEAD_OUT_OF_RANGE, "break");
  // "Sticky until a new queue is configured": a new DeviceQueue on the same ring works.
  fx.drv.availIdx = 0;
  fx.drv.usedIdx = 0;
  const q = new DeviceQueue(fx.mem, { ...fx.drv.addresses });
  assert.equal(q.broken, null);
  fx.drv.addChain([{ addr: fx.layout.dataAddr, len: 4 }], { indices: [5] });
  assert.equal(q.popAvail()?.head, 5);
});

test("MockSplitQueue and DeviceQueue agree on a split layout helper", () => {
  // Sanity for the fixture itself: each ring part sits alone in a region of exactly its size.
  const L = layoutFor(N);
  const byName = new Map(L.regions.map((r) => [r.name, r]));
  assert.equal(byName.get("desc")!.size, descTableSize(N));
  assert.equal(byName.get("avail")!.size, availRingSize(N));
  assert.equal(byName.get("used")!.size, usedRingSize(N));
  const mem = GuestMemory.createShared(L.regions);
  assert.equal(mem.isValidRange(L.holeAddr, 1), false);
  assert.equal(mem.isValidRange(L.descAddr - 1, 1), false);
  assert.equal(mem.isValidRange(L.descAddr + descTableSize(N), 1), false);
  assert.equal(mem.isValidRange(L.dataAddr, 2 * L.dataSize), true);
  assert.ok(
    new MockSplitQueue(mem, N, {
      descAddr: L.descAddr,
      availAddr: L.availAddr,
      usedAddr: L.usedAddr,
    }),
    "mock on the split layout",
  );
});

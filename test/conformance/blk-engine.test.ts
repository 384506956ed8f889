/**
 * The virtio-blk queue engine: bounded in-flight requests, out-of-order
 * completion, stop for reset with I/O in flight, notification batching, no
 * lost kick, ring violations, write-cache semantics and trace lines. A
 * backing store whose completions the test controls drives the timing.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { ErrorCode } from "../../src/errors.ts";
import { MemoryBacking, type BlkBacking } from "../../src/devices/blk/backing.ts";
import { BlkQueueEngine } from "../../src/devices/blk/queue-engine.ts";
import * as blk from "../../src/spec/blk.ts";
import { BlkConfig } from "../../src/spec/blk.ts";
import { VIRTQ_USED_F_NO_NOTIFY, VIRTQ_AVAIL_F_NO_INTERRUPT } from "../../src/spec/virtqueue.ts";
import { BlkRig, MEM_SIZE, pattern, segments, until, without } from "./blk-harness.ts";

const { VIRTIO_BLK_S_OK: OK, VIRTIO_BLK_T_IN: IN, VIRTIO_BLK_T_OUT: OUT } = blk;
const { VIRTIO_BLK_T_FLUSH: FLUSH, VIRTIO_BLK_T_GET_ID: GET_ID } = blk;

const DISK = pattern(1 << 20, 11);

interface Held {
  op: "readv" | "writev" | "flush" | "discard" | "writeZeroes";
  offset: number;
  complete(): void;
  fail(e: Error): void;
}

/** A MemoryBacking whose operations finish only when the test says so. */
class ControlledBacking implements BlkBacking {
  readonly inner = new MemoryBacking(DISK);
  readonly pending: Held[] = [];
  readonly ops: string[] = [];
  maxPending = 0;
  readonly readOnly = false;

  get size(): number {
    return this.inner.size;
  }

  #hold(op: Held["op"], offset: number, run: () => Promise<void>): Promise<void> {
    this.ops.push(op);
    return new Promise<void>((resolve, reject) => {
      this.pending.push({
        op,
        offset,
        complete: () => void run().then(resolve, reject),
        fail: (e) => reject(e),
      });
      this.maxPending = Math.max(this.maxPending, this.pending.length);
    });
  }

  /** Completes the pending operation at `index` (default the oldest). */
  complete(index = 0): Held {
    const [h] = this.pending.splice(index, 1);
    assert.ok(h, `no pending operation at ${index}`);
    h.complete();
    return h;
  }

  readv(offset: number, iov: readonly Uint8Array[]): Promise<void> {
    return this.#hold("readv", offset, () => this.inner.readv(offset, iov));
  }
  writev(offset: number, iov: readonly Uint8Array[]): Promise<void> {
    // Copy now: the guest buffer stays valid until completion anyway.
    return this.#hold("writev", offset, () => this.inner.writev(offset, iov));
  }
  flush(): Promise<void> {
    return this.#hold("flush", 0, () => this.inner.flush());
  }
  discard(offset: number, length: number): Promise<void> {
    return this.#hold("discard", offset, () => this.inner.discard(offset, length));
  }
  writeZeroes(offset: number, length: number, unmap: boolean): Promise<void> {
    return this.#hold("writeZeroes", offset, () => this.inner.writeZeroes(offset, length, unmap));
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

/** Lets promise callbacks and microtasks run (a few event-loop turns). */
async function turns(n = 5): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
}

function snapshot(r: BlkRig): Uint8Array {
  const b = new Uint8Array(MEM_SIZE);
  r.mem.read(0, b);
  return b;
}

describe("bounded in-flight requests", () => {
  test("never more than maxInFlight at the store; a completion pulls in the next without a kick", async () => {
    const backing = new ControlledBacking();
    const r = new BlkRig({ backing, engine: { maxInFlight: 4 } });
    const reqs = Array.from({ length: 10 }, (_, i) =>
      r.add({ type: IN, sector: i * 8, inLen: 4096 }),
    );
    r.engine.kick();
    assert.equal(backing.pending.length, 4);
    assert.equal(r.engine.inFlight, 4);
    assert.equal(r.q.nextAvail, 4, "stopped popping at the limit");
    let done = 0;
    while (done < 10) {
      backing.complete();
      await turns();
      done++;
      assert.equal(r.drv.usedIdx, done);
      assert.equal(backing.pending.length, Math.min(4, 10 - done), `after ${done} completions`);
    }
    assert.equal(backing.maxPending, 4);
    reqs.forEach((q, i) => {
      assert.equal(r.status(q), OK);
      assert.deepEqual(r.readIn(q), DISK.subarray(i * 4096, i * 4096 + 4096));
    });
  });

  test("a kick while the pool is full does not touch the ring (no busy loop)", async () => {
    const backing = new ControlledBacking();
    const r = new BlkRig({ backing, engine: { maxInFlight: 2 } });
    let pops = 0;
    const pop = r.q.popAvail.bind(r.q);
    r.q.popAvail = () => {
      pops++;
      return pop();
    };
    for (let i = 0; i < 4; i++) r.add({ type: IN, sector: i, inLen: 512 });
    r.engine.kick();
    const popsAtLimit = pops;
    for (let i = 0; i < 5; i++) r.engine.kick();
    await turns();
    assert.equal(pops, popsAtLimit, "no pops while full");
    backing.complete();
    backing.complete();
    await turns();
    assert.equal(backing.pending.length, 2);
    backing.complete();
    backing.complete();
    await r.waitUsed(4);
  });

  test("no lost kick: a request added while the pool is full (driver told not to kick) is served", async () => {
    for (const eventIdx of [false, true]) {
      const backing = new ControlledBacking();
      const r = new BlkRig({ backing, eventIdx, engine: { maxInFlight: 1 } });
      const a = r.add({ type: IN, sector: 0, inLen: 512 });
      r.engine.kick();
      assert.equal(backing.pending.length, 1);
      if (!eventIdx) assert.equal(r.drv.usedFlags & VIRTQ_USED_F_NO_NOTIFY, VIRTQ_USED_F_NO_NOTIFY);
      const b = r.add({ type: IN, sector: 1, inLen: 512 }); // no kick: notifications are off
      backing.complete();
      await turns();
      assert.equal(backing.pending.length, 1, `eventIdx=${eventIdx}: B submitted without a kick`);
      backing.complete();
      const used = await r.waitUsed(2);
      assert.deepEqual(
        used.map((u) => u.id),
        [a.head, b.head],
      );
      // Idle again: the driver is asked to kick for the next request.
      if (eventIdx) assert.equal(r.drv.availEvent, 2);
      else assert.equal(r.drv.usedFlags & VIRTQ_USED_F_NO_NOTIFY, 0);
    }
  });

  test("work that slips in between the drain and enableNotification is polled again", () => {
    const r = new BlkRig({ backing: new MemoryBacking(DISK) });
    const enable = r.q.enableNotification.bind(r.q);
    let injected = false;
    r.q.enableNotification = () => {
      if (!injected) {
        injected = true;
        r.add({ type: GET_ID, inLen: 20 }); // the driver saw NO_NOTIFY and did not kick
      }
      return enable();
    };
    r.add({ type: GET_ID, inLen: 20 });
    r.engine.kick();
    assert.equal(r.drv.usedIdx, 2, "both served by the one kick");
  });

  test("adaptive polling: a window opens after a short wait, takes work without a kick, then sleeps", () => {
    const turnsQueued: (() => void)[] = [];
    const r = new BlkRig({
      backing: new MemoryBacking(DISK),
      engine: { pollMaxNs: 1_000_000_000, schedule: (fn) => turnsQueued.push(fn) },
    });
    const noNotify = (): boolean => (r.drv.usedFlags & VIRTQ_USED_F_NO_NOTIFY) !== 0;
    r.add({ type: GET_ID, inLen: 20 });
    r.engine.kick();
    assert.equal(r.drv.usedIdx, 1);
    assert.equal(noNotify(), false, "no window yet: asleep, notifications on");
    r.add({ type: GET_ID, inLen: 20 });
    r.engine.kick(); // soon after running dry: the window grows to 4 µs
    assert.equal(r.engine.poller.windowNs, 4_000);
    assert.equal(r.engine.poller.polling, true);
    assert.equal(noNotify(), true, "notifications stay off while polling");
    assert.equal(r.engine.idle, false, "a polling queue is not idle");
    r.add({ type: GET_ID, inLen: 20 }); // the driver sees NO_NOTIFY and does not kick
    turnsQueued.shift()!();
    assert.equal(r.drv.usedIdx, 3, "served from the poll");
    assert.equal(r.engine.poller.hits, 1);
    // Nothing more: the window ends (real time passes), notifications go back on, nothing polls.
    for (let i = 0; i < 100_000 && turnsQueued.length > 0; i++) turnsQueued.shift()!();
    assert.equal(turnsQueued.length, 0);
    assert.equal(r.engine.poller.polling, false);
    assert.equal(noNotify(), false);
    assert.equal(r.engine.idle, true);
  });

  test("without pollMaxNs the engine never polls; a bad value is refused", () => {
    const r = new BlkRig({ backing: new MemoryBacking(DISK) });
    for (let i = 0; i < 3; i++) {
      r.add({ type: GET_ID, inLen: 20 });
      r.engine.kick();
    }
    assert.equal(r.engine.poller.windowNs, 0);
    assert.equal(r.engine.poller.polling, false);
    assert.throws(
      () => new BlkRig({ backing: new MemoryBacking(DISK), engine: { pollMaxNs: -1 } }),
      /pollMaxNs must be in 0\.\.1000000000/,
    );
  });

  test("a notify callback that kicks synchronously is handled (re-entrancy)", async () => {
    let extra = 2;
    const r: BlkRig = new BlkRig({
      backing: new MemoryBacking(DISK),
      engine: {
        notify: () => {
          if (extra-- > 0) {
            r.add({ type: GET_ID, inLen: 20 });
            r.engine.kick();
          }
        },
      },
    });
    r.add({ type: GET_ID, inLen: 20 });
    r.engine.kick();
    await turns();
    assert.equal(r.drv.usedIdx, 3);
  });

  test("a run pops at most `budget` chains, then yields and continues", async () => {
    const r = new BlkRig({ backing: new MemoryBacking(DISK), engine: { budget: 4 } });
    for (let i = 0; i < 10; i++) r.add({ type: GET_ID, inLen: 20 });
    r.engine.kick();
    assert.equal(r.drv.usedIdx, 4, "first run stops at the budget");
    await until(() => r.drv.usedIdx === 10, "the rest");
  });
});

describe("completion order and notifications", () => {
  test("completions may arrive out of order; each lands on its own chain", async () => {
    const backing = new ControlledBacking();
    const r = new BlkRig({ backing });
    const reqs = [0, 1, 2].map((i) => r.add({ type: IN, sector: 100 + i, inLen: 512 }));
    r.engine.kick();
    for (const idx of [2, 0, 0]) {
      backing.complete(idx);
      await turns();
    }
    const used = r.drv.drainUsed();
    assert.deepEqual(
      used.map((u) => u.id),
      [reqs[2]!.head, reqs[0]!.head, reqs[1]!.head],
    );
    reqs.forEach((q, i) => {
      assert.deepEqual(r.readIn(q), DISK.subarray((100 + i) * 512, (101 + i) * 512));
      assert.equal(used.find((u) => u.id === q.head)!.len, 513);
    });
  });

  test("completions settling together are published with one notification", async () => {
    const r = new BlkRig({ backing: new MemoryBacking(DISK) });
    for (let i = 0; i < 8; i++) r.add({ type: IN, sector: i, inLen: 512 });
    r.engine.kick();
    await r.waitUsed(8);
    assert.equal(r.notifications, 1);
  });

  test("VIRTQ_AVAIL_F_NO_INTERRUPT suppresses notifications", async () => {
    const r = new BlkRig({ backing: new MemoryBacking(DISK) });
    r.drv.availFlags = VIRTQ_AVAIL_F_NO_INTERRUPT;
    for (let i = 0; i < 3; i++) r.add({ type: IN, sector: i, inLen: 512 });
    r.engine.kick();
    await r.waitUsed(3);
    assert.equal(r.notifications, 0);
  });

  test("EVENT_IDX: one notification, when the used index passes used_event", async () => {
    const backing = new ControlledBacking();
    const r = new BlkRig({ backing, eventIdx: true });
    r.drv.usedEvent = 4; // notify once entry 4 (the fifth) is used
    for (let i = 0; i < 8; i++) r.add({ type: IN, sector: i, inLen: 512 });
    r.engine.kick();
    const seen: number[] = [];
    for (let i = 0; i < 8; i++) {
      backing.complete();
      await turns();
      seen.push(r.notifications);
    }
    assert.deepEqual(seen, [0, 0, 0, 0, 1, 1, 1, 1]);
  });
});

describe("stop (reset) and broken", () => {
  test("stop with I/O in flight: completes it into the used ring, then resolves; afterwards no guest write", async () => {
    const backing = new ControlledBacking();
    const r = new BlkRig({ backing });
    const reqs = [0, 1, 2, 3].map((i) => r.add({ type: IN, sector: i, inLen: 512 }));
    r.engine.kick();
    let stopped = false;
    const stopping = r.engine.stop().then(() => (stopped = true));
    const late = r.add({ type: IN, sector: 9, inLen: 512 });
    r.engine.kick();
    await turns();
    assert.equal(stopped, false, "waits for in-flight I/O");
    assert.equal(r.q.nextAvail, 4, "no pop after stop");
    for (let i = 0; i < 4; i++) backing.complete(i % 2 === 0 ? 0 : backing.pending.length - 1);
    await stopping;
    assert.equal(r.engine.stopped, true);
    const used = r.drv.drainUsed();
    assert.deepEqual(used.map((u) => u.id).sort(), reqs.map((q) => q.head).sort());
    for (const q of reqs) assert.equal(r.status(q), OK);
    // After stop resolved: more requests and kicks change nothing in guest memory.
    r.add({ type: GET_ID, inLen: 20 });
    const before = snapshot(r);
    r.engine.kick();
    await turns(20);
    assert.deepEqual(snapshot(r), before, "guest memory unchanged after stop");
    assert.equal(r.status(late), 0xee);
    assert.equal(backing.pending.length, 0);
    await r.engine.stop(); // idempotent
  });

  test("stop with nothing in flight resolves at once", async () => {
    const r = new BlkRig({ backing: new MemoryBacking(DISK) });
    await r.engine.stop();
    assert.equal(r.engine.stopped, true);
  });

  test("a ring violation from popAvail breaks the device; later completions write nothing", async () => {
    const backing = new ControlledBacking();
    const r = new BlkRig({ backing });
    const first = r.add({ type: IN, sector: 0, inLen: 512 });
    r.drv.publish(r.drv.size + 3); // head out of range
    r.engine.kick();
    assert.equal(r.broken.length, 1);
    assert.equal(r.broken[0]!.code, ErrorCode.HEAD_OUT_OF_RANGE);
    assert.equal(r.engine.halted, true);
    assert.equal(backing.pending.length, 1, "the first request was submitted before the violation");
    const before = snapshot(r);
    const stopping = r.engine.stop();
    backing.complete(); // the read copies data into the guest buffer (the I/O was already running)
    await stopping;
    const after = snapshot(r);
    // Only the data buffer of the request may differ; no status, no used entry.
    assert.equal(r.status(first), 0xee);
    assert.equal(r.drv.usedIdx, 0);
    const dataAddr = first.inBufs[0]!.addr;
    for (let i = 0; i < MEM_SIZE; i++) {
      if (i >= dataAddr && i < dataAddr + 512) continue;
      if (after[i] !== before[i])
        assert.fail(`guest byte 0x${i.toString(16)} changed after the device broke`);
    }
    r.engine.kick();
    assert.equal(r.broken.length, 1, "reported once");
    assert.match(r.log.errors[0]!, /vq 0: device broken: VIRTIO_ERR_HEAD_OUT_OF_RANGE/);
  });

  test("halt() (another queue broke the device): in-flight results are dropped", async () => {
    const backing = new ControlledBacking();
    const r = new BlkRig({ backing });
    r.add({ type: IN, sector: 0, inLen: 512 });
    r.engine.kick();
    r.engine.halt();
    backing.complete();
    await r.engine.stop();
    assert.equal(r.drv.usedIdx, 0);
    assert.equal(r.notifications, 0);
  });
});

describe("write cache", () => {
  test("writeback (wce = 1): OUT completes without a flush; FLUSH completes only after the store's flush", async () => {
    const backing = new ControlledBacking();
    const r = new BlkRig({ backing });
    assert.equal(r.cfg.writeback, true);
    assert.equal(r.cfg.writeThrough, false);
    r.add({ type: OUT, sector: 0, out: pattern(512, 1) });
    r.engine.kick();
    backing.complete();
    await r.waitUsed(1);
    assert.deepEqual(backing.ops, ["writev"]);
    r.add({ type: FLUSH });
    r.engine.kick();
    await turns();
    assert.equal(r.drv.usedIdx, 1, "FLUSH not acknowledged before the data is durable");
    assert.equal(backing.pending[0]!.op, "flush");
    backing.complete();
    await r.waitUsed(1);
  });

  test("write-through (driver writes writeback = 0): every write is flushed before it completes", async () => {
    const backing = new ControlledBacking();
    const r = new BlkRig({ backing });
    assert.equal(r.cfg.writeConfig(BlkConfig.writeback, new Uint8Array([0])), true);
    assert.equal(r.cfg.writeThrough, true);
    for (const spec of [
      { type: OUT, sector: 0, out: pattern(512, 2) },
      { type: blk.VIRTIO_BLK_T_WRITE_ZEROES, out: segments([{ sector: 8, num: 8 }]) },
    ]) {
      backing.ops.length = 0;
      const before = r.drv.usedIdx;
      r.add(spec);
      r.engine.kick();
      backing.complete();
      await turns();
      assert.equal(r.drv.usedIdx, before, "not completed before the flush");
      assert.equal(backing.pending[0]?.op, "flush");
      backing.complete();
      await r.waitUsed(1);
    }
  });

  test("FLUSH not negotiated (and no CONFIG_WCE): writes are write-through", async () => {
    const backing = new ControlledBacking();
    const r = new BlkRig({
      backing,
      features: (cfg) => without(cfg, blk.VIRTIO_BLK_F_FLUSH, blk.VIRTIO_BLK_F_CONFIG_WCE),
    });
    assert.equal(r.cfg.writeThrough, true);
    r.add({ type: OUT, sector: 0, out: pattern(512, 3) });
    r.engine.kick();
    backing.complete();
    await turns();
    assert.equal(backing.pending[0]?.op, "flush");
    backing.complete();
    await r.waitUsed(1);
  });
});

test("exactly one of notify and signalUsed; misuse is a TypeError / RangeError", () => {
  const backing = new MemoryBacking(DISK);
  const r = new BlkRig({ backing });
  const base = { queue: r.q, queueIndex: 0, backing, policy: r.cfg, onBroken: () => {} };
  assert.throws(() => new BlkQueueEngine(base), TypeError);
  assert.throws(
    () => new BlkQueueEngine({ ...base, notify: () => {}, signalUsed: () => {} }),
    TypeError,
  );
  assert.throws(
    () => new BlkQueueEngine({ ...base, notify: () => {}, maxInFlight: 0 }),
    RangeError,
  );
  assert.throws(() => new BlkQueueEngine({ ...base, notify: () => {}, budget: 0 }), RangeError);
});

test("signalUsed mode: the embedder publishes and notifies once per batch", async () => {
  let signals = 0;
  const r: BlkRig = new BlkRig({
    backing: new MemoryBacking(DISK),
    engine: {
      notify: undefined,
      signalUsed: () => {
        signals++;
        r.q.publishUsed();
      },
    },
  });
  for (let i = 0; i < 5; i++) r.add({ type: IN, sector: i, inLen: 512 });
  r.engine.kick();
  await r.waitUsed(5);
  assert.equal(signals, 1);
  assert.equal(r.notifications, 0);
});

test("verbose trace lines name the queue and the request, QEMU style", async () => {
  const r = new BlkRig({ backing: new MemoryBacking(DISK) });
  const { req } = await r.run({ type: IN, sector: 1, inLen: 1024, piece: 512 });
  await r.run({ type: 99 });
  const t = r.log.traces;
  assert.ok(t.includes(`virtqueue_pop vq 0 head ${req.head} in_num 3 out_num 1`), t.join("\n"));
  assert.ok(t.includes(`virtio_blk_submit vq 0 req ${req.head} type IN sector 1 len 1024 segs 0`));
  assert.ok(t.includes(`virtio_blk_req_complete vq 0 req ${req.head} status 0 len 1025`));
  assert.ok(t.includes("virtio_notify vq 0"));
  assert.ok(
    t.some((l) =>
      /^virtio_blk_req_invalid vq 0 req \d+ type 99 status 2 reason unsupported type$/.test(l),
    ),
  );
});

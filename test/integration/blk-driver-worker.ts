/**
 * The driver thread of the virtio-blk integration tests: an
 * InprocDriverTransport and one DriverRing per queue (split, or packed when
 * the negotiated features include VIRTIO_F_RING_PACKED), driven by commands
 * from the test thread (./blk-layout.ts). Requests are built byte by byte
 * in guest memory, as a guest would (or deliberately malformed); every wait
 * is bounded and a timeout is reported as a stall.
 */
import { GuestMemory } from "../../src/memory/guest-memory.ts";
import type { DriverRing, Segment } from "../../src/ring/driver-ring.ts";
import { placeRing, ringLayoutOf, type RingLayout } from "../../src/ring/ring-layout.ts";
import { VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET } from "../../src/spec/virtio.ts";
import { VIRTQ_AVAIL_OFF_RING } from "../../src/spec/virtqueue.ts";
import { InprocDriverTransport } from "../../src/transport/inproc/index.ts";
import { nodeParentEndpoint } from "../../src/dataplane/node-threads.ts";
import {
  ARENA_ENTRIES,
  ARENA_OFFSET,
  GUEST_BYTES,
  HEAP_BASE,
  QUEUE_STRIDE,
  RING_BASE,
  type DriverCommand,
  type DriverInit,
  type DriverReply,
  type RawReq,
  type RawResult,
} from "./blk-layout.ts";
import { BlkDriverSession } from "./blk-driver-session.ts";
import { runWorkload } from "./blk-workload.ts";

const WAIT_MS = 20_000;

let driver: InprocDriverTransport;
let memory: GuestMemory;
let queues: DriverRing<number>[] = [];
/** Where each queue's ring lies. */
let rings: RingLayout[] = [];
let session: BlkDriverSession | null = null;

const parent = nodeParentEndpoint();
const off = parent.onMessage((m) => {
  off();
  const init = m as DriverInit;
  driver = new InprocDriverTransport(init.shared, { controlTimeoutMs: WAIT_MS });
  memory = driver.memory;
  parent.onMessage((c) => {
    const fail = (e: unknown): DriverReply => ({
      ok: false,
      error: e instanceof Error ? `${e.name}: ${e.message}` : String(e),
    });
    let value: unknown;
    try {
      value = handle(c as DriverCommand);
    } catch (e) {
      parent.postMessage(fail(e));
      return;
    }
    Promise.resolve(value).then(
      (v) => parent.postMessage({ ok: true, value: v } satisfies DriverReply),
      (e: unknown) => parent.postMessage(fail(e)),
    );
  });
  parent.postMessage({ ok: true, value: "ready" });
});

function handle(c: DriverCommand): unknown {
  switch (c.cmd) {
    case "init":
      return init(c.features, c.queues, c.queueSize, c.indirect);
    case "run":
      return run(c.reqs, c.maxInFlight ?? 64);
    case "workload":
      return runWorkload(driver, queues, memory, HEAP_BASE, c.workload);
    case "reset-in-flight":
      return resetInFlight(c.reqs, c.delayBeforeResetMs);
    case "reset":
      return reset();
    case "status":
      return driver.run(driver.readStatus());
    case "read-config":
      return driver.run(driver.readConfig(c.offset, c.length));
    case "write-config":
      return driver.run(driver.writeConfig(c.offset, c.bytes));
    case "blk-init":
      return BlkDriverSession.start(driver, memory, c.queues, c.queueSize, c.layout).then((s) => {
        session = s;
        return s.driver.config.capacityBytes;
      });
    case "blk-workload":
      return session!.workload(c.workload);
    case "blk-reset-in-flight":
      return session!.resetInFlight(c.count, c.delayMs);
    case "blk-stop":
      return session?.stop();
  }
}

/** §3.1.1: negotiate, set up the queues in the negotiated layout (with indirect arenas if asked), DRIVER_OK. */
function init(features: bigint, n: number, size: number, indirect: boolean) {
  const accepted = driver.run(driver.negotiate(features));
  const layout = ringLayoutOf(accepted);
  queues = [];
  rings = [];
  for (let q = 0; q < n; q++) {
    const base = RING_BASE + q * QUEUE_STRIDE;
    const ring = placeRing(layout, size, base);
    rings.push(ring);
    queues.push(
      driver.run(
        driver.setupQueue<number>(q, {
          ...ring,
          ...(indirect
            ? { indirectArena: { addr: base + ARENA_OFFSET, entriesPerChain: ARENA_ENTRIES } }
            : {}),
        }),
      ),
    );
  }
  const status = driver.run(driver.start());
  return { features: accepted, status };
}

/** Resets the device and forgets every outstanding request (returns how many). */
function reset(): number {
  driver.run(driver.reset());
  let pending = 0;
  for (const dq of queues) pending += dq.detachAll().length;
  return pending;
}

/** A bump allocator over the heap, fresh per command. */
class Heap {
  #next = HEAP_BASE;
  alloc(len: number, align = 8): number {
    const a = Math.ceil(this.#next / align) * align;
    if (a + Math.max(len, 1) > GUEST_BYTES) throw new Error("test heap exhausted");
    this.#next = a + Math.max(len, 1);
    return a;
  }
}

interface Built {
  readonly readable: Segment[];
  readonly writable: Segment[];
  readonly inBufs: Segment[];
  readonly status: Segment | null;
}

function header(r: RawReq): Uint8Array {
  const b = new Uint8Array(16);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, r.type >>> 0, true);
  dv.setUint32(4, (r.reserved ?? 0) >>> 0, true);
  dv.setBigUint64(8, BigInt.asUintN(64, BigInt(r.sector ?? 0)), true);
  return b;
}

function build(r: RawReq, heap: Heap): Built {
  const readable: Segment[] = [];
  const writable: Segment[] = [];
  const hdr = header(r);
  let o = 0;
  for (const n of r.headerSplit ?? [16]) {
    const a = heap.alloc(n);
    memory.write(a, hdr.subarray(o, o + n));
    readable.push({ addr: a, len: n });
    o += n;
  }
  const piece = r.piece ?? 1 << 30;
  const out = r.out ?? new Uint8Array(0);
  for (let p = 0; p < out.length; p += piece) {
    const chunk = out.subarray(p, Math.min(out.length, p + piece));
    const a = heap.alloc(chunk.length, 512);
    memory.write(a, chunk);
    readable.push({ addr: a, len: chunk.length });
  }
  const inBufs: Segment[] = [];
  for (let p = 0; p < (r.inLen ?? 0); p += piece) {
    const len = Math.min(r.inLen! - p, piece);
    const a = heap.alloc(len, 512);
    memory.fill(a, len, 0xee);
    inBufs.push({ addr: a, len });
  }
  writable.push(...inBufs);
  const statusLen = r.statusLen ?? 1;
  let status: Segment | null = null;
  if (statusLen > 0) {
    status = { addr: heap.alloc(statusLen), len: statusLen };
    memory.fill(status.addr, statusLen, 0xee);
    writable.push(status);
  }
  return { readable, writable, inBufs, status };
}

function result(b: Built, len: number): RawResult {
  const total = b.inBufs.reduce((n, s) => n + s.len, 0);
  const data = new Uint8Array(total);
  let o = 0;
  for (const s of b.inBufs) {
    memory.read(s.addr, data.subarray(o, o + s.len));
    o += s.len;
  }
  const statusBuf = new Uint8Array(b.status?.len ?? 0);
  if (b.status !== null) memory.read(b.status.addr, statusBuf);
  return {
    status: b.status === null ? -1 : statusBuf[statusBuf.length - 1]!,
    len,
    data,
    statusBuf,
  };
}

/**
 * Points the first descriptor of the request just staged on queue `q` (the
 * only one staged since `at`, the ring's notificationData before it: split,
 * the avail index whose entry names the head; packed, the slot) outside
 * guest memory.
 */
function corruptStagedHead(q: number, at: number): void {
  const l = rings[q]!;
  const slot =
    l.layout === "packed"
      ? at & 0x7fff
      : memory.readU16(l.availAddr + VIRTQ_AVAIL_OFF_RING + 2 * (at % l.size));
  memory.writeU64(l.descAddr + 16 * slot, BigInt(GUEST_BYTES) * 4n);
}

/**
 * Sends every request (at most `maxInFlight` outstanding), waits for all of
 * them, and returns their results in order. Stops early if the device
 * reports DEVICE_NEEDS_RESET.
 */
function run(reqs: readonly RawReq[], maxInFlight: number) {
  const heap = new Heap();
  const built = reqs.map((r) => build(r, heap));
  const results: (RawResult | null)[] = reqs.map(() => null);
  let next = 0;
  let done = 0;
  let outstanding = 0;
  while (done < reqs.length) {
    const touched = new Set<number>();
    while (next < reqs.length && outstanding < maxInFlight) {
      const q = reqs[next]!.queue ?? 0;
      const b = built[next]!;
      const corrupt = reqs[next]!.corruptHead === true;
      // Publish what is staged, so that notificationData says where this request goes.
      if (corrupt) queues[q]!.publish();
      const at = queues[q]!.notificationData;
      if (!queues[q]!.stage(b.readable, b.writable, next)) break;
      if (corrupt) corruptStagedHead(q, at);
      touched.add(q);
      next++;
      outstanding++;
    }
    for (const q of touched) driver.kick(q);
    let got = 0;
    for (const dq of queues) {
      while (dq.nextUsed()) {
        results[dq.usedToken] = result(built[dq.usedToken]!, dq.usedLen);
        got++;
      }
    }
    done += got;
    outstanding -= got;
    if (got > 0 || done === reqs.length) continue;
    const q = queues.findIndex((dq) => dq.numOutstanding > 0);
    const w = driver.waitUsed(Math.max(q, 0), WAIT_MS);
    if (w === "timeout")
      throw new Error(`stall: ${outstanding} requests outstanding after ${WAIT_MS} ms`);
    if (w === "config") {
      const status = driver.run(driver.readStatus());
      if ((status & VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET) !== 0)
        return { broken: true, status, results, outstanding };
    }
  }
  return { broken: false, status: driver.run(driver.readStatus()), results, outstanding: 0 };
}

/**
 * Sends every request, kicks, and resets the device at once (requests in
 * flight). Then takes what the device completed before acknowledging the
 * reset and fails the rest (detachAll): returns the counts.
 */
function resetInFlight(reqs: readonly RawReq[], delayMs: number) {
  const heap = new Heap();
  const touched = new Set<number>();
  let submitted = 0;
  for (const r of reqs) {
    const b = build(r, heap);
    const q = r.queue ?? 0;
    if (!queues[q]!.stage(b.readable, b.writable, submitted)) break;
    touched.add(q);
    submitted++;
  }
  for (const q of touched) driver.kick(q);
  // Block this thread for a moment (nothing else runs here): the device pops and submits meanwhile.
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, delayMs);
  driver.run(driver.reset());
  let completed = 0;
  for (const dq of queues) while (dq.nextUsed()) completed++;
  let failed = 0;
  for (const dq of queues) failed += dq.detachAll().length;
  return { submitted, completed, failed };
}

/**
 * Test rig for the virtio-blk device core: guest memory, a mock driver, a
 * DeviceQueue, a config, a backing store and a queue engine, all in one
 * thread. Requests are built by the mock driver exactly as a guest would
 * (or deliberately malformed); results are read back from the used ring and
 * the status byte.
 */
import assert from "node:assert/strict";
import { GuestMemory } from "../../src/memory/guest-memory.ts";
import { DeviceQueue } from "../../src/ring/device-queue.ts";
import { MockAllocator, MockSplitQueue, type MockBuffer } from "../../src/testing/mock-driver.ts";
import type { VirtioError } from "../../src/errors.ts";
import type { BlkBacking } from "../../src/devices/blk/backing.ts";
import { BlkDeviceConfig, type BlkDeviceOptions } from "../../src/devices/blk/config.ts";
import { BlkQueueEngine, type BlkQueueEngineOptions } from "../../src/devices/blk/queue-engine.ts";
import type { Logger } from "../../src/log.ts";
import { featureBit } from "../../src/spec/virtio.ts";

export const RING = 0x1000;
export const HEAP = 0x10000;
export const MEM_SIZE = 0x400000;

/** One request to build. */
export interface ReqSpec {
  type: number;
  /** u64 sector (bigint for values above 2^53). */
  sector?: number | bigint;
  reserved?: number;
  /** Device-readable bytes after the header (OUT data, segments, or wrong-direction data). */
  out?: Uint8Array;
  /** Device-writable bytes before the status byte (IN data, GET_ID buffer, or wrong-direction data). */
  inLen?: number;
  /** Split the header over descriptors of these sizes (sum 16, or less to make it short). */
  headerSplit?: number[];
  /** Split `out` and the `inLen` buffer into descriptors of at most this many bytes. */
  piece?: number;
  /** Length of the status descriptor (default 1); the status is its last byte. 0 = none. */
  statusLen?: number;
  /** Put every buffer in an indirect table. */
  indirect?: boolean;
}

/** Where a built request lives in guest memory. */
export interface BuiltReq {
  head: number;
  /** Writable data buffers (address, length) in order, status excluded. */
  inBufs: { addr: number; len: number }[];
  statusAddr: number;
}

/** The 16-byte header. */
export function header(type: number, sector: number | bigint = 0, reserved = 0): Uint8Array {
  const b = new Uint8Array(16);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, type >>> 0, true);
  dv.setUint32(4, reserved >>> 0, true);
  dv.setBigUint64(8, BigInt.asUintN(64, BigInt(sector)), true);
  return b;
}

/** DISCARD / WRITE_ZEROES segments. */
export function segments(
  segs: { sector: number | bigint; num: number; flags?: number }[],
): Uint8Array {
  const b = new Uint8Array(16 * segs.length);
  const dv = new DataView(b.buffer);
  segs.forEach((s, i) => {
    dv.setBigUint64(16 * i, BigInt.asUintN(64, BigInt(s.sector)), true);
    dv.setUint32(16 * i + 8, s.num >>> 0, true);
    dv.setUint32(16 * i + 12, (s.flags ?? 0) >>> 0, true);
  });
  return b;
}

/** Deterministic pseudo-random bytes. */
export function pattern(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}

/** Every blk feature the config offers (what a full-featured driver accepts). */
export function allOffered(cfg: BlkDeviceConfig): bigint {
  return cfg.offeredFeatures;
}

/** Offered features minus the given bits. */
export function without(cfg: BlkDeviceConfig, ...bits: number[]): bigint {
  let f = cfg.offeredFeatures;
  for (const b of bits) f &= ~featureBit(b);
  return f;
}

/** A logger that records everything. */
export class RecordingLogger implements Logger {
  readonly errors: string[] = [];
  readonly warnings: string[] = [];
  readonly traces: string[] = [];
  readonly trace: (m: string) => void;
  constructor(verbose = true) {
    this.trace = (m) => {
      if (verbose) this.traces.push(m);
    };
  }
  error(m: string): void {
    this.errors.push(m);
  }
  warn(m: string): void {
    this.warnings.push(m);
  }
}

/** Options for {@link BlkRig}. */
export interface RigOptions {
  backing: BlkBacking;
  config?: Partial<BlkDeviceOptions>;
  /** Driver features (default: everything offered). */
  features?: (cfg: BlkDeviceConfig) => bigint;
  queueSize?: number;
  eventIdx?: boolean;
  engine?: Partial<BlkQueueEngineOptions>;
}

/** The whole single-queue device under test. */
export class BlkRig {
  readonly mem: GuestMemory;
  readonly drv: MockSplitQueue;
  readonly q: DeviceQueue;
  alloc: MockAllocator;
  readonly cfg: BlkDeviceConfig;
  readonly engine: BlkQueueEngine;
  readonly backing: BlkBacking;
  readonly log = new RecordingLogger();
  readonly broken: VirtioError[] = [];
  notifications = 0;

  constructor(o: RigOptions) {
    const size = o.queueSize ?? 64;
    this.mem = GuestMemory.createShared([{ guestPhysAddr: 0, size: MEM_SIZE }]);
    this.drv = new MockSplitQueue(this.mem, size, RING);
    this.alloc = new MockAllocator(HEAP, MEM_SIZE);
    this.backing = o.backing;
    this.cfg = new BlkDeviceConfig({
      capacityBytes: o.backing.size,
      readOnly: o.backing.readOnly,
      queueSize: size,
      ...o.config,
    });
    this.cfg.negotiate((o.features ?? allOffered)(this.cfg));
    this.q = new DeviceQueue(this.mem, {
      ...this.drv.addresses,
      eventIdx: o.eventIdx ?? false,
      indirect: true,
    });
    this.engine = new BlkQueueEngine({
      queue: this.q,
      queueIndex: 0,
      backing: o.backing,
      policy: this.cfg,
      notify: () => this.notifications++,
      onBroken: (e) => this.broken.push(e),
      logger: this.log,
      ...o.engine,
    });
  }

  /** Forgets every buffer handed out (call only when no request is outstanding). */
  resetHeap(): void {
    this.alloc = new MockAllocator(HEAP, MEM_SIZE);
  }

  /** Lays out a request in guest memory and builds its chain (not published). */
  build(spec: ReqSpec): BuiltReq {
    const bufs: MockBuffer[] = [];
    const hdr = header(spec.type, spec.sector ?? 0, spec.reserved ?? 0);
    let off = 0;
    for (const n of spec.headerSplit ?? [16]) {
      const a = this.alloc.alloc(n);
      this.mem.write(a, hdr.subarray(off, off + n));
      bufs.push({ addr: a, len: n });
      off += n;
    }
    const piece = spec.piece ?? 1 << 30;
    if (spec.out !== undefined) {
      for (let o = 0; o < spec.out.length; o += piece) {
        const chunk = spec.out.subarray(o, Math.min(spec.out.length, o + piece));
        const a = this.alloc.alloc(chunk.length, 512);
        this.mem.write(a, chunk);
        bufs.push({ addr: a, len: chunk.length });
      }
    }
    const inBufs: { addr: number; len: number }[] = [];
    for (let o = 0; o < (spec.inLen ?? 0); o += piece) {
      const len = Math.min(spec.inLen! - o, piece);
      const a = this.alloc.alloc(len, 512);
      this.mem.fill(a, len, 0xee);
      inBufs.push({ addr: a, len });
      bufs.push({ addr: a, len, writable: true });
    }
    const statusLen = spec.statusLen ?? 1;
    let statusAddr = -1;
    if (statusLen > 0) {
      const a = this.alloc.alloc(statusLen);
      this.mem.fill(a, statusLen, 0xee);
      statusAddr = a + statusLen - 1;
      bufs.push({ addr: a, len: statusLen, writable: true });
    }
    const head = this.drv.buildChain(
      bufs,
      spec.indirect ? { indirectTable: this.alloc.alloc(16 * bufs.length) } : {},
    );
    return { head, inBufs, statusAddr };
  }

  /** Builds and publishes (does not kick). */
  add(spec: ReqSpec): BuiltReq {
    const r = this.build(spec);
    this.drv.publish(r.head);
    return r;
  }

  /** Reads the concatenated writable data of a request. */
  readIn(r: BuiltReq): Uint8Array {
    const total = r.inBufs.reduce((n, b) => n + b.len, 0);
    const out = new Uint8Array(total);
    let o = 0;
    for (const b of r.inBufs) {
      this.mem.read(b.addr, out.subarray(o, o + b.len));
      o += b.len;
    }
    return out;
  }

  status(r: BuiltReq): number {
    return this.mem.readU8(r.statusAddr);
  }

  /** Adds, kicks and waits for the used element of one request. */
  async run(spec: ReqSpec): Promise<{ req: BuiltReq; status: number; len: number }> {
    const req = this.add(spec);
    this.engine.kick();
    const [used] = await this.waitUsed(1);
    assert.equal(used!.id, req.head);
    return { req, status: this.status(req), len: used!.len };
  }

  /** Waits (bounded) until `n` used elements were published, and pops them. */
  async waitUsed(n: number, maxTurns = 20000): Promise<{ id: number; len: number }[]> {
    const got: { id: number; len: number }[] = [];
    for (let turn = 0; got.length < n; turn++) {
      got.push(...this.drv.drainUsed());
      if (got.length >= n) break;
      if (turn >= maxTurns) assert.fail(`only ${got.length} of ${n} used elements arrived`);
      await new Promise((r) => setImmediate(r));
    }
    return got;
  }
}

/** Waits (bounded, in event-loop turns) until `pred()` holds. */
export async function until(pred: () => boolean, what: string, maxTurns = 20000): Promise<void> {
  for (let turn = 0; !pred(); turn++) {
    if (turn >= maxTurns) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

/**
 * The driver half of the checksum example: keeps a queue full of requests
 * for {@link ChecksumDevice} and checks every answer. VIRTIO 1.2 §2.7.13
 * (supplying buffers), §2.7.14 (receiving used buffers).
 *
 * Each request has a generated payload (one or two device-readable
 * segments) and a 4-byte device-writable segment; the driver computes the
 * expected FNV-1a hash as it writes the payload and compares it with what the
 * device wrote. A per-request bitmap proves every request completed exactly
 * once. The loop follows Linux's ringtest: add up to `batch` requests, kick,
 * take what completed, and wait (bounded) only when the ring is full or
 * everything is submitted.
 *
 * @module
 */
import type { GuestSlice } from "../src/memory/guest-memory.ts";
import type { DriverRing, Segment } from "../src/ring/driver-ring.ts";
import type { InprocDriverTransport } from "../src/transport/inproc/index.ts";

/** One run of {@link pumpChecksum}. */
export interface PumpOptions {
  /** Requests to complete. */
  readonly total: number;
  /** Requests added between kicks (and the most in flight is the slot count). */
  readonly batch: number;
  /** Most requests in flight at once (≤ slots; 1 = ping-pong). */
  readonly maxInFlight: number;
  /** Readable payload bytes per request (a multiple of 4, ≥ 8). */
  readonly payloadBytes: number;
  /** Longest single wait in ms; a wait that times out is a stall and fails the run. */
  readonly waitTimeoutMs: number;
  /** Check payload hashes and used lengths (the demo and the stress test do). */
  readonly verify: boolean;
}

/** What a run did. */
export interface PumpResult {
  requests: number;
  bytesOut: number;
  bytesIn: number;
  elapsedMs: number;
  /** Requests whose hash or used length was wrong (must be 0). */
  mismatches: number;
  /** Requests completed twice or never (must be 0). */
  duplicates: number;
  missing: number;
  waits: number;
}

/** A fixed set of buffer slots in guest memory, one per request in flight. */
export class SlotPool {
  readonly count: number;
  readonly #slice: GuestSlice;
  readonly #stride: number;
  readonly #payload: number;
  readonly #base: number;
  /** Preallocated segment lists per slot: readable as one or two segments, writable. */
  readonly #one: Segment[][] = [];
  readonly #two: Segment[][] = [];
  readonly #out: Segment[][] = [];

  /**
   * @param slice a window of guest memory holding all slots, starting at `slice.addr`.
   */
  constructor(slice: GuestSlice, count: number, payloadBytes: number) {
    if (payloadBytes % 4 !== 0 || payloadBytes < 8)
      throw new RangeError("payloadBytes must be a multiple of 4, at least 8");
    this.count = count;
    this.#slice = slice;
    this.#payload = payloadBytes;
    this.#stride = Math.ceil((payloadBytes + 4) / 16) * 16;
    this.#base = slice.addr;
    if (count * this.#stride > slice.length) throw new RangeError("slots do not fit the window");
    const half = (payloadBytes / 2) & ~3;
    for (let s = 0; s < count; s++) {
      const addr = this.#base + s * this.#stride;
      this.#one.push([{ addr, len: payloadBytes }]);
      this.#two.push([
        { addr, len: half },
        { addr: addr + half, len: payloadBytes - half },
      ]);
      this.#out.push([{ addr: addr + payloadBytes, len: 4 }]);
    }
  }

  /** Bytes of guest memory needed for `count` slots. */
  static bytes(count: number, payloadBytes: number): number {
    return count * Math.ceil((payloadBytes + 4) / 16) * 16;
  }

  readable(slot: number, split: boolean): Segment[] {
    return split ? this.#two[slot]! : this.#one[slot]!;
  }
  writable(slot: number): Segment[] {
    return this.#out[slot]!;
  }

  /** Writes request `n`'s payload into `slot`, clears its answer word, returns the expected hash. */
  fill(slot: number, n: number): number {
    const s = this.#slice;
    const off = slot * this.#stride;
    let h = 0x811c9dc5;
    let x = (Math.imul(n, 0x9e3779b1) ^ 0x5bd1e995) >>> 0;
    for (let i = 0; i < this.#payload; i += 4) {
      x = (Math.imul(x ^ (x >>> 15), 0x2c1b3c6d) + i) >>> 0;
      s.writeU32(off + i, x);
      h = Math.imul(h ^ (x & 0xff), 0x01000193);
      h = Math.imul(h ^ ((x >>> 8) & 0xff), 0x01000193);
      h = Math.imul(h ^ ((x >>> 16) & 0xff), 0x01000193);
      h = Math.imul(h ^ (x >>> 24), 0x01000193);
    }
    s.writeU32(off + this.#payload, 0);
    return h >>> 0;
  }

  /** The answer word the device wrote into `slot`. */
  answer(slot: number): number {
    return this.#slice.readU32(slot * this.#stride + this.#payload);
  }
}

/**
 * Runs `options.total` requests through queue 0 and checks them. Blocking
 * (a worker). A wait that times out throws (a stall, e.g. a lost wake-up).
 *
 * @throws {Error} on a stall; the queue's VirtioError if it broke.
 */
export function pumpChecksum(
  driver: InprocDriverTransport,
  dq: DriverRing<number>,
  pool: SlotPool,
  options: PumpOptions,
): PumpResult {
  const { total, batch, verify, waitTimeoutMs, payloadBytes } = options;
  const maxInFlight = Math.min(options.maxInFlight, pool.count);
  const expected = new Uint32Array(pool.count);
  const done = verify ? new Uint8Array(total) : new Uint8Array(0);
  const free: number[] = [];
  for (let s = pool.count - 1; s >= 0; s--) free.push(s);
  const r: PumpResult = {
    requests: 0,
    bytesOut: 0,
    bytesIn: 0,
    elapsedMs: 0,
    mismatches: 0,
    duplicates: 0,
    missing: 0,
    waits: 0,
  };
  let started = 0;
  let completed = 0;
  let inFlight = 0;
  const t0 = performance.now();
  dq.disableCallbacks();
  while (completed < total) {
    let added = 0;
    let ringFull = false;
    while (started < total && added < batch && inFlight < maxInFlight) {
      const slot = free.pop()!;
      const n = started;
      expected[slot] = pool.fill(slot, n);
      // Token = request number · 2^16 + slot: a number, no allocation.
      // stage(): published together by kick() (kickNeeded publishes avail.idx first).
      if (!dq.stage(pool.readable(slot, (n & 1) === 1), pool.writable(slot), n * 65536 + slot)) {
        free.push(slot); // not enough free descriptors: wait for completions
        ringFull = true;
        break;
      }
      started++;
      inFlight++;
      added++;
    }
    if (added > 0) driver.kick(0);
    let got = 0;
    while (dq.nextUsed()) {
      const token = dq.usedToken;
      const slot = token & 0xffff;
      const n = (token - slot) / 65536;
      if (verify) {
        if (done[n] !== 0) r.duplicates++;
        done[n] = 1;
        if (dq.usedLen !== 4 || pool.answer(slot) !== expected[slot]) r.mismatches++;
      }
      free.push(slot);
      inFlight--;
      completed++;
      got++;
    }
    if (got > 0 || (!ringFull && started < total && inFlight < maxInFlight)) continue;
    r.waits++;
    const w = driver.waitUsed(0, waitTimeoutMs);
    dq.disableCallbacks();
    if (w === "timeout") {
      throw new Error(
        `stall: no completion within ${waitTimeoutMs} ms (started ${started}, completed ${completed}, in flight ${inFlight})`,
      );
    }
    if (w === "config") throw new Error("the device sent a configuration change (broken?)");
  }
  r.elapsedMs = performance.now() - t0;
  r.requests = completed;
  r.bytesOut = completed * payloadBytes;
  r.bytesIn = completed * 4;
  if (verify) for (let n = 0; n < total; n++) if (done[n] === 0) r.missing++;
  return r;
}

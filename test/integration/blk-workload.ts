/**
 * The random mixed virtio-blk workload of the integration tests, run by the
 * driver worker: reads and writes of random sizes split into randomly sized,
 * misaligned buffers, DISCARD, WRITE_ZEROES (with and without UNMAP) and
 * FLUSH, many in flight across several queues, every read checked against a
 * reference model of the disk. Requests in flight never overlap a
 * write-type request in flight (as a file system would behave), so every
 * read has one right answer — except sectors discarded since their last
 * write, which may read as their old data or as zeroes (§5.2.6.2: the device
 * MAY deallocate).
 */
import type { GuestMemory } from "../../src/memory/guest-memory.ts";
import type { DriverRing, Segment } from "../../src/ring/driver-ring.ts";
import * as blk from "../../src/spec/blk.ts";
import { VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET } from "../../src/spec/virtio.ts";
import type { InprocDriverTransport } from "../../src/transport/inproc/index.ts";
import type { WorkloadOptions, WorkloadReport } from "./blk-layout.ts";

const SECTOR = 512;
const WAIT_MS = 20_000;

/** xorshift32: deterministic per seed. */
export class Rng {
  #x: number;
  constructor(seed: number) {
    this.#x = seed >>> 0 || 0x9e3779b9;
  }
  next(): number {
    let x = this.#x;
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    this.#x = x;
    return x;
  }
  /** Integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + (this.next() % (hi - lo + 1));
  }
  fill(b: Uint8Array): void {
    for (let i = 0; i < b.length; i++) b[i] = this.next() & 0xff;
  }
}

/** Kinds of operation the workloads issue. */
export type Kind = "read" | "write" | "discard" | "write-zeroes" | "write-zeroes-unmap" | "flush";

/**
 * The reference model of the disk, with per-sector locks so that no two
 * requests in flight conflict (a write-type request overlaps nothing in
 * flight; a read overlaps no write in flight).
 */
export class DiskModel {
  readonly model: Uint8Array;
  /** 1 per sector discarded since its last write: it may read as its old data or as zeroes. */
  readonly maybeZero: Uint8Array;
  readonly sectors: number;
  readonly mismatches: string[] = [];
  readonly #readers: Uint16Array;
  readonly #writers: Uint16Array;

  constructor(initial: Uint8Array) {
    this.model = initial.slice();
    this.sectors = this.model.length / SECTOR;
    this.maybeZero = new Uint8Array(this.sectors);
    this.#readers = new Uint16Array(this.sectors);
    this.#writers = new Uint16Array(this.sectors);
  }

  /** A start sector for `sectors` sectors that conflicts with nothing in flight, or -1. */
  pickRange(rng: Rng, kind: Kind, sectors: number): number {
    const write = kind !== "read";
    for (let attempt = 0; attempt < 8; attempt++) {
      const start = rng.int(0, this.sectors - sectors);
      let free = true;
      for (let s = start; s < start + sectors && free; s++)
        free = this.#writers[s] === 0 && (!write || this.#readers[s] === 0);
      if (free) return start;
    }
    return -1;
  }

  lock(kind: Kind, sector: number, sectors: number, delta: 1 | -1): void {
    const lock = kind === "read" ? this.#readers : this.#writers;
    for (let s = sector; s < sector + sectors; s++) lock[s]! += delta;
  }

  /** Applies a completed (OK) write-type request. */
  apply(kind: Kind, sector: number, sectors: number, payload: Uint8Array | null): void {
    const from = sector * SECTOR;
    switch (kind) {
      case "write":
        this.model.set(payload!, from);
        this.maybeZero.fill(0, sector, sector + sectors);
        return;
      case "discard":
        this.maybeZero.fill(1, sector, sector + sectors);
        return;
      case "write-zeroes":
      case "write-zeroes-unmap":
        this.model.fill(0, from, from + sectors * SECTOR);
        this.maybeZero.fill(0, sector, sector + sectors);
        return;
      default:
        return;
    }
  }

  /** Checks what a completed read returned. */
  checkRead(what: string, sector0: number, got: Uint8Array): void {
    for (let i = 0; i < got.length / SECTOR; i++) {
      const sector = sector0 + i;
      const g = got.subarray(i * SECTOR, (i + 1) * SECTOR);
      const m = this.model.subarray(sector * SECTOR, (sector + 1) * SECTOR);
      if (equal(g, m)) continue;
      if (this.maybeZero[sector] === 1 && g.every((b) => b === 0)) continue;
      if (this.mismatches.length < 10) this.mismatches.push(`${what}: sector ${sector} differs`);
      return;
    }
  }
}

/** Picks an operation kind with the workloads' mix. */
export function pickKind(rng: Rng, o: { discard: boolean; writeZeroes: boolean }): Kind {
  const r = rng.int(0, 99);
  if (r < 40) return "read";
  if (r < 75) return "write";
  if (r < 83) return o.discard ? "discard" : "write";
  if (r < 89) return o.writeZeroes ? "write-zeroes" : "read";
  if (r < 95) return o.writeZeroes ? "write-zeroes-unmap" : "read";
  return "flush";
}

interface Slot {
  readonly base: number;
  readonly queue: number;
  kind: Kind;
  sector: number;
  sectors: number;
  data: Segment[];
  payload: Uint8Array | null;
}

/** Splits `bytes` at `addr` into 1..4 randomly sized, misaligned, non-adjacent buffers. */
export function scatter(rng: Rng, addr: number, bytes: number): Segment[] {
  const pieces = Math.min(rng.int(1, 4), bytes);
  const cuts = new Set<number>();
  while (cuts.size < pieces - 1) cuts.add(rng.int(1, bytes - 1));
  const bounds = [0, ...[...cuts].sort((a, b) => a - b), bytes];
  const segs: Segment[] = [];
  let at = addr;
  for (let i = 0; i + 1 < bounds.length; i++) {
    const len = bounds[i + 1]! - bounds[i]!;
    segs.push({ addr: at, len });
    at += len + rng.int(1, 7); // a gap: the buffers are not one contiguous range
  }
  return segs;
}

/** Runs the workload; the driver's queues are set up and the device is live. */
export function runWorkload(
  driver: InprocDriverTransport,
  queues: readonly DriverRing<number>[],
  memory: GuestMemory,
  heapBase: number,
  o: WorkloadOptions,
): WorkloadReport {
  return new Workload(driver, queues, memory, heapBase, o).run();
}

class Workload {
  readonly #driver: InprocDriverTransport;
  readonly #queues: readonly DriverRing<number>[];
  readonly #mem: GuestMemory;
  readonly #o: WorkloadOptions;
  readonly #rng: Rng;
  readonly #disk: DiskModel;
  readonly #slots: Slot[] = [];
  readonly #free: number[][];
  readonly #counts: Record<string, number> = {};
  readonly #failures: string[] = [];
  #outstanding = 0;
  #maxInFlight = 0;

  constructor(
    driver: InprocDriverTransport,
    queues: readonly DriverRing<number>[],
    memory: GuestMemory,
    heapBase: number,
    o: WorkloadOptions,
  ) {
    this.#driver = driver;
    this.#queues = queues;
    this.#mem = memory;
    this.#o = o;
    this.#rng = new Rng(o.seed);
    this.#disk = new DiskModel(o.initial);
    const slotBytes = o.maxIoBytes + 8192;
    this.#free = queues.map(() => []);
    for (let q = 0; q < o.queues; q++) {
      for (let i = 0; i < o.inFlight; i++) {
        const index = this.#slots.length;
        const base = heapBase + index * slotBytes;
        this.#slots.push({
          base,
          queue: q,
          kind: "flush",
          sector: 0,
          sectors: 0,
          data: [],
          payload: null,
        });
        this.#free[q]!.push(index);
      }
    }
    memory.checkRange(heapBase, this.#slots.length * slotBytes);
  }

  run(): WorkloadReport {
    let issued = 0;
    while (issued < this.#o.ops || this.#outstanding > 0) {
      let progressed = false;
      for (let q = 0; q < this.#o.queues && issued < this.#o.ops; q++) {
        let added = 0;
        while (issued < this.#o.ops && this.#free[q]!.length > 0 && this.#submit(q)) {
          issued++;
          added++;
        }
        if (added > 0) {
          this.#driver.kick(q);
          progressed = true;
        }
      }
      this.#maxInFlight = Math.max(this.#maxInFlight, this.#outstanding);
      if (this.#harvest() > 0 || progressed) continue;
      this.#wait();
    }
    return {
      counts: this.#counts,
      mismatches: this.#disk.mismatches,
      failures: this.#failures,
      model: this.#disk.model,
      maybeZero: this.#disk.maybeZero,
      maxInFlight: this.#maxInFlight,
    };
  }

  /** Blocks until some queue has used buffers (bounded: a timeout is a stall). */
  #wait(): void {
    let q = 0;
    for (let i = 1; i < this.#queues.length; i++)
      if (this.#queues[i]!.numOutstanding > this.#queues[q]!.numOutstanding) q = i;
    const r = this.#driver.waitUsed(q, WAIT_MS);
    if (r === "timeout")
      throw new Error(
        `stall: no completion within ${WAIT_MS} ms (${this.#outstanding} outstanding)`,
      );
    if (r === "config") {
      const status = this.#driver.run(this.#driver.readStatus());
      if ((status & VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET) !== 0)
        throw new Error(`device needs reset (status 0x${status.toString(16)})`);
    }
  }

  #submit(q: number): boolean {
    const kind = pickKind(this.#rng, this.#o);
    const maxSectors = kind === "read" || kind === "write" ? this.#o.maxIoBytes / SECTOR : 256;
    const sectors = kind === "flush" ? 0 : this.#rng.int(1, maxSectors);
    const sector = kind === "flush" ? 0 : this.#disk.pickRange(this.#rng, kind, sectors);
    if (sector < 0) return false;
    const index = this.#free[q]!.pop()!;
    const slot = this.#slots[index]!;
    slot.kind = kind;
    slot.sector = sector;
    slot.sectors = sectors;
    slot.payload = null;
    const { readable, writable } = this.#build(slot);
    if (!this.#queues[q]!.stage(readable, writable, index)) {
      this.#free[q]!.push(index);
      return false;
    }
    this.#disk.lock(kind, sector, sectors, 1);
    this.#outstanding++;
    this.#counts[kind] = (this.#counts[kind] ?? 0) + 1;
    return true;
  }

  /** Lays out a request in its slot: header at +0, status at +16, segment list at +32, data from +4096. */
  #build(slot: Slot): { readable: Segment[]; writable: Segment[] } {
    const mem = this.#mem;
    const type = {
      read: blk.VIRTIO_BLK_T_IN,
      write: blk.VIRTIO_BLK_T_OUT,
      discard: blk.VIRTIO_BLK_T_DISCARD,
      "write-zeroes": blk.VIRTIO_BLK_T_WRITE_ZEROES,
      "write-zeroes-unmap": blk.VIRTIO_BLK_T_WRITE_ZEROES,
      flush: blk.VIRTIO_BLK_T_FLUSH,
    }[slot.kind];
    mem.writeU32(slot.base, type);
    mem.writeU32(slot.base + 4, 0);
    mem.writeU64(
      slot.base + 8,
      BigInt(slot.kind === "read" || slot.kind === "write" ? slot.sector : 0),
    );
    mem.writeU8(slot.base + 16, 0xee);
    const readable: Segment[] = [{ addr: slot.base, len: 16 }];
    const writable: Segment[] = [];
    const status = { addr: slot.base + 16, len: 1 };
    if (slot.kind === "discard" || slot.kind.startsWith("write-zeroes")) {
      const seg = slot.base + 32;
      mem.writeU64(seg, BigInt(slot.sector));
      mem.writeU32(seg + 8, slot.sectors);
      mem.writeU32(
        seg + 12,
        slot.kind === "write-zeroes-unmap" ? blk.VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP : 0,
      );
      readable.push({ addr: seg, len: 16 });
    } else if (slot.kind !== "flush") {
      slot.data = scatter(
        this.#rng,
        slot.base + 4096 + this.#rng.int(0, 511),
        slot.sectors * SECTOR,
      );
      if (slot.kind === "write") {
        slot.payload = new Uint8Array(slot.sectors * SECTOR);
        this.#rng.fill(slot.payload);
        let o = 0;
        for (const s of slot.data) {
          mem.write(s.addr, slot.payload.subarray(o, o + s.len));
          o += s.len;
        }
        readable.push(...slot.data);
      } else {
        for (const s of slot.data) mem.fill(s.addr, s.len, 0xee);
        writable.push(...slot.data);
      }
    }
    writable.push(status);
    return { readable, writable };
  }

  #harvest(): number {
    let n = 0;
    for (const dq of this.#queues) {
      while (dq.nextUsed()) {
        this.#complete(dq.usedToken, dq.usedLen);
        n++;
      }
      if (dq.broken !== null) throw dq.broken;
    }
    return n;
  }

  #complete(index: number, len: number): void {
    const slot = this.#slots[index]!;
    const status = this.#mem.readU8(slot.base + 16);
    const what = `${slot.kind} q${slot.queue} sector ${slot.sector}+${slot.sectors}`;
    this.#disk.lock(slot.kind, slot.sector, slot.sectors, -1);
    this.#outstanding--;
    this.#free[slot.queue]!.push(index);
    const wantLen = slot.kind === "read" ? slot.sectors * SECTOR + 1 : 1;
    if (status !== blk.VIRTIO_BLK_S_OK || len !== wantLen) {
      this.#failures.push(`${what}: status ${status} len ${len}`);
      return;
    }
    if (slot.kind !== "read") {
      this.#disk.apply(slot.kind, slot.sector, slot.sectors, slot.payload);
      return;
    }
    const got = new Uint8Array(slot.sectors * SECTOR);
    let o = 0;
    for (const s of slot.data) {
      this.#mem.read(s.addr, got.subarray(o, o + s.len));
      o += s.len;
    }
    this.#disk.checkRead(what, slot.sector, got);
  }
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

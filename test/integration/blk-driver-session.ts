/**
 * The driver worker's BlkDriver side (src/devices/blk/driver.ts): device
 * initialization as a guest driver does it (§3.1.1, §5.2.5; split or packed
 * rings, RING_PACKED excluded for split ones), a pump that
 * sleeps once for all queues and hands used-buffer notifications to the
 * driver (and DEVICE_NEEDS_RESET to `markDeviceBroken`), the random mixed
 * workload through the driver's promise API, and a reset under requests in
 * flight whose pending promises must fail with DEVICE_RESET.
 */
import { ErrorCode, isVirtioError } from "../../src/errors.ts";
import { BlkDriver } from "../../src/devices/blk/driver.ts";
import { parseBlkConfig, selectBlkFeatures } from "../../src/devices/blk/driver-config.ts";
import { planBlkDriverMemory } from "../../src/devices/blk/driver-memory.ts";
import type { GuestMemory } from "../../src/memory/guest-memory.ts";
import type { RingLayoutKind } from "../../src/ring/ring-layout.ts";
import { VIRTIO_BLK_CONFIG_SIZE } from "../../src/spec/blk.ts";
import { VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET } from "../../src/spec/virtio.ts";
import type { InprocDriverTransport } from "../../src/transport/inproc/index.ts";
import { HEAP_BASE, RING_BASE, type WorkloadOptions, type WorkloadReport } from "./blk-layout.ts";
import { DiskModel, Rng, pickKind, scatter, type Kind } from "./blk-workload.ts";

const SECTOR = 512;

/** Outcome of {@link BlkDriverSession.resetInFlight}. */
export interface ResetReport {
  readonly submitted: number;
  /** Promises that resolved (completed before the reset). */
  readonly resolved: number;
  /** Promises rejected with DEVICE_RESET. */
  readonly resetRejected: number;
  /** Anything else (should be none). */
  readonly other: readonly string[];
}

/** A live BlkDriver over the transport, with its pump loop. */
export class BlkDriverSession {
  readonly driver: BlkDriver;
  readonly #t: InprocDriverTransport;
  readonly #memory: GuestMemory;
  readonly #numQueues: number;
  #running = true;
  readonly #pump: Promise<void>;

  private constructor(t: InprocDriverTransport, memory: GuestMemory, driver: BlkDriver, n: number) {
    this.#t = t;
    this.#memory = memory;
    this.driver = driver;
    this.#numQueues = n;
    this.#pump = this.#pumpLoop();
  }

  /** §3.1.1 with the driver's feature choice on `layout` rings, then a BlkDriver over every queue. */
  static async start(
    t: InprocDriverTransport,
    memory: GuestMemory,
    numQueues: number,
    queueSize: number,
    layout: RingLayoutKind,
  ): Promise<BlkDriverSession> {
    const plan = planBlkDriverMemory({
      base: RING_BASE,
      numQueues,
      queueSize,
      layout,
      indirectEntries: 32,
      bounceBytes: 1 << 20,
    });
    if (plan.end > HEAP_BASE) throw new Error(`driver memory plan ends at ${plan.end}`);
    const offered = await t.runAsync(t.deviceFeatures());
    const exclude = layout === "split" ? (["RING_PACKED"] as const) : [];
    const features = await t.runAsync(t.negotiate(selectBlkFeatures(offered, { exclude })));
    // §5.2.5.1: the configuration (writeback among it) is read after FEATURES_OK.
    const config = parseBlkConfig(
      await t.runAsync(t.readConfig(0, VIRTIO_BLK_CONFIG_SIZE)),
      features,
    );
    const queues = [];
    for (let q = 0; q < numQueues; q++) {
      queues.push(
        await t.runAsync(
          t.setupQueue<number>(q, { ...plan.rings[q]!, indirectArena: plan.indirectArenas[q]! }),
        ),
      );
    }
    await t.runAsync(t.start());
    if (queues.some((q) => q.layout !== layout)) throw new Error(`the rings are not ${layout}`);
    const driver = new BlkDriver({
      memory,
      queues,
      config,
      arena: plan.arena,
      indirectEntries: plan.indirectEntries,
      transport: t,
    });
    return new BlkDriverSession(t, memory, driver, numQueues);
  }

  async #pumpLoop(): Promise<void> {
    while (this.#running) {
      const w = await this.#t.waitUsedAnyAsync(100);
      if (w === "used") for (let q = 0; q < this.#numQueues; q++) this.driver.processUsed(q);
      else if (w === "config") {
        const status = await this.#t.runAsync(this.#t.readStatus());
        if ((status & VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET) !== 0) this.driver.markDeviceBroken();
      }
    }
  }

  /** Ends the pump loop (bounded by its 100 ms wait slice). */
  async stop(): Promise<void> {
    this.#running = false;
    await this.#pump;
  }

  /**
   * The random mixed workload through the driver's API: `inFlight` lanes
   * per queue, each issuing one operation at a time on its queue; reads and
   * writes alternate between the copy API and zero-copy scattered, misaligned
   * guest buffers.
   */
  async workload(o: WorkloadOptions): Promise<WorkloadReport> {
    const disk = new DiskModel(o.initial);
    const rng = new Rng(o.seed);
    const counts: Record<string, number> = {};
    const failures: string[] = [];
    const lanes = o.queues * o.inFlight;
    const laneBytes = o.maxIoBytes + 8192;
    this.#memory.checkRange(HEAP_BASE, lanes * laneBytes);
    let issued = 0;
    let outstanding = 0;
    let maxInFlight = 0;
    const lane = async (index: number): Promise<void> => {
      const queue = index % o.queues;
      const heap = HEAP_BASE + index * laneBytes;
      while (issued < o.ops) {
        issued++;
        let kind = pickKind(rng, o);
        const maxSectors = kind === "read" || kind === "write" ? o.maxIoBytes / SECTOR : 256;
        const sectors = kind === "flush" ? 0 : rng.int(1, maxSectors);
        let sector = kind === "flush" ? 0 : disk.pickRange(rng, kind, sectors);
        if (sector < 0) {
          kind = "flush"; // everything it tried overlaps a request in flight
          sector = 0;
        }
        const n = kind === "flush" ? 0 : sectors;
        counts[kind] = (counts[kind] ?? 0) + 1;
        disk.lock(kind, sector, n, 1);
        outstanding++;
        maxInFlight = Math.max(maxInFlight, outstanding);
        const what = `${kind} q${queue} sector ${sector}+${n}`;
        try {
          await this.#op(kind, queue, sector, n, heap, rng, disk, what);
        } catch (e) {
          failures.push(`${what}: ${e instanceof Error ? e.message : String(e)}`);
        } finally {
          disk.lock(kind, sector, n, -1);
          outstanding--;
        }
      }
    };
    await Promise.all(Array.from({ length: lanes }, (_, i) => lane(i)));
    return {
      counts,
      mismatches: disk.mismatches,
      failures,
      model: disk.model,
      maybeZero: disk.maybeZero,
      maxInFlight,
    };
  }

  /** One operation; the model is updated once it succeeded. */
  async #op(
    kind: Kind,
    queue: number,
    sector: number,
    sectors: number,
    heap: number,
    rng: Rng,
    disk: DiskModel,
    what: string,
  ): Promise<void> {
    const d = this.driver;
    const offset = sector * SECTOR;
    const bytes = sectors * SECTOR;
    const opts = { queue };
    const zeroCopy = rng.int(0, 1) === 1;
    switch (kind) {
      case "read": {
        if (!zeroCopy) {
          const buf = new Uint8Array(bytes);
          await d.read(offset, buf, opts);
          disk.checkRead(what, sector, buf);
          return;
        }
        const segs = scatter(rng, heap + rng.int(0, 511), bytes);
        await d.readSegments(offset, segs, opts);
        const got = new Uint8Array(bytes);
        let o = 0;
        for (const s of segs) {
          this.#memory.read(s.addr, got.subarray(o, o + s.len));
          o += s.len;
        }
        disk.checkRead(what, sector, got);
        return;
      }
      case "write": {
        const data = new Uint8Array(bytes);
        rng.fill(data);
        if (zeroCopy) {
          const segs = scatter(rng, heap + rng.int(0, 511), bytes);
          let o = 0;
          for (const s of segs) {
            this.#memory.write(s.addr, data.subarray(o, o + s.len));
            o += s.len;
          }
          await d.writeSegments(offset, segs, opts);
        } else {
          await d.write(offset, data, opts);
        }
        disk.apply(kind, sector, sectors, data);
        return;
      }
      case "discard":
        await d.discard([{ offset, length: bytes }], opts);
        disk.apply(kind, sector, sectors, null);
        return;
      case "write-zeroes":
      case "write-zeroes-unmap":
        await d.writeZeroes([{ offset, length: bytes }], {
          ...opts,
          unmap: kind !== "write-zeroes",
        });
        disk.apply(kind, sector, sectors, null);
        return;
      case "flush":
        await d.flush(opts);
        return;
    }
  }

  /**
   * Starts `count` 64 KiB reads and writes spread over the queues, waits
   * `delayMs`, resets the device (§2.4: status 0, acknowledged once it reads
   * 0), tells the driver, and collects how every promise settled (bounded).
   */
  async resetInFlight(count: number, delayMs: number): Promise<ResetReport> {
    const d = this.driver;
    const promises: Promise<void>[] = [];
    for (let i = 0; i < count; i++) {
      const opts = { queue: i % this.#numQueues };
      const offset = i * 128 * SECTOR;
      promises.push(
        i % 2 === 0
          ? d.read(offset, new Uint8Array(64 * 1024), opts)
          : d.write(offset, new Uint8Array(64 * 1024).fill(i & 0xff), opts),
      );
    }
    await new Promise((r) => setTimeout(r, delayMs));
    await this.#t.runAsync(this.#t.reset());
    d.reset();
    const bound = new Promise<"stuck">((r) => setTimeout(() => r("stuck"), 10_000));
    const settled = await Promise.race([Promise.allSettled(promises), bound]);
    if (settled === "stuck") throw new Error("a request promise was left pending after the reset");
    let resolved = 0;
    let resetRejected = 0;
    const other: string[] = [];
    for (const s of settled) {
      if (s.status === "fulfilled") resolved++;
      else if (isVirtioError(s.reason, ErrorCode.DEVICE_RESET)) resetRejected++;
      else other.push(String(s.reason));
    }
    return { submitted: count, resolved, resetRejected, other };
  }
}

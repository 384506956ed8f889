/**
 * Model-based test of the virtqueue, split (VIRTIO 1.2 §2.7) and packed
 * (§2.8, at sizes that are not powers of two), both ends in one thread over
 * one GuestMemory: random interleavings of driver operations (the
 * {@link DriverRing} `openDriverRing` builds: add / stage / publish,
 * kickNeeded, getUsed, enable/disable callbacks) and device operations (the
 * {@link DeviceRing} `openRing` builds: popAvail, addUsed out of order,
 * publishUsed, needsNotification, enable/disable notification), checked
 * against a small reference model:
 *
 * - every request is popped once, in available-ring order, with its segments
 *   and readable payload intact; it is completed exactly once and delivered to
 *   the driver in used-ring order with its token, its length and the payload
 *   the device wrote;
 * - descriptor accounting (`numFree`, outstanding, in-flight) matches the
 *   model, including the indirect-vs-direct choice;
 * - staged requests stay invisible to the device until published;
 * - notifications are never missed: a device that armed notifications and
 *   saw an empty ring gets a kick from the first `kickNeeded` after a
 *   publish; a driver that armed callbacks (also the delayed variant) gets a
 *   call from the first `needsNotification` after enough completions (split:
 *   used buffers; packed: ring slots, §2.8.10, as the delayed event is
 *   placed in slots);
 * - neither side ever becomes broken;
 * - split indexes start near 65535 in some runs, so the 16-bit wrap is
 *   crossed; packed rings are small, so both wrap counters flip.
 *
 * @module
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import type { DeviceRing } from "../../src/ring/device-ring.ts";
import type { DriverRing } from "../../src/ring/driver-ring.ts";
import { openDriverRing } from "../../src/ring/open-driver-ring.ts";
import { openRing } from "../../src/ring/open-ring.ts";
import type { DescriptorChain } from "../../src/ring/chain.ts";
import { placeRing, type RingLayoutKind } from "../../src/ring/ring-layout.ts";
import { GuestMemory } from "../../src/memory/guest-memory.ts";
import {
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  featureBit,
} from "../../src/spec/virtio.ts";

const RING_BASE = 0x1000;
const ARENA = 0x10000;
const DATA = 0x20000;
/** Bytes of data per request slot: up to 8 segments of at most 64 bytes. */
const SLOT = 512;
const MAX_SEG_LEN = 64;
/** A slot no request owns (size ≤ 16), for adds that must be refused. */
const SCRATCH_SLOT = 16;

interface Cfg {
  layout: RingLayoutKind;
  size: number;
  eventIdx: boolean;
  indirect: boolean;
  entriesPerChain: number;
  initialIndex: number;
}

interface Req {
  token: number;
  slot: number;
  readLens: number[];
  writeLens: number[];
  /** Descriptors the driver should have used (1 for an indirect table). */
  needed: number;
}

interface Used {
  token: number;
  len: number;
}

/** The reference model: plain queues and counters. */
class Model {
  readonly cfg: Cfg;
  nextToken = 0;
  numFree: number;
  readonly freeSlots: number[];
  readonly outstanding = new Map<number, Req>();
  readonly slotToken = new Map<number, number>();
  /** Added but not yet published (stage). */
  staged: number[] = [];
  /** Published and not yet popped, in available-ring order. */
  availQ: number[] = [];
  /** Popped and not yet completed, in pop order. */
  inFlight: number[] = [];
  /** Completed with addUsed, not yet published. */
  pendingUsed: Used[] = [];
  /** Published on the used ring, not yet taken by the driver. */
  usedQ: Used[] = [];
  readonly delivered = new Set<number>();
  added = 0;
  /** Descriptors (ring slots) the added requests took, in all. */
  slotsAdded = 0;
  /** The device armed notifications and saw an empty ring: it waits for a kick. */
  devWaiting = false;
  /** Callbacks enabled (the state after construction), and how many used entries past the last one taken arm a call. */
  cbEnabled = true;
  armedThreshold = 0;
  /**
   * The driver waits for a call once more than this many entries are used
   * (null: not waiting): after enableCallbacks* returned true, or after
   * getUsed found nothing while callbacks are enabled (getUsed re-arms).
   */
  drvWaitThreshold: number | null = 0;

  constructor(cfg: Cfg) {
    this.cfg = cfg;
    this.numFree = cfg.size;
    this.freeSlots = Array.from({ length: cfg.size }, (_, i) => i);
  }

  publishStaged(): void {
    this.availQ.push(...this.staged);
    this.staged = [];
  }

  /**
   * How far the device may get before the driver waits for a call, in the
   * units the layout counts its events in: split, used buffers; packed, ring
   * slots (descriptors) of the used buffers.
   */
  usedAmount(): number {
    if (this.cfg.layout === "split") return this.usedQ.length;
    return this.usedQ.reduce((n, u) => n + this.outstanding.get(u.token)!.needed, 0);
  }
}

interface Real {
  mem: GuestMemory;
  drv: DriverRing<number>;
  dev: DeviceRing;
  chains: Map<number, DescriptorChain>;
}

type Cmd = fc.Command<Model, Real>;

/** How often the interesting situations occurred (so the test proves it exercised them). */
const stats = {
  kickChecks: 0,
  callChecks: 0,
  delayedArmed: 0,
  indirectAdds: 0,
  outOfOrder: 0,
  refused: 0,
};

const readByte = (token: number, seg: number, k: number): number =>
  (token * 31 + seg * 7 + k) & 0xff;
const writeByte = (token: number, k: number): number => (token * 17 + 0x55 + k) & 0xff;

function segmentsOf(
  slot: number,
  lens: readonly number[],
  start: number,
): { addr: number; len: number }[] {
  let off = DATA + slot * SLOT + start;
  return lens.map((len) => {
    const s = { addr: off, len };
    off += len;
    return s;
  });
}

function layoutOf(req: Pick<Req, "slot" | "readLens" | "writeLens">) {
  const readBytes = req.readLens.reduce((a, b) => a + b, 0);
  return {
    readable: segmentsOf(req.slot, req.readLens, 0),
    writable: segmentsOf(req.slot, req.writeLens, readBytes),
    writableBytes: req.writeLens.reduce((a, b) => a + b, 0),
  };
}

function checkInvariants(m: Model, r: Real): void {
  assert.equal(r.drv.broken, null);
  assert.equal(r.dev.broken, null);
  assert.equal(r.drv.numFree, m.numFree, "numFree");
  assert.equal(r.drv.numOutstanding, m.outstanding.size, "outstanding");
  assert.equal(r.dev.inFlight, m.inFlight.length, "device in flight");
}

// ---- driver commands ----

class AddCmd implements Cmd {
  constructor(
    readonly readLens: number[],
    readonly writeLens: number[],
    readonly stageOnly: boolean,
  ) {}
  check(): boolean {
    return true;
  }
  run(m: Model, r: Real): void {
    const total = this.readLens.length + this.writeLens.length;
    const slot = m.freeSlots[0] ?? SCRATCH_SLOT; // no free slot: the add must be refused
    const { readable, writable } = layoutOf({
      slot,
      readLens: this.readLens,
      writeLens: this.writeLens,
    });
    const token = m.nextToken++;
    const op = (): boolean =>
      this.stageOnly
        ? r.drv.stage(readable, writable, token)
        : r.drv.add(readable, writable, token);
    if (total === 0 || total > m.cfg.size) {
      assert.throws(op, RangeError);
      checkInvariants(m, r);
      return;
    }
    readable.forEach((s, i) =>
      r.mem.write(
        s.addr,
        Uint8Array.from({ length: s.len }, (_, k) => readByte(token, i, k)),
      ),
    );
    for (const s of writable) r.mem.fill(s.addr, s.len, 0);
    const { indirect, entriesPerChain } = m.cfg;
    const needed = indirect && total > 1 && total <= entriesPerChain ? 1 : total;
    const ok = op();
    assert.equal(
      ok,
      needed <= m.numFree,
      `add of ${total} segments (needs ${needed}, free ${m.numFree})`,
    );
    if (!ok) stats.refused++;
    if (ok && needed === 1 && total > 1) stats.indirectAdds++;
    if (ok) {
      m.freeSlots.shift();
      m.numFree -= needed;
      m.added++;
      m.slotsAdded += needed;
      m.outstanding.set(token, {
        token,
        slot,
        readLens: this.readLens,
        writeLens: this.writeLens,
        needed,
      });
      m.slotToken.set(slot, token);
      m.staged.push(token);
      if (!this.stageOnly) m.publishStaged();
    }
    checkInvariants(m, r);
  }
  toString(): string {
    return `${this.stageOnly ? "stage" : "add"}(r=[${this.readLens.join(",")}], w=[${this.writeLens.join(",")}])`;
  }
}

class PublishCmd implements Cmd {
  check(): boolean {
    return true;
  }
  run(m: Model, r: Real): void {
    r.drv.publish();
    m.publishStaged();
    checkInvariants(m, r);
  }
  toString(): string {
    return "publish";
  }
}

class KickCmd implements Cmd {
  check(): boolean {
    return true;
  }
  run(m: Model, r: Real): void {
    const kick = r.drv.kickNeeded();
    m.publishStaged();
    if (m.devWaiting && m.availQ.length > 0) stats.kickChecks++;
    if (m.devWaiting && m.availQ.length > 0)
      assert.equal(kick, true, "missed kick: the device waits and requests are available");
    if (kick) m.devWaiting = false; // the kick wakes the device
    checkInvariants(m, r);
  }
  toString(): string {
    return "kickNeeded";
  }
}

class GetUsedCmd implements Cmd {
  check(): boolean {
    return true;
  }
  run(m: Model, r: Real): void {
    const got = r.drv.getUsed();
    const exp = m.usedQ.shift();
    m.drvWaitThreshold = exp === undefined && m.cbEnabled ? m.armedThreshold : null;
    if (exp !== undefined && m.cbEnabled) m.armedThreshold = 0; // getUsed re-arms at the next entry
    if (exp === undefined) {
      assert.equal(got, null);
      checkInvariants(m, r);
      return;
    }
    assert.deepEqual(got, exp, "used buffers arrive in used-ring order with token and len intact");
    assert.equal(m.delivered.has(exp.token), false, "delivered twice");
    m.delivered.add(exp.token);
    const req = m.outstanding.get(exp.token)!;
    const { writable } = layoutOf(req);
    let k = 0;
    for (const s of writable) {
      const n = Math.min(s.len, exp.len - k);
      if (n <= 0) break;
      const b = new Uint8Array(n);
      r.mem.read(s.addr, b);
      for (let j = 0; j < n; j++)
        assert.equal(b[j], writeByte(exp.token, k + j), "payload written by the device");
      k += n;
    }
    m.outstanding.delete(exp.token);
    m.numFree += req.needed;
    m.slotToken.delete(req.slot);
    m.freeSlots.push(req.slot);
    m.freeSlots.sort((a, b) => a - b);
    checkInvariants(m, r);
  }
  toString(): string {
    return "getUsed";
  }
}

class EnableCallbacksCmd implements Cmd {
  constructor(readonly delayed: boolean) {}
  check(): boolean {
    return true;
  }
  run(m: Model, r: Real): void {
    // Split: about 3/4 of the requests outstanding; packed: of the ring slots in use (Linux's enable_cb_delayed).
    const packed = m.cfg.layout === "packed";
    const inFlight = packed ? m.cfg.size - m.numFree : m.outstanding.size;
    const t = this.delayed && m.cfg.eventIdx ? Math.floor((inFlight * 3) / 4) : 0;
    const armed = this.delayed ? r.drv.enableCallbacksDelayed() : r.drv.enableCallbacks();
    // Split re-checks against the threshold; packed re-tests the next slot only.
    const expected = packed ? m.usedQ.length === 0 : m.usedQ.length <= t;
    assert.equal(armed, expected, `enable callbacks (threshold ${t}, ${m.usedQ.length} used)`);
    m.cbEnabled = true;
    m.armedThreshold = t;
    m.drvWaitThreshold = armed ? t : null;
    if (armed && t > 0) stats.delayedArmed++;
    checkInvariants(m, r);
  }
  toString(): string {
    return this.delayed ? "enableCallbacksDelayed" : "enableCallbacks";
  }
}

class DisableCallbacksCmd implements Cmd {
  check(): boolean {
    return true;
  }
  run(m: Model, r: Real): void {
    r.drv.disableCallbacks();
    m.cbEnabled = false;
    m.drvWaitThreshold = null;
    checkInvariants(m, r);
  }
  toString(): string {
    return "disableCallbacks";
  }
}

// ---- device commands ----

class PopCmd implements Cmd {
  check(): boolean {
    return true;
  }
  run(m: Model, r: Real): void {
    const c = r.dev.popAvail();
    m.devWaiting = false;
    const token = m.availQ.shift();
    if (token === undefined) {
      assert.equal(c, null, "nothing published: staged requests stay invisible");
      checkInvariants(m, r);
      return;
    }
    assert.notEqual(c, null);
    const chain = c!;
    const slot = Math.floor((chain.segAddr[0]! - DATA) / SLOT);
    assert.equal(m.slotToken.get(slot), token, "chains pop in available-ring order");
    const req = m.outstanding.get(token)!;
    const { readable, writable } = layoutOf(req);
    const segs = [...readable, ...writable];
    assert.equal(chain.numSegs, segs.length);
    assert.equal(chain.numReadable, readable.length);
    segs.forEach((s, i) => {
      assert.equal(chain.segAddr[i], s.addr);
      assert.equal(chain.segLen[i], s.len);
    });
    const reader = chain.reader();
    readable.forEach((s, i) => {
      const b = new Uint8Array(s.len);
      assert.equal(reader.read(b), s.len);
      for (let k = 0; k < s.len; k++) assert.equal(b[k], readByte(token, i, k), "readable payload");
    });
    m.inFlight.push(token);
    r.chains.set(token, chain);
    checkInvariants(m, r);
  }
  toString(): string {
    return "popAvail";
  }
}

class AddUsedCmd implements Cmd {
  constructor(
    readonly pick: number,
    readonly percent: number,
  ) {}
  check(m: Readonly<Model>): boolean {
    return m.inFlight.length > 0;
  }
  run(m: Model, r: Real): void {
    const at = this.pick % m.inFlight.length;
    if (at !== 0) stats.outOfOrder++;
    const [token] = m.inFlight.splice(at, 1) as [number];
    const chain = r.chains.get(token)!;
    r.chains.delete(token);
    const len = Math.floor((chain.writableBytes * this.percent) / 100);
    const w = chain.writer();
    assert.equal(w.write(Uint8Array.from({ length: len }, (_, k) => writeByte(token, k))), len);
    r.dev.addUsed(chain.head, len);
    m.pendingUsed.push({ token, len });
    checkInvariants(m, r);
  }
  toString(): string {
    return `addUsed(#${this.pick}, ${this.percent}%)`;
  }
}

class PublishUsedCmd implements Cmd {
  check(): boolean {
    return true;
  }
  run(m: Model, r: Real): void {
    r.dev.publishUsed();
    m.usedQ.push(...m.pendingUsed);
    m.pendingUsed = [];
    checkInvariants(m, r);
  }
  toString(): string {
    return "publishUsed";
  }
}

class NeedsNotificationCmd implements Cmd {
  check(): boolean {
    return true;
  }
  run(m: Model, r: Real): void {
    const call = r.dev.needsNotification();
    const t = m.drvWaitThreshold;
    const used = m.usedAmount();
    if (t !== null && used > t) stats.callChecks++;
    if (t !== null && used > t)
      assert.equal(
        call,
        true,
        `missed call: the driver waits for more than ${t} used, ${used} published`,
      );
    if (call) m.drvWaitThreshold = null; // the call wakes the driver
    checkInvariants(m, r);
  }
  toString(): string {
    return "needsNotification";
  }
}

class EnableNotificationCmd implements Cmd {
  check(): boolean {
    return true;
  }
  run(m: Model, r: Real): void {
    const more = r.dev.enableNotification();
    assert.equal(more, m.availQ.length > 0, "enableNotification re-check");
    m.devWaiting = !more;
    checkInvariants(m, r);
  }
  toString(): string {
    return "enableNotification";
  }
}

class DisableNotificationCmd implements Cmd {
  check(): boolean {
    return true;
  }
  run(m: Model, r: Real): void {
    r.dev.disableNotification();
    m.devWaiting = false;
    checkInvariants(m, r);
  }
  toString(): string {
    return "disableNotification";
  }
}

const lens = fc.array(fc.integer({ min: 1, max: MAX_SEG_LEN }), { maxLength: 4 });
const commands = fc.commands<Model, Real>(
  [
    fc.tuple(lens, lens, fc.boolean()).map(([rl, wl, s]) => new AddCmd(rl, wl, s)),
    fc
      .tuple(fc.array(fc.integer({ min: 1, max: 16 }), { minLength: 1, maxLength: 2 }), lens)
      .map(([rl, wl]) => new AddCmd(rl, wl, false)),
    fc.constant(new PublishCmd()),
    fc.constant(new KickCmd()),
    fc.constant(new GetUsedCmd()),
    fc.constant(new GetUsedCmd()),
    fc.boolean().map((d) => new EnableCallbacksCmd(d)),
    fc.constant(new DisableCallbacksCmd()),
    fc.constant(new PopCmd()),
    fc.constant(new PopCmd()),
    fc.tuple(fc.nat(), fc.integer({ min: 0, max: 100 })).map(([p, pc]) => new AddUsedCmd(p, pc)),
    fc.tuple(fc.nat(), fc.integer({ min: 0, max: 100 })).map(([p, pc]) => new AddUsedCmd(p, pc)),
    fc.constant(new PublishUsedCmd()),
    fc.constant(new PublishUsedCmd()),
    fc.constant(new NeedsNotificationCmd()),
    fc.constant(new NeedsNotificationCmd()),
    fc.constant(new EnableNotificationCmd()),
    fc.constant(new DisableNotificationCmd()),
  ],
  { maxCommands: 200, size: "max" },
);

/** Configurations of `layout` rings: split sizes are powers of two, packed ones mostly not. */
const cfgArb = (layout: RingLayoutKind): fc.Arbitrary<Cfg> =>
  fc
    .record({
      size:
        layout === "split"
          ? fc.constantFrom(1, 2, 4, 8, 16)
          : fc.constantFrom(1, 2, 3, 5, 7, 12, 16),
      eventIdx: fc.boolean(),
      indirect: fc.boolean(),
      entriesPerChain: fc.integer({ min: 2, max: 16 }),
      nearWrap: fc.boolean(),
      wrapOffset: fc.integer({ min: 1, max: 40 }),
    })
    .map(({ size, eventIdx, indirect, entriesPerChain, nearWrap, wrapOffset }) => ({
      layout,
      size,
      eventIdx,
      indirect: indirect && size >= 2,
      entriesPerChain: Math.min(entriesPerChain, size),
      // A packed ring has no free-running index: it starts at slot 0, both wrap counters 1.
      initialIndex: nearWrap && layout === "split" ? 0x10000 - wrapOffset : 0,
    }));

function build(cfg: Cfg): { model: Model; real: Real } {
  const mem = GuestMemory.createShared([
    { guestPhysAddr: 0, size: DATA + (SCRATCH_SLOT + 1) * SLOT },
  ]);
  const l = placeRing(cfg.layout, cfg.size, RING_BASE);
  const features =
    featureBit(VIRTIO_F_VERSION_1) |
    (cfg.layout === "packed" ? featureBit(VIRTIO_F_RING_PACKED) : 0n) |
    (cfg.eventIdx ? featureBit(VIRTIO_RING_F_EVENT_IDX) : 0n) |
    (cfg.indirect ? featureBit(VIRTIO_RING_F_INDIRECT_DESC) : 0n);
  const drv = openDriverRing<number>(mem, features, l, {
    ...(cfg.indirect
      ? { indirectArena: { addr: ARENA, entriesPerChain: cfg.entriesPerChain } }
      : {}),
    ...(cfg.layout === "split" ? { initialIndex: cfg.initialIndex } : {}),
  });
  // Split: the device resumes at the driver's start index (used.idx read from memory).
  const resume = cfg.layout === "split" ? { base: cfg.initialIndex, usedIdxFromMemory: true } : {};
  const dev = openRing(mem, { ...l, features, ...resume });
  assert.equal(drv.layout, cfg.layout);
  return { model: new Model(cfg), real: { mem, drv, dev, chains: new Map() } };
}

/** Completes everything still outstanding and checks each request was delivered exactly once. */
function drainAll(m: Model, r: Real): void {
  new PublishCmd().run(m, r);
  while (m.availQ.length > 0) new PopCmd().run(m, r);
  while (m.inFlight.length > 0) new AddUsedCmd(0, 100).run(m, r);
  new PublishUsedCmd().run(m, r);
  while (m.usedQ.length > 0) new GetUsedCmd().run(m, r);
  assert.equal(r.drv.getUsed(), null);
  assert.equal(m.delivered.size, m.added, "every added request delivered exactly once");
  assert.equal(r.drv.numFree, m.cfg.size);
  assert.equal(r.drv.numOutstanding, 0);
}

/** True if the run took its ring past a wrap: split, the 16-bit index past 65535; packed, a whole ring of slots. */
function wrappedIn(cfg: Cfg, m: Model): boolean {
  if (cfg.layout === "packed") return m.slotsAdded >= cfg.size;
  return cfg.initialIndex !== 0 && ((cfg.initialIndex + m.added) & 0xffff) < cfg.initialIndex;
}

for (const layout of ["split", "packed"] as const) {
  test(`driver + device against a reference model (random interleavings, wrap, indirect, suppression; ${layout} rings)`, () => {
    for (const k of Object.keys(stats)) stats[k as keyof typeof stats] = 0;
    let wrapped = 0;
    fc.assert(
      fc.property(cfgArb(layout), commands, (cfg, cmds) => {
        const built = build(cfg);
        fc.modelRun(() => built, cmds);
        drainAll(built.model, built.real);
        if (wrappedIn(cfg, built.model)) wrapped++;
      }),
      { numRuns: 800 },
    );
    // Some runs must actually cross the wrap for this test to mean anything.
    assert.ok(wrapped > 0, `no run wrapped (${layout})`);
    for (const [k, v] of Object.entries(stats)) assert.ok(v > 0, `situation never exercised: ${k}`);
  });
}

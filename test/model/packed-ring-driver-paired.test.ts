/**
 * PackedDriverQueue against a minimal packed device model over one
 * GuestMemory for tens of thousands of requests (VIRTIO 1.2 §2.8, event
 * suppression §2.8.10 / §2.8.21.2 / §2.8.22), with both sides following
 * their sleep protocols:
 *
 * - the device model runs only when kicked (or while its re-check after
 *   enabling notifications finds work), completes in-flight requests out of
 *   order, some asynchronously while it sleeps, and decides each used buffer
 *   notification from the Driver Event Suppression structure (ENABLE,
 *   DISABLE, or DESC with offset and wrap counter);
 * - the driver consumes only when called (or while its re-check after
 *   `enableCallbacks` / `enableCallbacksDelayed` finds work);
 * - both suppress: EVENT_IDX on or off, indirect on or off, queue sizes that
 *   are not powers of two, requests staged in batches.
 *
 * A lost kick or call shows up as a stall: nothing can move while requests
 * are outstanding. Every request must be completed exactly once with its
 * token, length and payload; the wrap counters flip thousands of times.
 *
 * The device model trusts the driver: it is a fixture, not a device.
 *
 * @module
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { PackedDriverQueue } from "../../src/ring/packed-driver-queue.ts";
import { packedRingLayout, type PackedRingLayout } from "../../src/ring/packed-layout.ts";
import { GuestMemory } from "../../src/memory/guest-memory.ts";
import {
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_USED,
  isPackedDescAvail,
} from "../../src/spec/packed-virtqueue.ts";
import {
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  vringNeedEvent,
} from "../../src/spec/virtqueue.ts";

const RING_BASE = 0x1000;
const ARENA = 0x8000;
const DATA = 0x20000;
const SLOT = 256;
const REQUESTS = 30_000;
/** Iterations without any progress that count as a stall (each side gets many chances to act). */
const STALL_LIMIT = 2_000;

type SideState = "asleep" | "awake" | "rearm";

/** xorshift32: a small deterministic PRNG so a failure reproduces. */
function rng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 1;
  return (n) => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
}

interface Seg {
  addr: number;
  len: number;
  write: boolean;
}

interface InFlight {
  id: number;
  count: number;
  segs: Seg[];
}

/** The device's side of a packed ring, as small as the protocol allows. */
class PackedDeviceModel {
  nextAvail = 0;
  availWrap = 1;
  nextUsed = 0;
  usedWrap = 1;
  /** Slots used since the last notification decision. */
  sinceDecision = 0;
  readonly mem: GuestMemory;
  readonly l: PackedRingLayout;
  readonly eventIdx: boolean;

  constructor(mem: GuestMemory, l: PackedRingLayout, eventIdx: boolean) {
    this.mem = mem;
    this.l = l;
    this.eventIdx = eventIdx;
  }

  #desc(table: number, i: number): { addr: number; len: number; id: number; flags: number } {
    const a = table + 16 * i;
    return {
      addr: Number(this.mem.readU64(a)),
      len: this.mem.readU32(a + 8),
      id: this.mem.readU16(a + 12),
      flags: this.mem.readU16(a + 14),
    };
  }

  hasAvail(): boolean {
    const flags = this.mem.atomicLoadU16(this.l.descAddr + 16 * this.nextAvail + 14);
    return isPackedDescAvail(flags, this.availWrap);
  }

  popAvail(): InFlight | null {
    if (!this.hasAvail()) return null;
    const segs: Seg[] = [];
    for (let count = 1; count <= this.l.size; count++) {
      const d = this.#desc(this.l.descAddr, this.nextAvail);
      if (++this.nextAvail === this.l.size) {
        this.nextAvail = 0;
        this.availWrap ^= 1;
      }
      if (d.flags & VIRTQ_DESC_F_INDIRECT) {
        for (let k = 0; k < d.len / 16; k++) {
          const e = this.#desc(d.addr, k);
          segs.push({ addr: e.addr, len: e.len, write: (e.flags & VIRTQ_DESC_F_WRITE) !== 0 });
        }
      } else {
        segs.push({ addr: d.addr, len: d.len, write: (d.flags & VIRTQ_DESC_F_WRITE) !== 0 });
      }
      if (!(d.flags & VIRTQ_DESC_F_NEXT)) return { id: d.id, count, segs };
    }
    throw new Error("runaway list");
  }

  /** Writes a used descriptor (id and len, then the flags) and skips the request's slots. */
  addUsed(c: InFlight, len: number): void {
    const a = this.l.descAddr + 16 * this.nextUsed;
    this.mem.writeU32(a + 8, len);
    this.mem.writeU16(a + 12, c.id);
    const bits = this.usedWrap ? VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED : 0;
    this.mem.atomicStoreU16(a + 14, bits | (len > 0 ? VIRTQ_DESC_F_WRITE : 0));
    this.nextUsed += c.count;
    if (this.nextUsed >= this.l.size) {
      this.nextUsed -= this.l.size;
      this.usedWrap ^= 1;
    }
    this.sinceDecision += c.count;
  }

  /** Whether the driver wants a used buffer notification for the slots used since the last decision. */
  needsNotification(): boolean {
    const written = this.sinceDecision;
    this.sinceDecision = 0;
    if (written === 0) return false;
    const flags = this.mem.atomicLoadU16(this.l.driverAddr + 2) & 3;
    if (flags === RING_EVENT_FLAGS_DISABLE) return false;
    if (flags !== RING_EVENT_FLAGS_DESC || !this.eventIdx || written >= this.l.size) return true;
    const offWrap = this.mem.atomicLoadU16(this.l.driverAddr);
    const off = offWrap & 0x7fff;
    const event = offWrap >> 15 === this.usedWrap ? off : off - this.l.size;
    return vringNeedEvent(event & 0xffff, this.nextUsed, (this.nextUsed - written) & 0xffff);
  }

  disableNotification(): void {
    this.mem.atomicStoreU16(this.l.deviceAddr + 2, RING_EVENT_FLAGS_DISABLE);
  }

  /** Re-enables kicks (DESC at the next slot with EVENT_IDX); true if work slipped in meanwhile. */
  enableNotification(): boolean {
    if (this.eventIdx) {
      this.mem.atomicStoreU16(this.l.deviceAddr, this.nextAvail | (this.availWrap << 15));
      this.mem.atomicStoreU16(this.l.deviceAddr + 2, RING_EVENT_FLAGS_DESC);
    } else {
      this.mem.atomicStoreU16(this.l.deviceAddr + 2, RING_EVENT_FLAGS_ENABLE);
    }
    return this.hasAvail();
  }
}

interface PairedCfg {
  size: number;
  eventIdx: boolean;
  indirect: boolean;
  seed: number;
}

function runPaired(cfg: PairedCfg): { kicks: number; calls: number; laps: number } {
  const { size } = cfg;
  const mem = GuestMemory.createShared([{ guestPhysAddr: 0, size: DATA + size * SLOT }]);
  const l = packedRingLayout(size, RING_BASE);
  const drv = new PackedDriverQueue<number>(mem, {
    ...l,
    eventIdx: cfg.eventIdx,
    indirect: cfg.indirect,
    indirectArena: cfg.indirect ? { addr: ARENA, entriesPerChain: Math.min(size, 3) } : undefined,
  });
  const dev = new PackedDeviceModel(mem, l, cfg.eventIdx);
  const rand = rng(cfg.seed);
  const inFlight: InFlight[] = [];
  const expectLen = new Int32Array(REQUESTS).fill(-1);
  const done = new Uint8Array(REQUESTS);
  const tag = new Uint8Array(4);
  const view = new DataView(tag.buffer);
  // Buffer slots: at most `size` requests are outstanding, each owns one slot until the driver takes it back.
  const freeSlots = Array.from({ length: size }, (_, i) => i);
  const slotOf = new Int32Array(REQUESTS);
  let submitted = 0;
  let completed = 0;
  let kicks = 0;
  let calls = 0;
  let slotsUsed = 0;
  let devState: SideState = "asleep";
  let drvState: SideState = "asleep";
  let stalled = 0;

  const stage = (): boolean => {
    const token = submitted;
    const slot = freeSlots.pop();
    if (slot === undefined) return false;
    const base = DATA + slot * SLOT;
    const nWrite = rand(Math.min(size, 3)); // 0..2 writable segments after one 16-byte readable header
    const writable = Array.from({ length: nWrite }, (_, k) => ({
      addr: base + 16 + 64 * k,
      len: 4 + rand(60),
    }));
    view.setUint32(0, token, true);
    mem.write(base, tag);
    const before = drv.numFree;
    if (!drv.stage([{ addr: base, len: 16 }], writable, token)) {
      freeSlots.push(slot);
      return false;
    }
    slotsUsed += before - drv.numFree;
    slotOf[token] = slot;
    submitted++;
    return true;
  };

  const complete = (): void => {
    const c = inFlight.splice(rand(inFlight.length), 1)[0]!;
    mem.read(c.segs[0]!.addr, tag);
    const token = view.getUint32(0, true);
    const w = c.segs.filter((s) => s.write);
    const writable = w.reduce((a, s) => a + s.len, 0);
    const len = writable === 0 ? 0 : 4 + rand(writable - 3);
    if (len > 0) mem.write(w[0]!.addr, tag); // echo the token as payload
    expectLen[token] = len;
    dev.addUsed(c, len);
  };

  const call = (): void => {
    if (dev.needsNotification()) {
      calls++;
      if (drvState === "asleep") drvState = "awake";
    }
  };

  // Each side: "awake" (disable notifications, drain) → "rearm" (a later step: enable and re-check) →
  // "asleep" (armed; only the other side's notification wakes it) or back to "awake" if work slipped in.
  const deviceStep = (): boolean => {
    if (devState === "rearm") {
      devState = dev.enableNotification() ? "awake" : "asleep";
      return false;
    }
    dev.disableNotification();
    let moved = false;
    for (let budget = 1 + rand(size); budget > 0; budget--) {
      const c = dev.popAvail();
      if (c === null) {
        devState = "rearm";
        break;
      }
      inFlight.push(c);
      moved = true;
      if (rand(2) === 0) complete();
    }
    if (moved) call();
    return moved;
  };

  const driverStep = (): boolean => {
    if (drvState === "rearm") {
      const armed =
        cfg.eventIdx && rand(2) === 0 ? drv.enableCallbacksDelayed() : drv.enableCallbacks();
      drvState = armed ? "asleep" : "awake";
      return false;
    }
    drv.disableCallbacks();
    let moved = false;
    while (drv.nextUsed()) {
      const token = drv.usedToken;
      assert.equal(done[token], 0, `token ${token} completed twice`);
      done[token] = 1;
      assert.equal(drv.usedLen, expectLen[token], `token ${token} length`);
      if (drv.usedLen > 0) {
        mem.read(DATA + slotOf[token]! * SLOT + 16, tag);
        assert.equal(view.getUint32(0, true), token, `token ${token} payload`);
      }
      freeSlots.push(slotOf[token]!);
      completed++;
      moved = true;
    }
    drvState = "rearm";
    return moved;
  };

  while (completed < REQUESTS) {
    let moved = false;
    switch (rand(4)) {
      case 0: {
        // A batch of 1..4 staged requests, made available by the kick decision.
        for (let k = 1 + rand(4); k > 0 && submitted < REQUESTS && stage(); k--) moved = true;
        if (drv.kickNeeded()) {
          kicks++;
          if (devState === "asleep") devState = "awake";
        }
        break;
      }
      case 1:
        if (devState !== "asleep") moved = deviceStep();
        break;
      case 2:
        // An asynchronous completion, whether or not the device is awake.
        if (inFlight.length > 0) {
          complete();
          call();
          moved = true;
        }
        break;
      default:
        if (drvState !== "asleep") moved = driverStep();
    }
    stalled = moved ? 0 : stalled + 1;
    if (stalled > STALL_LIMIT) {
      assert.fail(
        `stall (lost notification?): submitted ${submitted}, completed ${completed}, device in flight ${inFlight.length}, ` +
          `device ${devState}, driver ${drvState}, free ${drv.numFree}`,
      );
    }
  }
  assert.equal(drv.numFree, size);
  assert.equal(drv.broken, null);
  assert.equal(
    done.every((d) => d === 1),
    true,
  );
  return { kicks, calls, laps: slotsUsed / size };
}

for (const size of [1, 5, 8, 13]) {
  for (const eventIdx of [false, true]) {
    for (const indirect of size > 1 ? [false, true] : [false]) {
      const name = `packed driver + device model, size ${size}, ${REQUESTS} requests, EVENT_IDX ${eventIdx ? "on" : "off"}, indirect ${indirect ? "on" : "off"}`;
      test(name, () => {
        const { kicks, calls, laps } = runPaired({
          size,
          eventIdx,
          indirect,
          seed: 0x9e3779b9 ^ (size * 4 + Number(eventIdx) * 2 + Number(indirect)),
        });
        assert.ok(laps > 1000, `the wrap counters flipped (${laps} laps)`);
        if (size > 1) {
          // Suppression had an effect on both sides (batches share one notification).
          assert.ok(kicks > 0 && kicks < REQUESTS, `kicks ${kicks}`);
          assert.ok(calls > 0 && calls < REQUESTS, `calls ${calls}`);
        }
      });
    }
  }
}

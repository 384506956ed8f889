/**
 * Shared fixture for the ring conformance tests (docs/conformance.md "Ring
 * violations"): a guest memory where every ring part and the data area sit
 * in their own region with holes around them (a stray access surfaces as
 * MEM_OUT_OF_RANGE instead of the documented code), interleaved with guard
 * regions full of a canary pattern (a stray write into valid memory is seen).
 *
 * @module
 */
import assert from "node:assert/strict";
import { GuestMemory } from "../../src/memory/guest-memory.ts";
import {
  ErrorCode,
  isVirtioError,
  type ErrorCodeValue,
  type VirtioError,
} from "../../src/errors.ts";
import { DeviceQueue, type DeviceQueueConfig } from "../../src/ring/device-queue.ts";
import { MockAllocator, MockSplitQueue } from "../../src/testing/index.ts";
import { availRingSize, descTableSize, usedRingSize } from "../../src/spec/virtqueue.ts";
import type { DescriptorChain } from "../../src/ring/chain.ts";

const HOLE = 0x1000;
const GUARD = 0x800;

const describe = (e: unknown): string =>
  e instanceof Error ? `${e.name}: ${e.message}` : JSON.stringify(e);

/** The canary byte at offset `i` of a guard region. */
export const canary = (i: number): number => (i * 151 + 0x5a) & 0xff;

interface Region {
  readonly name: string;
  readonly guestPhysAddr: number;
  readonly size: number;
}

/** Memory layout: guard, desc, guard, avail, guard, used, guard, data + data2 (contiguous), guard. */
export interface Layout {
  readonly regions: readonly Region[];
  readonly descAddr: number;
  readonly availAddr: number;
  readonly usedAddr: number;
  /** First data region [dataAddr, dataAddr + dataSize). */
  readonly dataAddr: number;
  readonly dataSize: number;
  /** Second data region, contiguous with the first: [dataAddr + dataSize, dataEnd). */
  readonly dataEnd: number;
  /** An address in a hole (no region). */
  readonly holeAddr: number;
}

/** Builds the layout for a queue of `size` with `dataSize` bytes in each data region. */
export function layoutFor(size: number, dataSize = 0x8000): Layout {
  const regions: Region[] = [];
  let cursor = 0;
  const place = (name: string, len: number, hole = true): number => {
    if (hole) cursor += HOLE;
    const at = cursor;
    regions.push({ name, guestPhysAddr: at, size: len });
    cursor = Math.ceil((at + len) / 8) * 8;
    return at;
  };
  place("guard0", GUARD, false);
  const descAddr = place("desc", descTableSize(size));
  place("guard1", GUARD);
  const availAddr = place("avail", availRingSize(size));
  place("guard2", GUARD);
  const usedAddr = place("used", usedRingSize(size));
  place("guard3", GUARD);
  const dataAddr = place("data", dataSize);
  place("data2", dataSize, false);
  const dataEnd = dataAddr + 2 * dataSize;
  place("guard4", GUARD);
  return {
    regions,
    descAddr,
    availAddr,
    usedAddr,
    dataAddr,
    dataSize,
    dataEnd,
    holeAddr: usedAddr + usedRingSize(size) + 64,
  };
}

/** A queue under test plus everything to check it afterwards. */
export class Fixture {
  readonly layout: Layout;
  readonly mem: GuestMemory;
  readonly drv: MockSplitQueue;
  readonly q: DeviceQueue;
  readonly brokenCalls: VirtioError[] = [];
  readonly alloc: MockAllocator;
  /** A chain popped during priming and still in flight (completed after the violation). */
  inFlight: DescriptorChain | null = null;

  constructor(size: number, config: Partial<DeviceQueueConfig> = {}, dataSize = 0x8000) {
    this.layout = layoutFor(size, dataSize);
    this.mem = GuestMemory.createShared(this.layout.regions);
    for (const r of this.layout.regions) {
      if (r.name.startsWith("guard")) {
        const bytes = new Uint8Array(r.size).map((_, i) => canary(i));
        this.mem.write(r.guestPhysAddr, bytes);
      } else if (r.name.startsWith("data")) {
        this.mem.fill(r.guestPhysAddr, r.size, 0x33);
      }
    }
    const { descAddr, availAddr, usedAddr } = this.layout;
    this.drv = new MockSplitQueue(this.mem, size, { descAddr, availAddr, usedAddr });
    this.alloc = new MockAllocator(this.layout.dataAddr, this.layout.dataAddr + dataSize);
    this.q = new DeviceQueue(this.mem, {
      ...this.drv.addresses,
      indirect: true,
      onBroken: (e) => this.brokenCalls.push(e),
      ...config,
    });
  }

  /** A readable + writable buffer pair in the data area. */
  buffers(readLen = 16, writeLen = 16): { addr: number; len: number; writable?: boolean }[] {
    return [
      { addr: this.alloc.alloc(readLen), len: readLen },
      { addr: this.alloc.alloc(writeLen), len: writeLen, writable: true },
    ];
  }

  /**
   * Completes one chain (used idx becomes 1) and leaves a second one in
   * flight, so the checks after a violation have used-ring history and a
   * pending completion. Uses descriptors 0..3 (all four when size ≥ 4).
   */
  prime(): this {
    this.drv.addChain(this.buffers(), { indices: [0, 1] });
    const a = this.q.popAvail()!;
    this.q.addUsed(a.head, 7);
    this.q.publishUsed();
    this.drv.addChain(this.buffers(), { indices: [2, 3] });
    this.inFlight = this.q.popAvail();
    assert.ok(this.inFlight, "primed chain in flight");
    return this;
  }

  /** Copies of every region's bytes. */
  snapshot(): Uint8Array[] {
    return this.layout.regions.map((r) => {
      const b = new Uint8Array(r.size);
      this.mem.read(r.guestPhysAddr, b);
      return b;
    });
  }

  /** Asserts every region equals `snap` and every guard still holds the canary. */
  assertUnchanged(snap: readonly Uint8Array[], what: string): void {
    const now = this.snapshot();
    this.layout.regions.forEach((r, k) => {
      assert.deepEqual(now[k], snap[k], `${what}: region ${r.name} changed`);
      if (r.name.startsWith("guard")) {
        for (let i = 0; i < r.size; i++)
          if (now[k]![i] !== canary(i))
            assert.fail(`${what}: canary of ${r.name} changed at +${i}`);
      }
    });
  }

  /**
   * Runs `trigger` (default `popAvail`) on a ring already holding a
   * violation and checks the whole docs/conformance.md contract: the documented
   * code (never MEM_OUT_OF_RANGE), the numbers in the message, the queue
   * broken and inert, onBroken called once, and not one byte of memory
   * changed, neither by the violation nor by any queue operation after it.
   */
  expectBroken(
    code: ErrorCodeValue,
    what: string,
    trigger: () => unknown = () => this.q.popAvail(),
  ): VirtioError {
    const snap = this.snapshot();
    const usedIdx = this.drv.usedIdx;
    let caught: unknown = null;
    try {
      trigger();
    } catch (e) {
      caught = e;
    }
    assert.ok(caught !== null, `${what}: no error`);
    assert.ok(
      !isVirtioError(caught, ErrorCode.MEM_OUT_OF_RANGE),
      `${what}: stray memory access: ${describe(caught)}`,
    );
    assert.ok(isVirtioError(caught, code), `${what}: expected ${code}, got ${describe(caught)}`);
    assert.match(caught.message, /\d/, `${what}: the message names the numbers`);
    assert.ok(Object.keys(caught.details).length > 0, `${what}: details`);
    assert.equal(this.q.broken, caught, `${what}: queue broken with this error`);
    assert.deepEqual(this.brokenCalls, [caught], `${what}: onBroken called once`);
    // Inert afterwards: nothing consumed, nothing written.
    assert.equal(this.q.popAvail(), null, `${what}: popAvail after broken`);
    assert.equal(this.q.hasAvailable(), false, `${what}: hasAvailable after broken`);
    assert.equal(this.q.enableNotification(), false, `${what}: enableNotification after broken`);
    this.q.disableNotification();
    if (this.inFlight !== null) this.q.addUsed(this.inFlight.head, this.inFlight.writableBytes);
    this.q.publishUsed();
    assert.equal(this.q.needsNotification(), false, `${what}: needsNotification after broken`);
    assert.equal(this.q.popAvail(), null, `${what}: popAvail stays null`);
    assert.equal(this.drv.usedIdx, usedIdx, `${what}: used.idx unchanged`);
    this.assertUnchanged(snap, what);
    assert.equal(this.brokenCalls.length, 1, `${what}: onBroken still once`);
    return caught;
  }

  /** Pops on a ring that must be accepted: no error, no byte of memory changed. */
  expectAccepted(what: string): DescriptorChain {
    const snap = this.snapshot();
    const c = this.q.popAvail();
    assert.ok(c !== null, `${what}: nothing popped`);
    assert.equal(this.q.broken, null, `${what}: broken`);
    assert.equal(this.brokenCalls.length, 0, `${what}: onBroken`);
    this.assertUnchanged(snap, what);
    return c;
  }
}

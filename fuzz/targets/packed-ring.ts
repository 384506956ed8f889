/**
 * Fuzz target: the device side of a packed virtqueue
 * (src/ring/packed-device-queue.ts, VIRTIO 1.2 §2.8) over guest memory the
 * input fills.
 *
 * Feeds: a 2-byte header (queue size 1..16 — not only powers of two —,
 * EVENT_IDX, INDIRECT_DESC, whether to resume, program length), a u32
 * resume state in vhost-user's SET_VRING_BASE encoding (used when resuming),
 * the program (pop, complete while writing into the buffer's writable
 * segments, publish, notification queries, enable/disable, addUsed misuse,
 * and driver writes to any ring or data byte between steps), then the bytes
 * of guest memory: the Descriptor Ring and the Driver and Device Areas laid
 * out by `packedRingLayout`, and the two contiguous 256-byte data regions
 * of the split-ring target (descriptors and indirect tables may point into
 * them), with unmapped holes around them. Missing bytes are zero.
 *
 * Failure: an exception other than a VirtioError with a documented packed
 * ring violation code (docs/conformance.md "Packed ring") or the documented
 * `addUsed` misuse refusals (a resume state that does not fit the ring is a
 * QUEUE_CONFIG refusal at construction); a violation that does not leave
 * the queue broken; `onBroken` called other than once; a buffer ID handed
 * out while it is in flight; a popped buffer with a segment outside guest
 * memory or wrong byte totals; the device changing a byte outside the
 * Descriptor Ring (where it writes used descriptors), the Device Area and
 * the writable segments of the buffers it popped; a step that does not
 * terminate (the fuzzer's timeout).
 *
 * @module
 */
import { ErrorCode, VirtioError, type ErrorCodeValue } from "../../src/errors.ts";
import type { DescriptorChain } from "../../src/ring/chain.ts";
import { PackedDeviceQueue, decodePackedVringBase } from "../../src/ring/packed-device-queue.ts";
import { packedRingLayout } from "../../src/ring/packed-layout.ts";
import { PVIRTQ_EVENT_SIZE, packedDescRingSize } from "../../src/spec/packed-virtqueue.ts";
import { FuzzFailure, allowOnly, expect } from "../lib/check.ts";
import { FuzzInput } from "../lib/input.ts";
import {
  DATA_BASE,
  DATA_SIZE,
  RING_BASE,
  checkChain,
  checkWrites,
  driverWrite,
  memoryFor,
  misuse,
  watch,
  type Watched,
} from "./split-ring.ts";

/** Codes popAvail / hasAvailable / enableNotification document for packed driver violations. */
export const PACKED_RING_VIOLATIONS: ReadonlySet<ErrorCodeValue> = new Set([
  ErrorCode.HEAD_OUT_OF_RANGE,
  ErrorCode.HEAD_IN_USE,
  ErrorCode.TOO_MANY_IN_FLIGHT,
  ErrorCode.CHAIN_TOO_LONG,
  ErrorCode.DESC_OUT_OF_BOUNDS,
  ErrorCode.DESC_NOT_AVAIL,
  ErrorCode.READ_AFTER_WRITE,
  ErrorCode.INDIRECT_TABLE,
  ErrorCode.INDIRECT_NESTED,
  ErrorCode.INDIRECT_NEXT,
]);

/** Most program steps one input runs. */
const MAX_STEPS = 512;

/** Header bits. */
export const PACKED_EVENT_IDX = 0x10;
export const PACKED_INDIRECT = 0x20;
export const PACKED_RESUME = 0x40;

/** Runs one input. */
export function fuzz(data: Uint8Array): void {
  const input = new FuzzInput(data);
  const h0 = input.u8();
  const size = 1 + (h0 & 0x0f);
  const base = input.u32();
  const program = input.sub(input.u8() * 2);
  const layout = packedRingLayout(size, RING_BASE);
  const ringLen = Math.ceil(layout.totalBytes / 8) * 8;
  const memory = memoryFor(ringLen);
  const regions: Watched[] = [
    watch(memory, RING_BASE, ringLen, input),
    watch(memory, DATA_BASE, 2 * DATA_SIZE, input),
  ];
  // The device writes used descriptors into the Descriptor Ring, and its own Device Area.
  regions[0]!.writable.fill(1, 0, packedDescRingSize(size));
  const dev = layout.deviceAddr - RING_BASE;
  regions[0]!.writable.fill(1, dev, dev + PVIRTQ_EVENT_SIZE);

  let brokenCalls = 0;
  const q = open(memory, layout, h0, base, () => brokenCalls++);
  if (q === null) return;
  const held: DescriptorChain[] = [];
  for (let step = 0; step < MAX_STEPS && !program.done; step++) {
    try {
      runStep(q, held, program, memory, regions);
    } catch (e) {
      if (e instanceof FuzzFailure) throw e;
      allowOnly(e, PACKED_RING_VIOLATIONS);
      expect(q.broken !== null, "a ring violation left the queue usable");
    }
  }
  expect(brokenCalls === (q.broken === null ? 0 : 1), `onBroken called ${brokenCalls} times`);
  for (const r of regions) checkWrites(memory, r);
}

/** The queue, or null when the resume state does not fit the ring (the documented refusal). */
function open(
  memory: ReturnType<typeof memoryFor>,
  layout: ReturnType<typeof packedRingLayout>,
  h0: number,
  base: number,
  onBroken: () => void,
): PackedDeviceQueue | null {
  try {
    return new PackedDeviceQueue(memory, {
      size: layout.size,
      descAddr: layout.descAddr,
      driverEventAddr: layout.driverAddr,
      deviceEventAddr: layout.deviceAddr,
      eventIdx: (h0 & PACKED_EVENT_IDX) !== 0,
      indirect: (h0 & PACKED_INDIRECT) !== 0,
      ...((h0 & PACKED_RESUME) !== 0 ? { resume: decodePackedVringBase(base) } : {}),
      onBroken,
    });
  } catch (e) {
    expect(
      (h0 & PACKED_RESUME) !== 0 && e instanceof VirtioError && e.code === ErrorCode.QUEUE_CONFIG,
      `the queue refused a fresh start: ${String(e)}`,
    );
    return null;
  }
}

/** One program step. */
function runStep(
  q: PackedDeviceQueue,
  held: DescriptorChain[],
  program: FuzzInput,
  memory: ReturnType<typeof memoryFor>,
  regions: readonly Watched[],
): void {
  switch (program.below(10)) {
    case 0:
    case 1: {
      const c = q.popAvail();
      if (c === null) return;
      expect(!held.some((h) => h.head === c.head), `buffer ID ${c.head} handed out twice`);
      checkChain(memory, c, regions);
      held.push(c);
      return;
    }
    case 2: {
      if (held.length === 0) return;
      const c = held.splice(program.below(held.length), 1)[0]!;
      const len = c.writableBytes === 0 ? 0 : program.u16() % (c.writableBytes + 1);
      const wrote = c.writer().fill(len, 0xa5);
      expect(wrote === len, `wrote ${wrote} of ${len} writable bytes`);
      q.addUsed(c.head, len);
      return;
    }
    case 3:
      return q.publishUsed();
    case 4:
      q.needsNotification();
      return;
    case 5:
      q.enableNotification();
      return;
    case 6:
      return q.disableNotification();
    case 7:
      q.hasAvailable();
      return;
    case 8:
      return driverWrite(memory, regions[program.below(2)]!, program);
    default:
      return misuse(q, held, program);
  }
}

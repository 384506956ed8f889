/**
 * Fuzz target: vhost-user inflight I/O tracking for a split virtqueue
 * (src/ring/inflight-split.ts), whose shared log the front-end can write at
 * any time, alone and under a DeviceQueue (src/ring/device-queue.ts, config
 * `inflight`).
 *
 * Feeds: an 8-byte header (ring size 1..16, EVENT_IDX, INDIRECT_DESC; the
 * log's desc_num, the ring size or 1..32; the queue size 1..48 and used
 * index given to the lone `recover`; the front-end's next avail index;
 * program length), the program (pop, complete while writing into the chain's
 * writable buffers, publish, front-end writes to any log byte between
 * steps), then the bytes of a log region of MAX_DESC_NUM entries whose
 * start is the log (version, desc_num, last_batch_head, used_idx, then per
 * head the inflight mark, next link and fetch counter), then guest memory as in the split-ring target: descriptor table,
 * available ring and used ring (whose idx the queue resumes from), two
 * contiguous 256-byte data regions. Missing bytes are zero.
 *
 * 1. `SplitInflightLog.recover(usedIdx, queueSize)` over a copy of the log.
 * 2. A DeviceQueue started over guest memory with that log, then the
 *    program; at its end a restarted back-end recovers the same log.
 *
 * Failure: any exception from `recover`; a recovery whose resubmit list has
 * a duplicate, a head ≥ queueSize, a head the log did not mark, more entries
 * than queueSize, or a nextAvail other than (usedIdx + resubmit.length) &
 * 0xffff (usedIdx itself, and nothing to resubmit, when discarded); from the
 * queue, an exception other than a VirtioError with a documented ring
 * violation code (docs/conformance.md "Ring violations"), which must leave
 * the queue broken; chains handed out again other than the recovered ones,
 * first and in order; a popped segment outside guest memory; the device
 * changing a guest byte outside the used ring and the writable buffers it
 * popped, or a byte around the log region; unless the front-end wrote the
 * log during the run, left marks in a log it had not initialised, or gave a
 * log smaller than the ring, a restart that does not resubmit exactly the
 * chains fetched and not published; a step that
 * does not terminate (the fuzzer's timeout).
 *
 * @module
 */
import type { DescriptorChain } from "../../src/ring/chain.ts";
import { DeviceQueue } from "../../src/ring/device-queue.ts";
import { SplitInflightLog, type InflightRecovery } from "../../src/ring/inflight-split.ts";
import { vringLayout } from "../../src/ring/layout.ts";
import {
  INFLIGHT_DESC_OFF_INFLIGHT,
  INFLIGHT_DESC_SIZE,
  INFLIGHT_OFF_DESC,
  INFLIGHT_OFF_VERSION,
  inflightQueueRegionSize,
} from "../../src/spec/vhost-user.ts";
import { VIRTQ_USED_OFF_IDX, usedRingSize } from "../../src/spec/virtqueue.ts";
import { FuzzFailure, allowOnly, expect } from "../lib/check.ts";
import { FuzzInput } from "../lib/input.ts";
import {
  DATA_BASE,
  DATA_SIZE,
  RING_BASE,
  RING_VIOLATIONS,
  checkChain,
  checkWrites,
  memoryFor,
  watch,
  type Watched,
} from "./split-ring.ts";

/** Most program steps one input runs. */
const MAX_STEPS = 512;
/** Largest desc_num the header picks other than the ring size. */
export const MAX_DESC_NUM = 32;
/** Log bytes every input holds (the region of the largest desc_num). */
const LOG_BYTES = inflightQueueRegionSize(MAX_DESC_NUM);
/** Bytes on each side of a log region that nothing may write. */
const GUARD = 64;
const GUARD_BYTE = 0x5a;

/** Runs one input. */
export function fuzz(data: Uint8Array): void {
  const input = new FuzzInput(data);
  const h0 = input.u8();
  const size = 1 << (h0 % 5);
  const eventIdx = (h0 & 0x08) !== 0;
  const indirect = (h0 & 0x10) !== 0;
  const h1 = input.u8();
  const descNum = (h1 & 0x80) === 0 ? size : 1 + (h1 % MAX_DESC_NUM);
  const recoverSize = 1 + (input.u8() % 48);
  const recoverUsedIdx = input.u16();
  const nextAvail = input.u16();
  const program = input.sub(input.u8() * 2);
  // Always the bytes of the largest log, so that a new desc_num does not move guest memory.
  const log = input.exactly(LOG_BYTES).subarray(0, inflightQueueRegionSize(descNum));

  // 1. recover alone, over a copy.
  const lone = guarded(log);
  const r = new SplitInflightLog(lone.region, descNum).recover(recoverUsedIdx, recoverSize);
  checkRecovery(r, log, recoverUsedIdx, recoverSize);
  checkGuards(lone);

  // 2. A queue over guest memory and the log.
  const layout = vringLayout(size, RING_BASE);
  const ringLen = Math.ceil(layout.totalBytes / 8) * 8;
  const memory = memoryFor(ringLen);
  const regions: Watched[] = [
    watch(memory, RING_BASE, ringLen, input),
    watch(memory, DATA_BASE, 2 * DATA_SIZE, input),
  ];
  const usedOff = layout.usedAddr - RING_BASE;
  regions[0]!.writable.fill(1, usedOff, usedOff + usedRingSize(size));
  const usedIdx = new DataView(regions[0]!.bytes.buffer).getUint16(
    usedOff + VIRTQ_USED_OFF_IDX,
    true,
  );

  const shared = guarded(log);
  const q = new DeviceQueue(memory, {
    size,
    descAddr: layout.descAddr,
    availAddr: layout.availAddr,
    usedAddr: layout.usedAddr,
    eventIdx,
    indirect,
    nextAvail,
    inflight: new SplitInflightLog(shared.region, descNum),
  });
  checkRecovery(q.recovery, log, usedIdx, size);
  const resubmit = q.recovery?.resubmit ?? [];
  expect(
    q.nextAvail === (q.recovery?.nextAvail ?? nextAvail),
    `queue resumes at ${q.nextAvail}, recovery said ${q.recovery?.nextAvail}`,
  );

  const held: DescriptorChain[] = [];
  /** Heads the log should mark, in fetch order (the model of a restart). */
  let marked: number[] = [...resubmit];
  let batch: number[] = [];
  let handedAgain = 0;
  let tampered = false;
  for (let step = 0; step < MAX_STEPS && !program.done; step++) {
    const op = program.below(6);
    try {
      switch (op) {
        case 0:
        case 1: {
          const again = handedAgain < resubmit.length;
          const c = q.popAvail();
          if (c === null) {
            expect(
              !again || q.broken !== null,
              `popAvail gave nothing with ${resubmit.length - handedAgain} to resubmit`,
            );
            break;
          }
          checkChain(memory, c, regions);
          held.push(c);
          if (again) {
            expect(
              c.head === resubmit[handedAgain],
              `resubmitted ${c.head}, not ${resubmit[handedAgain]}`,
            );
            handedAgain++;
          } else {
            marked = marked.filter((h) => h !== c.head);
            marked.push(c.head);
          }
          break;
        }
        case 2:
        case 3: {
          if (held.length === 0) break;
          const c = held.splice(program.below(held.length), 1)[0]!;
          const len = c.writableBytes === 0 ? 0 : program.u16() % (c.writableBytes + 1);
          const wrote = c.writer().fill(len, 0xa5);
          expect(wrote === len, `wrote ${wrote} of ${len} writable bytes`);
          const broken = q.broken !== null;
          q.addUsed(c.head, len);
          if (!broken) batch.push(c.head);
          break;
        }
        case 4:
          if (q.broken === null && batch.length > 0) {
            const done = new Set(batch);
            marked = marked.filter((h) => !done.has(h));
            batch = [];
          }
          q.publishUsed();
          break;
        case 5: {
          // The front-end writes the shared log while the queue runs.
          const off = program.u16() % shared.region.byteLength;
          const src = program.bytes(Math.min(1 + program.below(8), shared.region.byteLength - off));
          shared.region.set(src, off);
          tampered = true;
          break;
        }
      }
    } catch (e) {
      if (e instanceof FuzzFailure) throw e;
      allowOnly(e, RING_VIOLATIONS);
      expect(q.broken !== null, "a ring violation left the queue usable");
    }
  }
  for (const w of regions) checkWrites(memory, w);
  checkGuards(shared);

  // A restarted back-end reads the same log and the used.idx the queue published.
  const usedNow = memory.readU16(layout.usedAddr + VIRTQ_USED_OFF_IDX);
  const before = shared.region.slice();
  const restart = new SplitInflightLog(shared.region, descNum).recover(usedNow, size);
  checkRecovery(restart, before, usedNow, size);
  checkGuards(shared);
  const garbage = q.recovery === null && hasMarks(log, descNum);
  if (tampered || garbage || size > descNum) return;
  const got = restart?.resubmit ?? [];
  expect(
    got.length === marked.length && [...got].sort().join() === [...marked].sort().join(),
    `restart resubmits [${got.join()}], expected [${marked.join()}]`,
  );
}

/** A copy of `bytes` inside a larger buffer, with guard bytes on both sides. */
interface Guarded {
  readonly all: Uint8Array;
  readonly region: Uint8Array;
}

function guarded(bytes: Uint8Array): Guarded {
  const all = new Uint8Array(GUARD + bytes.byteLength + GUARD).fill(GUARD_BYTE);
  all.set(bytes, GUARD);
  return { all, region: all.subarray(GUARD, GUARD + bytes.byteLength) };
}

function checkGuards(g: Guarded): void {
  const end = GUARD + g.region.byteLength;
  for (let i = 0; i < g.all.byteLength; i++) {
    if ((i < GUARD || i >= end) && g.all[i] !== GUARD_BYTE)
      throw new FuzzFailure(`log written outside its region at ${i - GUARD}`);
  }
}

/** True if some entry of a log is marked in flight. */
function hasMarks(log: Uint8Array, descNum: number): boolean {
  for (let h = 0; h < descNum; h++)
    if (log[INFLIGHT_OFF_DESC + h * INFLIGHT_DESC_SIZE + INFLIGHT_DESC_OFF_INFLIGHT] !== 0)
      return true;
  return false;
}

/** The invariants of one `recover(usedIdx, queueSize)` over the log bytes `log` (as they were before). */
function checkRecovery(
  r: InflightRecovery | null,
  log: Uint8Array,
  usedIdx: number,
  queueSize: number,
): void {
  const dv = new DataView(log.buffer, log.byteOffset, log.byteLength);
  if (r === null) {
    expect(dv.getUint16(INFLIGHT_OFF_VERSION, true) === 0, "a log with a version taken as fresh");
    return;
  }
  const { resubmit, nextAvail, discarded } = r;
  expect(resubmit.length <= queueSize, `${resubmit.length} to resubmit, queue of ${queueSize}`);
  const seen = new Set<number>();
  for (const h of resubmit) {
    expect(Number.isInteger(h) && h >= 0 && h < queueSize, `resubmit head ${h} of ${queueSize}`);
    expect(!seen.has(h), `head ${h} resubmitted twice`);
    seen.add(h);
    const at = INFLIGHT_OFF_DESC + h * INFLIGHT_DESC_SIZE;
    expect(
      at + INFLIGHT_DESC_SIZE <= log.byteLength && log[at + INFLIGHT_DESC_OFF_INFLIGHT] !== 0,
      `head ${h} resubmitted, not marked in the log`,
    );
  }
  if (discarded !== undefined) {
    expect(resubmit.length === 0 && nextAvail === usedIdx, `discarded log: ${JSON.stringify(r)}`);
    return;
  }
  expect(
    nextAvail === ((usedIdx + resubmit.length) & 0xffff),
    `nextAvail ${nextAvail}, used ${usedIdx} + ${resubmit.length} to resubmit`,
  );
}

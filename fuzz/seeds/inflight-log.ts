/**
 * Seed inputs of the inflight-log target: a fresh (zero) log under a ring
 * with chains available, and valid logs written by SplitInflightLog's own
 * `fetched`/`used`/`published` calls with a few chains in flight and a
 * batch whose used.idx was stored but whose marks were not cleared (the
 * back-end killed in between); around index 0, across the u16 wrap, with a
 * log larger than the ring, and with front-end writes to the log; a fresh
 * log smaller than the ring.
 *
 * @module
 */
import { SplitInflightLog } from "../../src/ring/inflight-split.ts";
import { vringLayout } from "../../src/ring/layout.ts";
import { inflightQueueRegionSize } from "../../src/spec/vhost-user.ts";
import {
  VIRTQ_AVAIL_OFF_IDX,
  VIRTQ_AVAIL_OFF_RING,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_OFF_IDX,
  VIRTQ_USED_OFF_RING,
} from "../../src/spec/virtqueue.ts";
import { MAX_DESC_NUM } from "../targets/inflight-log.ts";
import { DATA_BASE, DATA_SIZE, RING_BASE } from "../targets/split-ring.ts";

/** One seed's ring and log. */
interface Seed {
  readonly size: number;
  /** Log entries (the ring size unless larger, ≤ MAX_DESC_NUM). */
  readonly descNum: number;
  /** Heads made available, in order, from avail index `base`. */
  readonly avail: readonly number[];
  /** used.idx and its elements, from used index `base`. */
  readonly used: readonly [head: number, len: number][];
  readonly base: number;
  /** The log bytes (zero: a fresh log). */
  readonly log: Uint8Array;
  readonly program: readonly number[];
}

function build(s: Seed): Uint8Array {
  const layout = vringLayout(s.size, RING_BASE);
  const ringLen = Math.ceil(layout.totalBytes / 8) * 8;
  const mem = new Uint8Array(ringLen + 2 * DATA_SIZE);
  const dv = new DataView(mem.buffer);
  // Chains of two descriptors at even heads: 16 readable bytes, then 16 writable.
  for (let i = 0; i + 1 < s.size; i += 2) {
    const at = layout.descAddr - RING_BASE + 16 * i;
    dv.setBigUint64(at, BigInt(DATA_BASE + 16 * i), true);
    dv.setUint32(at + 8, 16, true);
    dv.setUint16(at + 12, VIRTQ_DESC_F_NEXT, true);
    dv.setUint16(at + 14, i + 1, true);
    dv.setBigUint64(at + 16, BigInt(DATA_BASE + 16 * i + 16), true);
    dv.setUint32(at + 24, 16, true);
    dv.setUint16(at + 28, VIRTQ_DESC_F_WRITE, true);
  }
  const avail = layout.availAddr - RING_BASE;
  s.avail.forEach((h, k) =>
    dv.setUint16(avail + VIRTQ_AVAIL_OFF_RING + 2 * ((s.base + k) % s.size), h, true),
  );
  dv.setUint16(avail + VIRTQ_AVAIL_OFF_IDX, (s.base + s.avail.length) & 0xffff, true);
  const used = layout.usedAddr - RING_BASE;
  s.used.forEach(([h, len], k) => {
    const at = used + VIRTQ_USED_OFF_RING + 8 * ((s.base + k) % s.size);
    dv.setUint32(at, h, true);
    dv.setUint32(at + 4, len, true);
  });
  dv.setUint16(used + VIRTQ_USED_OFF_IDX, (s.base + s.used.length) & 0xffff, true);
  const h1 = s.descNum === s.size ? 0 : 0x80 | ((s.descNum - 1) % MAX_DESC_NUM);
  const usedIdx = (s.base + s.used.length) & 0xffff;
  const prog = s.program.length % 2 === 0 ? s.program : [...s.program, 4];
  return new Uint8Array([
    Math.log2(s.size),
    h1,
    s.size - 1,
    usedIdx & 0xff,
    usedIdx >> 8,
    s.base & 0xff,
    s.base >> 8,
    prog.length / 2,
    ...prog,
    ...s.log,
    ...new Uint8Array(inflightQueueRegionSize(MAX_DESC_NUM) - s.log.byteLength),
    ...mem,
  ]);
}

/**
 * A log after: heads 0, 2, 4, 6 fetched; 2 used and published; 0 and 4
 * used and used.idx stored, the log not told (a half-published batch); 6
 * still in flight.
 */
function halfPublished(descNum: number, base: number): Uint8Array {
  const region = new Uint8Array(inflightQueueRegionSize(descNum));
  const log = new SplitInflightLog(region, descNum);
  log.recover(base, 8);
  for (const h of [0, 2, 4, 6]) log.fetched(h);
  log.used(2);
  log.published((base + 1) & 0xffff);
  log.used(0);
  log.used(4);
  return region;
}

// Program steps: 0/1 pop, 2/3 complete (pick, u16 length), 4 publish, 5 log write (u16 offset, count-1, bytes).
/** Two chains to take: pop, pop, complete(first, 16), publish, pop (nothing), complete(8), publish. */
const DRAIN = [0, 0, 2, 0, 16, 0, 4, 0, 2, 8, 0, 4];
/** Three chains to take: pop, pop, complete(first, 16), publish, pop, complete(second, 8), complete(0), publish. */
const DRAIN3 = [0, 0, 2, 0, 16, 0, 4, 0, 2, 1, 8, 0, 2, 0, 0, 4];
/** The front-end clears head 6's mark, then sets last_batch_head to 6. */
const TAMPER = [5, 112, 0, 0, 0, 5, 12, 0, 1, 6, 0];

export function inflightLogSeeds(): Uint8Array[] {
  const zero = (n: number) => new Uint8Array(inflightQueueRegionSize(n));
  // Resumed: 6 again, then 0 (made available again after its used element).
  const resumed = {
    avail: [0, 2, 4, 6, 0],
    used: [
      [2, 16],
      [0, 16],
      [4, 8],
    ] as [number, number][],
  };
  return [
    build({
      size: 8,
      descNum: 8,
      avail: [0, 2, 4],
      used: [],
      base: 0,
      log: zero(8),
      program: DRAIN3,
    }),
    // A fresh log of 2 entries under a ring of 8 (heads past the log go untracked).
    build({
      size: 8,
      descNum: 2,
      avail: [0, 2, 4],
      used: [],
      base: 0,
      log: zero(2),
      program: DRAIN3,
    }),
    build({ size: 1, descNum: 1, avail: [], used: [], base: 7, log: zero(1), program: DRAIN }),
    build({ size: 8, descNum: 8, ...resumed, base: 0, log: halfPublished(8, 0), program: DRAIN }),
    build({
      size: 8,
      descNum: 8,
      ...resumed,
      base: 0xfffe,
      log: halfPublished(8, 0xfffe),
      program: [...DRAIN, ...DRAIN],
    }),
    build({
      size: 8,
      descNum: 16,
      ...resumed,
      base: 100,
      log: halfPublished(16, 100),
      program: [...TAMPER, ...DRAIN],
    }),
  ];
}

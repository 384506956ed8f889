/**
 * Seed inputs of the packed-ring target: well-formed packed rings (VIRTIO
 * 1.2 §2.8) — single-descriptor buffers, readable-then-writable lists with
 * NEXT, an indirect table in the data region, a buffer spanning both data
 * regions, a ring resumed in its second lap — for queue sizes that are and
 * are not powers of two, each with a program that pops, completes,
 * publishes and re-arms notifications.
 *
 * @module
 */
import { encodePackedVringBase } from "../../src/ring/packed-ring-state.ts";
import { packedRingLayout } from "../../src/ring/packed-layout.ts";
import { VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED } from "../../src/spec/packed-virtqueue.ts";
import {
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from "../../src/spec/virtqueue.ts";
import { PACKED_EVENT_IDX, PACKED_INDIRECT, PACKED_RESUME } from "../targets/packed-ring.ts";
import { DATA_BASE, DATA_SIZE, RING_BASE } from "../targets/split-ring.ts";

interface Desc {
  addr: number;
  len: number;
  id: number;
  flags: number;
}

function descBytes(d: readonly Desc[]): Uint8Array {
  const out = new Uint8Array(16 * d.length);
  const dv = new DataView(out.buffer);
  d.forEach((x, i) => {
    dv.setBigUint64(16 * i, BigInt(x.addr), true);
    dv.setUint32(16 * i + 8, x.len, true);
    dv.setUint16(16 * i + 12, x.id, true);
    dv.setUint16(16 * i + 14, x.flags, true);
  });
  return out;
}

/** AVAIL/USED bits that make a descriptor available for the driver's wrap counter `wrap`. */
const availBits = (wrap: number): number => (wrap === 1 ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED);

/**
 * One seed: `size` descriptors; from ring position `start` (wrap counter
 * `wrap`) on, pairs of a 16-byte readable and a 16-byte writable
 * descriptor (NEXT), then, with `indirect`, one descriptor pointing to a
 * 3-entry table in the second data region.
 */
function ring(
  size: number,
  flags: number,
  pairs: number,
  indirect: boolean,
  program: number[],
  start = 0,
  startWrap: 0 | 1 = 1,
): Uint8Array {
  const layout = packedRingLayout(size, RING_BASE);
  const ringLen = Math.ceil(layout.totalBytes / 8) * 8;
  const mem = new Uint8Array(ringLen + 2 * DATA_SIZE);
  const descs: Desc[] = Array.from({ length: size }, () => ({ addr: 0, len: 0, id: 0, flags: 0 }));
  let pos = start;
  let wrap = startWrap;
  let id = 0;
  let placed = 0;
  const put = (d: Desc): void => {
    placed++;
    descs[pos] = { ...d, flags: d.flags | availBits(wrap) };
    pos++;
    if (pos === size) {
      pos = 0;
      wrap ^= 1;
    }
  };
  const data = (off: number): number => DATA_BASE + off;
  for (let p = 0; p < pairs && 2 * (p + 1) <= size; p++, id++) {
    put({ addr: data(32 * p), len: 16, id, flags: VIRTQ_DESC_F_NEXT });
    put({ addr: data(32 * p + 16), len: 16, id, flags: VIRTQ_DESC_F_WRITE });
  }
  if (size === 1) put({ addr: data(DATA_SIZE - 8), len: 16, id: id++, flags: VIRTQ_DESC_F_WRITE });
  if (indirect && placed < size) {
    const table = descBytes([
      { addr: data(0), len: 8, id: 0, flags: 0 },
      { addr: data(8), len: 8, id: 0, flags: VIRTQ_DESC_F_WRITE },
      { addr: data(16), len: 1, id: 0, flags: VIRTQ_DESC_F_WRITE },
    ]);
    mem.set(table, ringLen + DATA_SIZE);
    put({ addr: DATA_BASE + DATA_SIZE, len: table.byteLength, id, flags: VIRTQ_DESC_F_INDIRECT });
  }
  mem.set(descBytes(descs), 0);
  const resume = encodePackedVringBase({
    availPos: start,
    availWrap: startWrap,
    usedPos: start,
    usedWrap: startWrap,
  });
  const prog = program.length % 2 === 0 ? program : [...program, 3];
  const base = [resume & 0xff, (resume >>> 8) & 0xff, (resume >>> 16) & 0xff, resume >>> 24];
  return new Uint8Array([(size - 1) | flags, ...base, prog.length / 2, ...prog, ...mem]);
}

/** pop, pop, complete(0, 16 bytes), publish, notify?, enable, pop, complete, publish, notify? */
const DRAIN = [0, 0, 2, 0, 16, 0, 3, 4, 5, 1, 2, 0, 8, 0, 3, 4];

export function packedRingSeeds(): Uint8Array[] {
  return [
    ring(1, 0, 0, false, DRAIN),
    ring(2, PACKED_EVENT_IDX, 1, false, DRAIN),
    ring(3, PACKED_INDIRECT, 1, true, DRAIN),
    ring(5, PACKED_INDIRECT | PACKED_EVENT_IDX, 2, true, [...DRAIN, 6, 7, 8, 0, 2, 1, 9, 3, 4]),
    ring(16, 0, 7, false, [...DRAIN, ...DRAIN]),
    ring(7, PACKED_RESUME | PACKED_EVENT_IDX, 2, false, [...DRAIN, ...DRAIN], 4, 0),
    ring(12, PACKED_INDIRECT | PACKED_EVENT_IDX, 4, true, [
      6,
      ...DRAIN,
      1,
      1,
      1,
      1,
      2,
      0,
      2,
      0,
      3,
      4,
      5,
    ]),
  ];
}

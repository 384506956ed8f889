/**
 * Seed inputs of the split-ring target: well-formed rings (direct chains,
 * readable then writable buffers, an indirect table in the data region,
 * a buffer that spans both data regions) for several queue sizes and
 * feature combinations, each with a program that pops, completes, publishes
 * and re-arms notifications.
 *
 * @module
 */
import { vringLayout } from "../../src/ring/layout.ts";
import {
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from "../../src/spec/virtqueue.ts";
import { DATA_BASE, DATA_SIZE, RING_BASE } from "../targets/split-ring.ts";

interface Desc {
  addr: number;
  len: number;
  flags: number;
  next: number;
}

function descBytes(d: readonly Desc[]): Uint8Array {
  const out = new Uint8Array(16 * d.length);
  const dv = new DataView(out.buffer);
  d.forEach((x, i) => {
    dv.setBigUint64(16 * i, BigInt(x.addr), true);
    dv.setUint32(16 * i + 8, x.len, true);
    dv.setUint16(16 * i + 12, x.flags, true);
    dv.setUint16(16 * i + 14, x.next, true);
  });
  return out;
}

/** One seed: `size` entries, `heads` chains published, flags of the header byte. */
function ring(
  size: number,
  flags: number,
  heads: number,
  useIndirect: boolean,
  program: number[],
): Uint8Array {
  const log2 = Math.log2(size);
  const layout = vringLayout(size, RING_BASE);
  const ringLen = Math.ceil(layout.totalBytes / 8) * 8;
  const mem = new Uint8Array(ringLen + 2 * DATA_SIZE);
  const dv = new DataView(mem.buffer);
  const descs: Desc[] = Array.from({ length: size }, () => ({
    addr: 0,
    len: 0,
    flags: 0,
    next: 0,
  }));
  const data = (off: number) => DATA_BASE + off;
  let chains = 0;
  for (let i = 0; i + 1 < size && chains < heads; i += 2, chains++) {
    descs[i] = { addr: data(16 * i), len: 16, flags: VIRTQ_DESC_F_NEXT, next: i + 1 };
    descs[i + 1] = { addr: data(16 * i + 16), len: 16, flags: VIRTQ_DESC_F_WRITE, next: 0 };
  }
  if (size === 1) {
    // One descriptor: a writable buffer across both data regions.
    descs[0] = { addr: data(DATA_SIZE - 8), len: 16, flags: VIRTQ_DESC_F_WRITE, next: 0 };
    chains = 1;
  }
  if (useIndirect && size >= 4) {
    // The last descriptor points to a 3-entry table at the start of the second data region.
    const table = descBytes([
      { addr: data(0), len: 8, flags: VIRTQ_DESC_F_NEXT, next: 1 },
      { addr: data(8), len: 8, flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, next: 2 },
      { addr: data(16), len: 1, flags: VIRTQ_DESC_F_WRITE, next: 0 },
    ]);
    mem.set(table, ringLen + DATA_SIZE);
    descs[size - 1] = {
      addr: DATA_BASE + DATA_SIZE,
      len: table.byteLength,
      flags: VIRTQ_DESC_F_INDIRECT,
      next: 0,
    };
  }
  mem.set(descBytes(descs), 0);
  const avail = layout.availAddr - RING_BASE;
  const ids: number[] = [];
  for (let c = 0; c < chains; c++) ids.push(size === 1 ? 0 : 2 * c);
  if (useIndirect && size >= 4) ids.push(size - 1);
  ids.forEach((h, k) => dv.setUint16(avail + 4 + 2 * k, h, true));
  dv.setUint16(avail + 2, ids.length, true);
  const prog = program.length % 2 === 0 ? program : [...program, 3];
  return new Uint8Array([log2 | flags, 0, 0, prog.length / 2, ...prog, ...mem]);
}

const EVENT_IDX = 0x08;
const INDIRECT = 0x10;
const USED_FROM_MEMORY = 0x20;
/** pop, pop, complete(0, 16 bytes), publish, notify?, enable, pop, complete, publish, notify? */
const DRAIN = [0, 0, 2, 0, 16, 0, 3, 4, 5, 1, 2, 0, 8, 0, 3, 4];

export function splitRingSeeds(): Uint8Array[] {
  return [
    ring(1, 0, 1, false, DRAIN),
    ring(2, EVENT_IDX, 1, false, DRAIN),
    ring(4, INDIRECT, 1, true, DRAIN),
    ring(8, INDIRECT | EVENT_IDX, 3, true, [...DRAIN, 6, 7, 8, 0, 2, 1, 9, 3, 4]),
    ring(16, USED_FROM_MEMORY, 7, false, [...DRAIN, ...DRAIN]),
    ring(16, INDIRECT | EVENT_IDX, 7, true, [6, ...DRAIN, 1, 1, 1, 1, 2, 0, 2, 0, 3, 4, 5]),
  ];
}

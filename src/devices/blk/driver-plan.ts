/**
 * How the virtio-blk driver cuts a caller's transfer into requests the
 * device accepts. VIRTIO 1.2 §5.2.4 (`size_max`: largest segment, `seg_max`:
 * most segments per request, `max_discard_sectors` / `max_discard_seg`,
 * `max_write_zeroes_sectors` / `max_write_zeroes_seg`), §5.2.6.1 ("The
 * length of data MUST be a multiple of 512 bytes for VIRTIO_BLK_T_IN and
 * VIRTIO_BLK_T_OUT requests"; segment counts MUST NOT exceed the limits).
 *
 * Pure functions over cursors: they write the next request's pieces into
 * caller-owned scratch arrays and advance the cursor, allocating nothing.
 * Every loop is bounded by the piece limit.
 *
 * @module
 */

/** A buffer in guest memory (the same shape as the ring's `Segment`). */
export interface BlkSegment {
  readonly addr: number;
  readonly len: number;
}

/** A byte range on the disk. */
export interface BlkRange {
  /** Byte offset (a multiple of the logical block size). */
  readonly offset: number;
  /** Bytes (a multiple of the logical block size). */
  readonly length: number;
}

/** Position in a list of segments or ranges: item index and bytes already taken from it. */
export interface PlanCursor {
  index: number;
  off: number;
}

/** Limits of one IN/OUT request's data part. */
export interface DataLimits {
  /** Most data segments. */
  readonly maxSegs: number;
  /** Largest segment in bytes. */
  readonly sizeMax: number;
  /** Most data bytes (a multiple of blockSize). */
  readonly maxBytes: number;
  readonly blockSize: number;
}

/** Output of a planning step: pieces as parallel arrays (reused between calls). */
export interface PieceScratch {
  /** Guest address (data) or disk byte offset (ranges) of each piece. */
  readonly a: number[];
  /** Length in bytes of each piece. */
  readonly len: number[];
  /** Item index and offset of each piece (internal bookkeeping for trimming). */
  readonly idx: number[];
  readonly off: number[];
  count: number;
}

/** Scratch for up to `n` pieces. */
export function pieceScratch(n: number): PieceScratch {
  return {
    a: new Array<number>(n).fill(0),
    len: new Array<number>(n).fill(0),
    idx: new Array<number>(n).fill(0),
    off: new Array<number>(n).fill(0),
    count: 0,
  };
}

/**
 * Takes the next request's data pieces from `segs` at `cur`: at most
 * `maxSegs` pieces of at most `sizeMax` bytes, at most `maxBytes` in all,
 * cut back to a multiple of `blockSize` (a piece may be split anywhere).
 * Advances `cur` past what was taken.
 *
 * @returns the data bytes of the request; 0 if nothing is left or if the
 *   next `maxSegs` pieces hold less than one block (too fragmented: `cur`
 *   is then unchanged).
 */
export function nextDataPieces(
  segs: readonly BlkSegment[],
  cur: PlanCursor,
  lim: DataLimits,
  out: PieceScratch,
): number {
  let index = cur.index;
  let off = cur.off;
  let bytes = 0;
  let n = 0;
  // Bounded by maxSegs pieces.
  while (n < lim.maxSegs && bytes < lim.maxBytes && index < segs.length) {
    const s = segs[index]!;
    const take = Math.min(s.len - off, lim.sizeMax, lim.maxBytes - bytes);
    out.a[n] = s.addr + off;
    out.len[n] = take;
    out.idx[n] = index;
    out.off[n] = off;
    n++;
    bytes += take;
    off += take;
    if (off === s.len) {
      index++;
      off = 0;
    }
  }
  out.count = n;
  bytes = cutToBlock(out, bytes, lim.blockSize);
  if (bytes === 0) return 0;
  const last = out.count - 1;
  const lastIdx = out.idx[last]!;
  const lastEnd = out.off[last]! + out.len[last]!;
  if (lastEnd === segs[lastIdx]!.len) {
    cur.index = lastIdx + 1;
    cur.off = 0;
  } else {
    cur.index = lastIdx;
    cur.off = lastEnd;
  }
  return bytes;
}

/**
 * Cuts the tail of the `out.count` pieces holding `bytes` back to a multiple
 * of `blockSize` (dropping or shortening pieces); returns the bytes left.
 */
function cutToBlock(out: PieceScratch, bytes: number, blockSize: number): number {
  let n = out.count;
  let excess = bytes % blockSize;
  // Bounded by n.
  while (excess > 0 && n > 0) {
    const last = out.len[n - 1]!;
    if (last > excess) {
      out.len[n - 1] = last - excess;
      bytes -= excess;
      excess = 0;
    } else {
      n--;
      bytes -= last;
      excess -= last;
    }
  }
  out.count = n;
  return bytes;
}

/** Limits of one DISCARD / WRITE_ZEROES request. */
export interface RangeLimits {
  /** Most segments per request. */
  readonly maxSeg: number;
  /** Largest segment in bytes (a multiple of `align`). */
  readonly maxBytes: number;
  /** Segment start and length alignment in bytes. */
  readonly align: number;
}

/** The part of `r` aligned to `align`: start rounded up, end rounded down (may be empty). */
export function alignedRange(r: BlkRange, align: number): { start: number; end: number } {
  const start = Math.ceil(r.offset / align) * align;
  const end = Math.floor((r.offset + r.length) / align) * align;
  return { start, end: Math.max(start, end) };
}

/**
 * Takes the next request's segments from `ranges` at `cur`: at most
 * `maxSeg` pieces of at most `maxBytes`, each range first cut to its part
 * aligned to `align` (ranges with no aligned part are skipped). Pieces go to
 * `out.a` (disk byte offset) and `out.len`.
 *
 * @returns the number of pieces (0 when no range has anything left).
 */
export function nextRangePieces(
  ranges: readonly BlkRange[],
  cur: PlanCursor,
  lim: RangeLimits,
  out: PieceScratch,
): number {
  let n = 0;
  // Bounded by maxSeg pieces plus one skip per range.
  while (n < lim.maxSeg && cur.index < ranges.length) {
    const { start, end } = alignedRange(ranges[cur.index]!, lim.align);
    const pos = start + cur.off;
    if (pos >= end) {
      cur.index++;
      cur.off = 0;
      continue;
    }
    const take = Math.min(end - pos, lim.maxBytes);
    out.a[n] = pos;
    out.len[n] = take;
    n++;
    cur.off += take;
  }
  out.count = n;
  return n;
}

/**
 * Moves `cur` past the ranges with nothing aligned to `align` left; true if
 * some part of a range remains.
 */
export function rangesLeft(ranges: readonly BlkRange[], cur: PlanCursor, align: number): boolean {
  // Bounded by the number of ranges.
  while (cur.index < ranges.length) {
    const { start, end } = alignedRange(ranges[cur.index]!, align);
    if (start + cur.off < end) return true;
    cur.index++;
    cur.off = 0;
  }
  return false;
}

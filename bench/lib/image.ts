/**
 * The disk image every backend of a benchmark serves: a raw file, fully
 * allocated (every block written with data, no holes and no unwritten
 * extents), flushed to disk, then kept warm in the host page cache.
 *
 * Page-cache policy of the benchmarks: the cache is **not dropped**. Before
 * every run the image is flushed (`fdatasync`: no dirty or in-writeback
 * pages left from an earlier run) and read once from start to end, so every
 * backend starts with the whole image in the host page cache and the runs
 * compare the backends' data paths rather than the host disk.
 *
 * @module
 */
import { closeSync, fdatasyncSync, fstatSync, openSync, readSync, writeSync } from "node:fs";

const CHUNK = 1 << 20;
const BLOCK = 4096;

/**
 * Creates (or overwrites) `path` as a fully written raw image of `bytes`
 * (a multiple of 1 MiB): each 4 KiB block holds its own block number and a
 * non-zero pattern. Flushed to disk before returning.
 */
export function createImage(path: string, bytes: number): void {
  if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes % CHUNK !== 0)
    throw new RangeError(`image size must be a positive multiple of 1 MiB, got ${bytes}`);
  const buf = Buffer.alloc(CHUNK, 0xa5);
  const fd = openSync(path, "w");
  try {
    for (let off = 0; off < bytes; off += CHUNK) {
      for (let b = 0; b < CHUNK; b += BLOCK) buf.writeUInt32LE((off + b) / BLOCK, b);
      let done = 0;
      while (done < CHUNK) done += writeSync(fd, buf, done, CHUNK - done, off + done);
    }
    fdatasyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Flushes the image (no dirty pages left from an earlier run) and reads it
 * once from start to end so that it sits in the host page cache. Returns
 * its size.
 */
export function flushAndWarm(path: string): number {
  const fd = openSync(path, "r+");
  try {
    fdatasyncSync(fd);
    const size = fstatSync(fd).size;
    const buf = Buffer.allocUnsafe(CHUNK);
    for (let off = 0; off < size;) {
      const n = readSync(fd, buf, 0, Math.min(CHUNK, size - off), off);
      if (n === 0) break;
      off += n;
    }
    return size;
  } finally {
    closeSync(fd);
  }
}

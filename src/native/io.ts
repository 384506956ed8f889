/**
 * Positioned vectored I/O that never blocks the calling thread:
 * `preadv2`/`pwritev2` with `RWF_NOWAIT` (Linux ≥ 4.14 for reads). A transfer
 * the page cache can serve completes inline; one that would wait for the disk
 * returns null, and the caller falls back to Node's asynchronous
 * `fs.readv`/`fs.writev` on the thread pool. The virtio-blk file backing store
 * uses it on its dataplane thread so that cached reads cost no thread-pool
 * round trip (VIRTIO 1.2 §5.2.6: the request semantics are unchanged).
 *
 * @module
 */
import { native } from "./addon.ts";

/** The most views one call takes (Linux IOV_MAX). */
export const IO_NOWAIT_MAX_VIEWS = 1024;

/**
 * Reads into `buffers` from file offset `position` without blocking. Returns
 * the bytes read (possibly fewer than asked: the rest is not cached, or end of
 * file), or null if nothing could be read without waiting.
 *
 * @throws {NativeError} for an I/O error, or `EOPNOTSUPP` where the file
 *   system cannot do non-blocking reads.
 */
export function preadvNowait(
  fd: number,
  buffers: readonly Uint8Array[],
  position: number,
): number | null {
  return native.ioNowait(fd, buffers, position, false);
}

/**
 * Writes `buffers` at file offset `position` without blocking (into the page
 * cache). Returns the bytes written, or null if the write would block.
 *
 * @throws {NativeError} for an I/O error, or `EOPNOTSUPP` where the file
 *   system cannot do non-blocking buffered writes (older kernels).
 */
export function pwritevNowait(
  fd: number,
  buffers: readonly Uint8Array[],
  position: number,
): number | null {
  return native.ioNowait(fd, buffers, position, true);
}

/**
 * FileBacking's transfer loop: positioned, vectored I/O between guest
 * memory views and an image file, continuing after short transfers. Node-only
 * (fs). VIRTIO 1.2 §5.2.6 (IN reads the disk into the request's writable
 * buffers, OUT writes its readable buffers to the disk).
 *
 * - preadv/pwritev straight into / out of the views the request gives; each
 *   call covers at most {@link IOV_MAX} views and `maxIoBytes` bytes.
 * - Each call is first tried without blocking (see file-nowait.ts) and goes
 *   to the asynchronous path (the thread pool or io_uring, file-uring.ts)
 *   only when that would block.
 * - A short transfer continues where it stopped (every loop makes progress or
 *   ends). A read that meets end-of-file (the image shrank behind our back)
 *   returns zeroes for the missing part, as QEMU's raw driver does; a write
 *   that makes no progress fails.
 *
 * @module
 */
import type { FileHandle } from "node:fs/promises";
import { iovLength } from "./backing.ts";
import type { NowaitPath } from "./file-nowait.ts";
import type { VectoredIo } from "./file-uring.ts";

/** Most views passed to one preadv/pwritev (Linux IOV_MAX). */
export const IOV_MAX = 1024;

/** Outcome of a first non-blocking attempt made before the loop: bytes moved, or null (would block). */
export type Attempt = number | null;
/** No first attempt was made. */
export const NOT_TRIED = -2;

/**
 * Fills `batch` with the views of one call: from view `idx` (less its first
 * `skip` bytes) on, at most IOV_MAX views and `maxIo` bytes.
 */
function nextBatch(
  iov: readonly Uint8Array[],
  idx: number,
  skip: number,
  maxIo: number,
  batch: Uint8Array[],
): void {
  batch.length = 0;
  let bytes = 0;
  for (let i = idx; i < iov.length && batch.length < IOV_MAX && bytes < maxIo; i++) {
    let v = i === idx && skip > 0 ? iov[i]!.subarray(skip) : iov[i]!;
    if (bytes + v.length > maxIo) v = v.subarray(0, maxIo - bytes);
    batch.push(v);
    bytes += v.length;
  }
}

/** Zero-fills iov from view `idx`, byte `skip` on. */
function zeroFrom(iov: readonly Uint8Array[], idx: number, skip: number): void {
  for (let i = idx; i < iov.length; i++) iov[i]!.fill(0, i === idx ? skip : 0);
}

/** Moves bytes between views and one open image file. */
export class FileTransfer {
  readonly #fh: FileHandle;
  readonly #maxIo: number;
  readonly #nowait: NowaitPath;
  readonly #io: VectoredIo;

  constructor(fh: FileHandle, maxIo: number, nowait: NowaitPath, io: VectoredIo) {
    this.#fh = fh;
    this.#maxIo = maxIo;
    this.#nowait = nowait;
    this.#io = io;
  }

  /**
   * Moves all bytes of `iov` from/to the file at `offset`, in calls of at most
   * IOV_MAX views and maxIoBytes bytes, continuing after short transfers.
   * `first` is the outcome of the first non-blocking attempt when the fast
   * path already made it (same views, same position).
   */
  async run(
    offset: number,
    iov: readonly Uint8Array[],
    write: boolean,
    first: Attempt = NOT_TRIED,
  ): Promise<void> {
    const total = iovLength(iov);
    let done = 0;
    let idx = 0; // first view not fully transferred
    let skip = 0; // bytes of iov[idx] already transferred
    const batch: Uint8Array[] = [];
    while (done < total) {
      nextBatch(iov, idx, skip, this.#maxIo, batch);
      const fd = this.#fh.fd;
      let n = first === NOT_TRIED ? this.#nowait.attempt(fd, batch, offset + done, write) : first;
      first = NOT_TRIED;
      if (n === null) n = await this.#io.run(fd, batch, offset + done, write);
      if (n === 0) {
        if (write) throw new Error(`write at ${offset + done} made no progress`);
        zeroFrom(iov, idx, skip); // end of file: the rest reads as zeroes
        return;
      }
      done += n;
      // Advance (idx, skip) by n bytes; bounded by the views in this batch.
      let left = n;
      while (left > 0) {
        const rest = iov[idx]!.length - skip;
        if (left < rest) {
          skip += left;
          left = 0;
        } else {
          left -= rest;
          idx++;
          skip = 0;
        }
      }
      while (idx < iov.length && iov[idx]!.length === 0) idx++;
    }
  }

  /** Writes `length` zero bytes at `offset` from `zeroes` (zero-filled), one chunk of its size at a time. */
  async writeZeroes(zeroes: Uint8Array, offset: number, length: number): Promise<void> {
    for (let done = 0; done < length;) {
      const n = Math.min(zeroes.length, length - done);
      await this.run(offset + done, [zeroes.subarray(0, n)], true);
      done += n;
    }
  }
}

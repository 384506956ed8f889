/**
 * FileBacking's non-blocking fast path: preadv2/pwritev2 with RWF_NOWAIT
 * (native addon), so that page-cache hits complete inline instead of
 * through the thread pool. Node-only. VIRTIO 1.2 §5.2.6 (IN and OUT
 * requests; the fast path changes when they complete, never what they do).
 *
 * - A valid request that fits one system call gets exactly one non-blocking
 *   attempt, synchronously inside readv/writev; when it moves every byte the
 *   request is complete ({@link DONE}: no async frames, no batch array).
 *   Otherwise the transfer loop goes on from that attempt's result, so a
 *   partial attempt is continued, not redone.
 * - Would block, end of file and errors fall back to the thread pool (whose
 *   call reports errors properly). A direction the file system refuses
 *   (EOPNOTSUPP, EINVAL, ENOSYS) is not tried again.
 * - Not used with O_DIRECT; writes are never tried on a read-only image.
 *
 * @module
 */
import { iovLength } from "./backing.ts";
import { IOV_MAX, NOT_TRIED, type Attempt } from "./file-transfer.ts";

/** Non-blocking vectored I/O: bytes transferred, or null if it would block. */
export interface NowaitIo {
  readonly read: (fd: number, iov: readonly Uint8Array[], position: number) => number | null;
  readonly write: (fd: number, iov: readonly Uint8Array[], position: number) => number | null;
}

/** The fast path moved every byte: the request is complete. */
export const DONE = -1;

let nativeNowait: Promise<NowaitIo | null> | undefined;

/** The native RWF_NOWAIT I/O, or null when the addon is not built (imported on first use). */
export function loadNativeNowait(): Promise<NowaitIo | null> {
  nativeNowait ??= import("../../native/index.ts").then(
    (m) => (m.nativeAvailable() ? { read: m.preadvNowait, write: m.pwritevNowait } : null),
    () => null,
  );
  return nativeNowait;
}

/** Non-blocking attempts for one image file (see the module header). */
export class NowaitPath {
  /** RWF_NOWAIT reads / writes; null once the file system refused them (or never). */
  #read: NowaitIo["read"] | null;
  #write: NowaitIo["write"] | null;
  readonly #maxIo: number;

  constructor(io: NowaitIo | null, readOnly: boolean, maxIo: number) {
    this.#read = io === null ? null : io.read;
    this.#write = io === null || readOnly ? null : io.write;
    this.#maxIo = maxIo;
  }

  /**
   * The fast path of a request on a file of `size` bytes: its non-blocking
   * attempt, made here, synchronously — the very attempt the transfer loop
   * would start with. {@link DONE} when it moved every byte; otherwise its
   * result for the loop to go on from; NOT_TRIED when the request is not
   * eligible (invalid, too large, no non-blocking I/O), leaving validation
   * and errors to the usual path.
   */
  first(
    fd: number,
    offset: number,
    iov: readonly Uint8Array[],
    write: boolean,
    size: number,
  ): Attempt {
    if ((write ? this.#write : this.#read) === null || iov.length > IOV_MAX) return NOT_TRIED;
    const total = iovLength(iov);
    if (total === 0 || total > this.#maxIo) return NOT_TRIED;
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + total > size) return NOT_TRIED;
    const n = this.attempt(fd, iov as Uint8Array[], offset, write);
    return n === total ? DONE : n;
  }

  /**
   * One non-blocking attempt: the bytes moved (> 0), or null to go through
   * the thread pool (would block, end of file, not supported, or an error the
   * asynchronous call will report properly).
   */
  attempt(fd: number, iov: Uint8Array[], position: number, write: boolean): number | null {
    const fn = write ? this.#write : this.#read;
    if (fn === null) return null;
    try {
      const n = fn(fd, iov, position);
      return n !== null && n > 0 ? n : null;
    } catch (e) {
      const { errnoCode: code } = (e ?? {}) as { errnoCode?: string };
      if (code === "EOPNOTSUPP" || code === "EINVAL" || code === "ENOSYS") {
        if (write) this.#write = null;
        else this.#read = null;
      }
      return null;
    }
  }
}

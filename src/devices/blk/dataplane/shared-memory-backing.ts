/**
 * A disk held in a SharedArrayBuffer, usable from several dataplane workers
 * at once (each wraps the same buffer; nothing is copied). Portable: for
 * tests and for emulators in a browser. VIRTIO 1.2 §5.2.6 (what each request
 * does to the disk), as {@link MemoryBacking} but shared.
 *
 * Concurrent requests from different queues to overlapping ranges land in an
 * unspecified order, as on a real disk. The size is fixed (no resize).
 *
 * @module
 */
import { type BlkBacking, checkBackingRange, iovLength } from "../backing.ts";

/** Options of {@link SharedMemoryBacking}. */
export interface SharedMemoryBackingOptions {
  /** Refuse every write (default false). */
  readonly readOnly?: boolean;
}

/**
 * A {@link BlkBacking} over a SharedArrayBuffer. Completions resolve
 * asynchronously, in submission order.
 *
 * @example
 * ```ts
 * const disk = new SharedArrayBuffer(64 << 20);
 * const backing = new SharedMemoryBacking(disk); // in each worker, same buffer
 * ```
 */
export class SharedMemoryBacking implements BlkBacking {
  readonly readOnly: boolean;
  readonly #data: Uint8Array;
  #closed = false;

  /** @throws {RangeError} unless the buffer's size is a multiple of 512. */
  constructor(buffer: SharedArrayBuffer, options: SharedMemoryBackingOptions = {}) {
    if (!(buffer instanceof SharedArrayBuffer))
      throw new TypeError("SharedMemoryBacking needs a SharedArrayBuffer");
    if (buffer.byteLength % 512 !== 0)
      throw new RangeError(`disk size must be a multiple of 512, got ${buffer.byteLength}`);
    this.#data = new Uint8Array(buffer);
    this.readOnly = options.readOnly ?? false;
  }

  get size(): number {
    return this.#data.length;
  }

  #check(offset: number, length: number, write: boolean): void {
    if (this.#closed) throw new Error("shared memory disk is closed");
    if (write && this.readOnly) throw new Error("shared memory disk is read-only");
    checkBackingRange(offset, length, this.#data.length);
  }

  readv(offset: number, iov: readonly Uint8Array[]): Promise<void> {
    return settle(() => {
      this.#check(offset, iovLength(iov), false);
      let pos = offset;
      for (const v of iov) {
        v.set(this.#data.subarray(pos, pos + v.length));
        pos += v.length;
      }
    });
  }

  writev(offset: number, iov: readonly Uint8Array[]): Promise<void> {
    return settle(() => {
      this.#check(offset, iovLength(iov), true);
      let pos = offset;
      for (const v of iov) {
        this.#data.set(v, pos);
        pos += v.length;
      }
    });
  }

  flush(): Promise<void> {
    return this.#closed
      ? Promise.reject(new Error("shared memory disk is closed"))
      : Promise.resolve();
  }

  discard(offset: number, length: number): Promise<void> {
    return this.writeZeroes(offset, length, true);
  }

  writeZeroes(offset: number, length: number, _unmap: boolean): Promise<void> {
    return settle(() => {
      this.#check(offset, length, true);
      this.#data.fill(0, offset, offset + length);
    });
  }

  close(): Promise<void> {
    this.#closed = true;
    return Promise.resolve();
  }
}

/** Runs `fn` now; its outcome as a settled promise. */
function settle(fn: () => void): Promise<void> {
  try {
    fn();
    return Promise.resolve();
  } catch (e) {
    return Promise.reject(e instanceof Error ? e : new Error(String(e)));
  }
}

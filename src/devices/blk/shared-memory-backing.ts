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
import { MemoryBacking } from "./backing.ts";

/** Options of {@link SharedMemoryBacking}. */
export interface SharedMemoryBackingOptions {
  /** Refuse every write (default false). */
  readonly readOnly?: boolean;
}

/**
 * A {@link MemoryBacking} used in place over a SharedArrayBuffer. Completions
 * resolve asynchronously, in submission order; the size is fixed.
 *
 * @example
 * ```ts
 * const disk = new SharedArrayBuffer(64 << 20);
 * const backing = new SharedMemoryBacking(disk); // in each worker, same buffer
 * ```
 */
export class SharedMemoryBacking extends MemoryBacking {
  /** @throws {RangeError} unless the buffer's size is a multiple of 512. */
  constructor(buffer: SharedArrayBuffer, options: SharedMemoryBackingOptions = {}) {
    if (!(buffer instanceof SharedArrayBuffer))
      throw new TypeError("SharedMemoryBacking needs a SharedArrayBuffer");
    if (buffer.byteLength % 512 !== 0)
      throw new RangeError(`disk size must be a multiple of 512, got ${buffer.byteLength}`);
    super(new Uint8Array(buffer), { readOnly: options.readOnly ?? false, inPlace: true });
  }
}

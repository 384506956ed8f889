/**
 * Guest addresses for test buffers: a bump allocator over an area of guest
 * memory, for building rings and requests with the mock driver (VIRTIO 1.2
 * §2.7: the buffers a split ring's descriptors point to).
 *
 * @module
 */

/**
 * A bump allocator for test buffers in [start, end): hands out aligned,
 * non-overlapping guest addresses.
 */
export class MockAllocator {
  #next: number;
  readonly #end: number;

  constructor(start: number, end: number) {
    this.#next = start;
    this.#end = end;
  }

  /**
   * Returns the address of `len` fresh bytes aligned to `align` (default 16).
   *
   * @throws {RangeError} when the area is exhausted.
   */
  alloc(len: number, align = 16): number {
    const addr = Math.ceil(this.#next / align) * align;
    if (addr + len > this.#end)
      throw new RangeError(`mock allocator exhausted: ${len} bytes at 0x${addr.toString(16)}`);
    this.#next = addr + Math.max(len, 1);
    return addr;
  }
}

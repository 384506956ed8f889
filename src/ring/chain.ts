/**
 * A popped descriptor chain and byte cursors over it. VIRTIO 1.2 §2.7.5
 * (descriptor table), §2.7.4.2 ("The driver MUST place any device-writable
 * descriptor elements after any device-readable descriptor elements").
 *
 * The device-side queue fills a {@link DescriptorChain} with *validated*
 * segments: each is a guest-physical range already checked to lie inside
 * guest memory, readable segments first, then writable ones. The chain never
 * re-reads the descriptor table (no TOCTOU). Chain objects are owned by the
 * queue and reused once the chain's head has been completed with `addUsed`.
 *
 * @module
 */
import type { GuestMemory } from "../memory/guest-memory.ts";

/** A validated descriptor chain as the device sees it. */
export class DescriptorChain {
  /** Head descriptor index: the `id` that goes into the used ring. */
  head = 0;
  /** Descriptors walked for this chain (direct and indirect entries together). */
  descCount = 0;
  /** Guest-physical address of each segment. */
  readonly segAddr: number[] = [];
  /** Length of each segment in bytes. */
  readonly segLen: number[] = [];
  /** Number of segments (readable first). */
  numSegs = 0;
  /** Number of device-readable segments at the start. */
  numReadable = 0;
  /** Total bytes of the device-readable part. */
  readableBytes = 0;
  /** Total bytes of the device-writable part. */
  writableBytes = 0;
  readonly memory: GuestMemory;

  constructor(memory: GuestMemory) {
    this.memory = memory;
  }

  /** @internal used by the queue while walking. */
  reset(head: number): void {
    this.head = head;
    this.descCount = 0;
    this.numSegs = 0;
    this.numReadable = 0;
    this.readableBytes = 0;
    this.writableBytes = 0;
  }

  /** @internal appends a validated segment. Zero-length segments are dropped. */
  pushSegment(addr: number, len: number, writable: boolean): void {
    if (len === 0) return;
    const i = this.numSegs++;
    this.segAddr[i] = addr;
    this.segLen[i] = len;
    if (writable) this.writableBytes += len;
    else {
      this.numReadable = this.numSegs;
      this.readableBytes += len;
    }
  }

  /** A cursor over the device-readable part. */
  reader(): ChainReader {
    return new ChainReader(this, 0, this.numReadable);
  }

  /** A cursor over the device-writable part. */
  writer(): ChainWriter {
    return new ChainWriter(this, this.numReadable, this.numSegs);
  }
}

/** Shared cursor logic over segments [first, end) of a chain. */
abstract class ChainCursor {
  protected readonly chain: DescriptorChain;
  protected seg: number;
  protected segOff = 0;
  protected readonly end: number;
  /** Bytes consumed so far. */
  position = 0;
  /** Total bytes this cursor covers. */
  readonly length: number;

  constructor(chain: DescriptorChain, first: number, end: number) {
    this.chain = chain;
    this.seg = first;
    this.end = end;
    let n = 0;
    for (let i = first; i < end; i++) n += chain.segLen[i]!;
    this.length = n;
  }

  /** Bytes left. */
  get remaining(): number {
    return this.length - this.position;
  }

  /**
   * Walks the next `n` bytes (clamped to what is left), calling
   * `fn(addr, len, done)` per contiguous piece; returns the bytes walked.
   */
  protected advance(
    n: number,
    fn: ((addr: number, len: number, done: number) => void) | null,
  ): number {
    const want = Math.min(n, this.remaining);
    let done = 0;
    const { segAddr, segLen } = this.chain;
    while (done < want) {
      const segLength = segLen[this.seg]!;
      const take = Math.min(want - done, segLength - this.segOff);
      if (fn !== null) fn(segAddr[this.seg]! + this.segOff, take, done);
      done += take;
      this.segOff += take;
      if (this.segOff === segLength) {
        this.seg++;
        this.segOff = 0;
      }
    }
    this.position += done;
    return done;
  }

  /** Skips `n` bytes; returns how many were skipped. */
  skip(n: number): number {
    return this.advance(n, null);
  }

  /**
   * Appends zero-copy views of the next `n` bytes to `out` (for vectored I/O)
   * and advances; returns the bytes covered. Views alias guest memory.
   */
  views(n: number, out: Uint8Array[]): number {
    const mem = this.chain.memory;
    return this.advance(n, (addr, len) => {
      mem.views(addr, len, out);
    });
  }
}

/** Reads the device-readable part of a chain as one byte stream. */
export class ChainReader extends ChainCursor {
  /** Copies up to `dst.length` bytes into `dst`; returns the count copied. */
  read(dst: Uint8Array): number {
    const mem = this.chain.memory;
    return this.advance(dst.length, (addr, len, done) =>
      mem.read(addr, dst.subarray(done, done + len)),
    );
  }
}

/** Writes the device-writable part of a chain as one byte stream. */
export class ChainWriter extends ChainCursor {
  /** Copies up to `src.length` bytes from `src`; returns the count written. */
  write(src: Uint8Array): number {
    const mem = this.chain.memory;
    return this.advance(src.length, (addr, len, done) =>
      mem.write(addr, src.subarray(done, done + len)),
    );
  }

  /** Writes `n` bytes of `value`; returns the count written. */
  fill(n: number, value = 0): number {
    const mem = this.chain.memory;
    return this.advance(n, (addr, len) => mem.fill(addr, len, value));
  }

  /** Bytes written so far (what goes into the used ring's `len`). */
  get bytesWritten(): number {
    return this.position;
  }
}

/**
 * Mapping fd-backed memory (guest RAM sent by a vhost-user frontend) as
 * zero-copy ArrayBuffers (vhost-user spec, "Memory regions": the back-end
 * mmap()s each region's fd at its `mmap_offset`; mapped `MAP_SHARED |
 * MAP_NORESERVE` like libvhost-user).
 *
 * Node.js typed arrays hold at most 2^32 bytes, so {@link mapRegion} maps a
 * larger region as several windows of at most 4 GiB each; buffer translation
 * must split at window boundaries exactly as at region boundaries.
 *
 * Lifetime: {@link munmap} detaches the ArrayBuffer (every view over it
 * becomes zero-length, so JavaScript cannot touch the pages again) and unmaps
 * at once; a buffer that is just dropped is unmapped when it is
 * garbage-collected. Never unmap while native code still writes into the
 * buffer (an `fs.read` into a view of it in flight): wait for completions.
 * A mapping cannot move to another thread: it is marked untransferable, so
 * `postMessage` copies it. To use guest memory in a worker, send the fd and
 * map it there (fd numbers are valid in every thread of the process).
 *
 * Touching a page past the end of the file raises SIGBUS, so {@link mmap}
 * refuses mappings beyond the file's current size (errnoCode `"ENXIO"`). A
 * file that shrinks after mapping would kill the process on the next touch
 * past its new end, unless the mapping is *guarded* (`guard`): then the
 * SIGBUS guard (./sigbus.ts) puts zero pages there and counts the faults.
 *
 * @module
 */
import { markAsUntransferable } from "node:worker_threads";
import { native } from "./addon.ts";

/** Largest mapping (and window) in bytes: Node's typed-array limit, 2^32. */
export const MAX_WINDOW = 2 ** 32;

/**
 * Maps `length` bytes of `fd` from file offset `offset` and returns them as an
 * external ArrayBuffer (no copy).
 *
 * `offset` must be a multiple of {@link mapAlignment}(fd) (the page size, or
 * the huge page size on hugetlbfs): {@link mapRegion} handles unaligned region
 * offsets. With `writable` (the default) the mapping is `MAP_SHARED`: writes
 * reach the file and the other processes mapping it. Without it the mapping is
 * `MAP_PRIVATE`: writes stay in private copy-on-write pages (so a stray write
 * never faults) and a read-only fd suffices. With `guard` the mapping is
 * registered with the SIGBUS guard until it is unmapped (./sigbus.ts).
 *
 * @param length - 1..{@link MAX_WINDOW}
 */
export function mmap(
  fd: number,
  length: number,
  offset: number,
  writable = true,
  guard = false,
): ArrayBuffer {
  const buffer = native.mmap(fd, length, offset, writable, guard);
  // Moving the buffer to a worker would leave it dangling when this thread
  // exits; postMessage now copies it instead.
  markAsUntransferable(buffer);
  return buffer;
}

/**
 * Detaches and unmaps a buffer returned by {@link mmap}. Returns false if it is
 * already detached. Throws TypeError for any other ArrayBuffer.
 */
export const munmap: (buffer: ArrayBuffer) => boolean = (buffer) => native.munmap(buffer);

/** The alignment {@link mmap} offsets of `fd` need (page or huge page size). */
export const mapAlignment: (fd: number) => number = (fd) => native.mapAlignment(fd);

/** Live mappings in the process (for leak checks). */
export const mappingCount: () => number = () => native.mappingCount();

/** The system page size. */
export function pageSize(): number {
  return native.pageSize;
}

/** One window of a region as {@link planWindows} lays it out. */
export interface WindowPlan {
  /** Offset of the window's first region byte from the start of the region. */
  readonly offset: number;
  /** Region bytes in the window. */
  readonly size: number;
  /** File offset the window maps from (a multiple of the alignment). */
  readonly fileOffset: number;
  /** Bytes mapped: `bufferOffset + size`, at most the window limit. */
  readonly length: number;
  /** Where the window's first region byte lies in the mapping (non-zero only in the first window). */
  readonly bufferOffset: number;
}

function checkSafe(name: string, v: number, min: number): void {
  if (!Number.isSafeInteger(v) || v < min) {
    throw new RangeError(`${name} must be a safe integer >= ${min}, got ${v}`);
  }
}

/**
 * Splits the file range `[fileOffset, fileOffset + size)` into mappings whose
 * file offsets are multiples of `alignment` and whose lengths are at most
 * `maxWindow` rounded down to a multiple of `alignment`. Windows after the
 * first start exactly at a window boundary; the first starts at `fileOffset`
 * rounded down. Pure: the window math of {@link mapRegion}.
 */
export function planWindows(
  size: number,
  fileOffset: number,
  alignment: number,
  maxWindow: number = MAX_WINDOW,
): WindowPlan[] {
  checkSafe("size", size, 1);
  checkSafe("fileOffset", fileOffset, 0);
  checkSafe("alignment", alignment, 1);
  checkSafe("maxWindow", maxWindow, alignment);
  if (fileOffset + size > Number.MAX_SAFE_INTEGER) {
    throw new RangeError("fileOffset + size must be a safe integer");
  }
  const step = Math.floor(Math.min(maxWindow, MAX_WINDOW) / alignment) * alignment;
  if (step === 0) throw new RangeError(`alignment ${alignment} exceeds the window limit`);
  const end = fileOffset + size;
  const windows: WindowPlan[] = [];
  for (let start = fileOffset - (fileOffset % alignment); start < end; start += step) {
    const first = Math.max(start, fileOffset);
    const last = Math.min(start + step, end);
    windows.push({
      offset: first - fileOffset,
      size: last - first,
      fileOffset: start,
      length: last - start,
      bufferOffset: first - start,
    });
  }
  return windows;
}

/** One mapped window of a region (see {@link mapRegion}). */
export interface MappedWindow {
  /** Offset of the window's first region byte from the start of the region. */
  readonly offset: number;
  /** Region bytes in the window. */
  readonly size: number;
  /** The mapping; bytes before `bufferOffset` precede the region (alignment). */
  readonly buffer: ArrayBuffer;
  /** Where the window's first region byte lies in `buffer`. */
  readonly bufferOffset: number;
}

/** Options of {@link mapRegion}. */
export interface MapRegionOptions {
  /** `MAP_SHARED` (true, the default) or private copy-on-write (false); see {@link mmap}. */
  readonly writable?: boolean;
  /** Window limit in bytes (default and maximum {@link MAX_WINDOW}); smaller for tests. */
  readonly maxWindow?: number;
  /** Register every window with the SIGBUS guard (a file that can shrink; see {@link mmap}). */
  readonly guard?: boolean;
}

/**
 * Maps `size` bytes of `fd` starting at file offset `fileOffset` (any offset)
 * as windows of at most 4 GiB with aligned boundaries. Region byte `x` lies
 * in the window with `offset <= x < offset + size`, at `bufferOffset + (x -
 * offset)` of its buffer: a `GuestMemory` region descriptor per window is
 * `{ guestPhysAddr: gpa + offset, size, buffer, bufferOffset }`.
 *
 * `size` and `fileOffset` usually come from the frontend: the caller bounds
 * them (e.g. by a configured memory limit) before mapping. On failure nothing
 * stays mapped. The fd may be closed once this returns.
 */
export function mapRegion(
  fd: number,
  size: number,
  fileOffset: number,
  options: MapRegionOptions = {},
): MappedWindow[] {
  const plan = planWindows(size, fileOffset, mapAlignment(fd), options.maxWindow ?? MAX_WINDOW);
  const windows: MappedWindow[] = [];
  try {
    for (const w of plan) {
      windows.push({
        offset: w.offset,
        size: w.size,
        buffer: mmap(fd, w.length, w.fileOffset, options.writable ?? true, options.guard ?? false),
        bufferOffset: w.bufferOffset,
      });
    }
  } catch (e) {
    unmapRegion(windows);
    throw e;
  }
  return windows;
}

/** Unmaps every window of a region mapped by {@link mapRegion}. */
export function unmapRegion(windows: readonly MappedWindow[]): void {
  for (const w of windows) munmap(w.buffer);
}

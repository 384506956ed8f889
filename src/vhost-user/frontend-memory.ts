/**
 * Guest memory the front-end creates and shares with a vhost-user back-end:
 * an anonymous memory file (memfd) mapped into this process, described to
 * the back-end as one region. qemu/qemu docs/interop/vhost-user.rst "Memory
 * region description", "Memory access"; docs/vhost-user.md
 * and 7 (libblkio's identity addressing). Node-only.
 *
 * Addressing. A region carries a guest-physical address (descriptors use it)
 * and a front-end "user" address (SET_VRING_ADDR uses it). The back-end
 * translates each with the region it falls in, so the two only have to be
 * consistent with what the front-end sends. libblkio passes its process
 * address as both; an ArrayBuffer does not reveal its address, so here both
 * are the same chosen value, {@link FRONTEND_MEMORY_BASE} by default: a
 * ring's SET_VRING_ADDR addresses are then its guest-physical addresses.
 * The base is not 0 because a zero ring address reads as "unset" to some
 * back-ends.
 *
 * @module
 */
import { GuestMemory } from "../memory/guest-memory.ts";
import {
  close,
  ftruncate,
  MAX_WINDOW,
  memfdCreate,
  MFD_ALLOW_SEALING,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  addSeals,
  mmap,
  munmap,
  pageSize,
} from "../native/index.ts";
import type { MemRegion } from "./codec.ts";

/** Default guest-physical (and user) address of the region: 1 GiB. */
export const FRONTEND_MEMORY_BASE = 0x4000_0000;

/** Options of {@link SharedGuestMemory.create}. */
export interface SharedGuestMemoryOptions {
  /** Bytes of memory (rounded up to the page size), at most 4 GiB. */
  readonly size: number;
  /** Guest-physical and user address of the first byte (page-aligned; default {@link FRONTEND_MEMORY_BASE}). */
  readonly guestPhysAddr?: number;
  /** memfd name, shown in /proc as `memfd:<name>` (default `virtio-ts-guest`). */
  readonly name?: string;
}

/**
 * One memfd-backed region of guest memory, mapped here and shareable with a
 * back-end (the fd stays open until {@link close}).
 *
 * @example
 * ```ts
 * const mem = SharedGuestMemory.create({ size: 1 << 20 });
 * const ring = mem.alloc(vringLayout(128, 0).totalBytes, 4096);
 * // ADD_MEM_REG with mem.region and mem.fd, then use mem.memory for the rings
 * mem.close();
 * ```
 */
export class SharedGuestMemory {
  /** The memfd (owned; sent to the back-end with ADD_MEM_REG / SET_MEM_TABLE). */
  readonly fd: number;
  /** Guest-physical address of the first byte. */
  readonly base: number;
  /** Size in bytes. */
  readonly size: number;
  /** The mapping as guest memory. */
  readonly memory: GuestMemory;
  /** The region as the back-end sees it: gpa = uva = {@link base}, mmap offset 0. */
  readonly region: MemRegion;
  readonly #buffer: ArrayBuffer;
  #next: number;
  #closed = false;

  private constructor(fd: number, buffer: ArrayBuffer, base: number, size: number) {
    this.fd = fd;
    this.#buffer = buffer;
    this.base = base;
    this.size = size;
    this.#next = base;
    this.memory = new GuestMemory([{ guestPhysAddr: base, size, buffer, bufferOffset: 0 }]);
    this.region = {
      guestPhysAddr: BigInt(base),
      memorySize: BigInt(size),
      userspaceAddr: BigInt(base),
      mmapOffset: 0n,
    };
  }

  /**
   * Creates the memfd, sizes it and maps it shared.
   *
   * @throws {RangeError} for a size outside 1..4 GiB or an unaligned base.
   * @throws {NativeError} if a system call fails (nothing stays open).
   */
  static create(options: SharedGuestMemoryOptions): SharedGuestMemory {
    const page = pageSize();
    const { size: requested, guestPhysAddr: base = FRONTEND_MEMORY_BASE } = options;
    if (!Number.isSafeInteger(requested) || requested < 1 || requested > MAX_WINDOW)
      throw new RangeError(`memory size must be an integer in 1..${MAX_WINDOW}, got ${requested}`);
    const size = Math.ceil(requested / page) * page;
    if (size > MAX_WINDOW) throw new RangeError(`memory size ${size} exceeds ${MAX_WINDOW}`);
    if (!Number.isSafeInteger(base) || base < 0 || base % page !== 0 || base + size > 2 ** 53)
      throw new RangeError(`guestPhysAddr must be page-aligned and end below 2^53, got ${base}`);
    const fd = memfdCreate(options.name ?? "virtio-ts-guest", MFD_ALLOW_SEALING);
    try {
      ftruncate(fd, size);
      // A back-end refuses memory that could shrink under its mapping (as QEMU's memfd backend seals).
      addSeals(fd, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
      return new SharedGuestMemory(fd, mmap(fd, size, 0, true), base, size);
    } catch (e) {
      close(fd);
      throw e;
    }
  }

  /** Bytes handed out by {@link alloc} so far (alignment padding included). */
  get allocated(): number {
    return this.#next - this.base;
  }

  /** True once {@link close} ran. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Reserves `len` bytes aligned to `align` (a power of two) and returns
   * their guest-physical address. Memory is never given back: carve rings
   * and buffer pools once.
   *
   * @throws {RangeError} if the memory is exhausted or the arguments are bad.
   */
  alloc(len: number, align = 16): number {
    if (!Number.isSafeInteger(len) || len < 1) throw new RangeError(`len must be >= 1, got ${len}`);
    if (!Number.isSafeInteger(align) || align < 1 || (align & (align - 1)) !== 0)
      throw new RangeError(`align must be a power of two, got ${align}`);
    const addr = Math.ceil(this.#next / align) * align;
    if (addr + len > this.base + this.size)
      throw new RangeError(
        `guest memory exhausted: ${len} bytes requested, ${this.base + this.size - addr} left`,
      );
    this.#next = addr + len;
    return addr;
  }

  /**
   * Unmaps the memory and closes the memfd (idempotent). Every view of the
   * memory becomes zero-length. The back-end keeps its own mapping until it
   * drops the region.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    munmap(this.#buffer);
    close(this.fd);
  }
}

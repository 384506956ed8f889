/**
 * One region of guest-physical address space and the buffer behind it, and
 * the error every out-of-range access in memory/ raises. VIRTIO 1.2 §2.7
 * (ring parts and the buffers descriptors point to are guest-physical
 * ranges).
 *
 * A region is checked once, when it is described: its guest-physical
 * address and buffer offset are multiples of 8, it is not empty, it lies in
 * its buffer, and it ends at or below 2^53 so that every address in it is
 * an exact double.
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../errors.ts";

/** Upper bound (exclusive) of any region end: addresses must be exact doubles. */
export const MAX_GUEST_ADDRESS = 2 ** 53;

/** Describes one region for {@link GuestMemory}'s constructor. */
export interface RegionDescriptor {
  /** Guest-physical address of the region's first byte (multiple of 8). */
  readonly guestPhysAddr: number;
  /** Length in bytes (> 0). */
  readonly size: number;
  /** Backing store: SharedArrayBuffer, or an ArrayBuffer such as an mmap window. */
  readonly buffer: ArrayBufferLike;
  /** Byte offset of the region in `buffer` (multiple of 8, default 0). */
  readonly bufferOffset?: number;
}

/** One mapped region. Fields are for memory/ only. @internal */
export class MemoryRegion {
  readonly gpa: number;
  readonly size: number;
  readonly end: number;
  readonly buffer: ArrayBufferLike;
  readonly bufferOffset: number;
  readonly u8: Uint8Array;
  readonly dv: DataView;

  constructor(d: RegionDescriptor) {
    const off = d.bufferOffset ?? 0;
    for (const [name, v] of [
      ["guestPhysAddr", d.guestPhysAddr],
      ["size", d.size],
      ["bufferOffset", off],
    ] as const) {
      if (!Number.isSafeInteger(v) || v < 0)
        throw new RangeError(`region ${name} must be a non-negative safe integer, got ${v}`);
    }
    if (d.size === 0) throw new RangeError("region size must be > 0");
    if (d.guestPhysAddr % 8 !== 0 || off % 8 !== 0)
      throw new RangeError("region guestPhysAddr and bufferOffset must be multiples of 8");
    if (d.guestPhysAddr + d.size > MAX_GUEST_ADDRESS)
      throw new RangeError("region must end below 2^53");
    if (off + d.size > d.buffer.byteLength) {
      throw new RangeError(
        `region [${off}, ${off + d.size}) exceeds its buffer of ${d.buffer.byteLength} bytes`,
      );
    }
    this.gpa = d.guestPhysAddr;
    this.size = d.size;
    this.end = d.guestPhysAddr + d.size;
    this.buffer = d.buffer;
    this.bufferOffset = off;
    this.u8 = new Uint8Array(d.buffer, off, d.size);
    this.dv = new DataView(d.buffer, off, d.size);
  }
}

/** The error for [addr, addr + len) outside guest memory (`VIRTIO_ERR_MEM_OUT_OF_RANGE`). */
export function outOfRange(addr: number, len: number): VirtioError {
  return new VirtioError(
    ErrorCode.MEM_OUT_OF_RANGE,
    `guest range [0x${addr.toString(16)}, +${len}) is not inside guest memory`,
    {
      addr,
      len,
    },
  );
}

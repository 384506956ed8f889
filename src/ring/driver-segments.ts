/**
 * A request as a driver hands it to a ring: device-readable segments, then
 * device-writable ones, each a range of guest memory, checked before
 * anything changes. VIRTIO 1.2 §2.7.4.2 (writable after readable), §2.7.5.2
 * (a chain is at most 2^32 − 1 bytes), §2.7.5.3.1 (no longer than the queue
 * size) — rules a packed-ring driver queue shares.
 *
 * @module
 */
import type { GuestMemory } from "../memory/guest-memory.ts";

/** A buffer in guest memory: `len` bytes at guest-physical `addr`. */
export interface Segment {
  readonly addr: number;
  readonly len: number;
}

/** A completed request as {@link DriverQueue.getUsed} returns it. */
export interface UsedBuffer<T> {
  readonly token: T;
  /** Bytes the device says it wrote into the chain's writable part. */
  readonly len: number;
}

/** §2.7.5.2: "Drivers MUST NOT add a descriptor chain longer than 2^32 bytes in total". */
const MAX_CHAIN_BYTES = 0xffff_ffff;

/**
 * Validates both lists for a queue of `size` and returns the writable byte
 * count. No allocation.
 *
 * @throws {RangeError} no segments, more segments than the queue size, a
 *   zero-length or out-of-memory segment, or more than 2^32 − 1 bytes.
 * @throws {TypeError} if `readable` / `writable` are not arrays.
 */
export function checkSegments(
  memory: GuestMemory,
  size: number,
  readable: readonly Segment[],
  writable: readonly Segment[],
): number {
  if (!isArray(readable) || !isArray(writable))
    throw new TypeError("readable and writable must be arrays of segments");
  const nr = readable.length;
  const total = nr + writable.length;
  if (total === 0) throw new RangeError("a request needs at least one segment");
  // §2.7.5.3.1 "A driver MUST NOT create a descriptor chain longer than the Queue Size of the device."
  if (total > size) throw new RangeError(`${total} segments exceed the queue size ${size}`);
  let bytes = 0;
  let readableBytes = 0;
  for (let k = 0; k < total; k++) {
    const { addr, len } = k < nr ? readable[k]! : writable[k - nr]!;
    if (!Number.isSafeInteger(len) || len <= 0 || len > MAX_CHAIN_BYTES)
      throw new RangeError(`segment length ${len} must be an integer in 1..2^32-1`);
    if (!memory.isValidRange(addr, len))
      throw new RangeError(`segment [${addr}, +${len}) is not inside guest memory`);
    if (k === nr) readableBytes = bytes;
    bytes += len;
  }
  // §2.7.5.2 "Drivers MUST NOT add a descriptor chain longer than 2^32 bytes in total".
  if (bytes > MAX_CHAIN_BYTES) throw new RangeError(`request of ${bytes} bytes exceeds 2^32-1`);
  return nr === total ? 0 : bytes - readableBytes;
}

/** Array.isArray without narrowing readonly arrays to any[]. */
function isArray(v: unknown): boolean {
  return Array.isArray(v);
}

/**
 * The ring descriptors of one packed-ring descriptor list, as the device
 * read them: what the vhost-user inflight log records of a list when it is
 * fetched, and what a restarted back-end resubmits it from (the ring slots
 * may hold used descriptors by then). VIRTIO 1.2 §2.8.13 (struct
 * pvirtq_desc: addr, len, id, flags); qemu/qemu docs/interop/vhost-user.rst
 * "Inflight I/O tracking", packed virtqueue ("Set desc[free_head].addr,
 * desc[free_head].len, desc[free_head].flags, desc[free_head].id to d.addr,
 * d.len, d.flags, d.id").
 *
 * Only ring descriptors are kept: an indirect table stays in guest memory
 * (the driver may not reuse it before the list is used) and is read again.
 *
 * @module
 */

/** Up to `capacity` ring descriptors of one list, in ring order. */
export class PackedListCopy {
  /** Descriptors held. */
  count = 0;
  readonly addr: Float64Array;
  readonly len: Uint32Array;
  readonly flags: Uint16Array;
  readonly id: Uint16Array;

  /** @throws {RangeError} if `capacity` is not an integer in 1..32768. */
  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 32768)
      throw new RangeError(`a list copy holds 1..32768 descriptors, not ${capacity}`);
    this.addr = new Float64Array(capacity);
    this.len = new Uint32Array(capacity);
    this.flags = new Uint16Array(capacity);
    this.id = new Uint16Array(capacity);
  }

  /** Appends one descriptor (ignored past the capacity: a list never has more ring descriptors than the ring). */
  push(addr: number, len: number, flags: number, id: number): void {
    const k = this.count;
    if (k >= this.addr.length) return;
    this.addr[k] = addr;
    this.len[k] = len;
    this.flags[k] = flags;
    this.id[k] = id;
    this.count = k + 1;
  }

  /** The buffer ID of the list: its last descriptor's (§2.8.6 "Buffer ID is included in the last descriptor in the list"). */
  get bufferId(): number {
    return this.count === 0 ? 0 : this.id[this.count - 1]!;
  }
}

/**
 * The virtio-blk driver's per-request bookkeeping and its typed errors.
 * VIRTIO 1.2 §5.2.6 (the status byte: VIRTIO_BLK_S_OK, _IOERR "for device or
 * driver error", _UNSUPP "for a request unsupported by device").
 *
 * An *operation* is one call of the driver's API (read, write, flush, …);
 * it becomes one or more virtio-blk *requests* (a request is one descriptor
 * chain), each in a *slot*: a fixed header + status area in guest memory
 * and the JS state of the request it carries.
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../../errors.ts";
import {
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
} from "../../spec/blk.ts";
import type { BlkRange, BlkSegment, PlanCursor } from "./driver-plan.ts";

/** Spec name of a request type, for messages. */
export function blkRequestName(type: number): string {
  switch (type) {
    case VIRTIO_BLK_T_IN:
      return "VIRTIO_BLK_T_IN";
    case VIRTIO_BLK_T_OUT:
      return "VIRTIO_BLK_T_OUT";
    case VIRTIO_BLK_T_FLUSH:
      return "VIRTIO_BLK_T_FLUSH";
    case VIRTIO_BLK_T_GET_ID:
      return "VIRTIO_BLK_T_GET_ID";
    case VIRTIO_BLK_T_DISCARD:
      return "VIRTIO_BLK_T_DISCARD";
    case VIRTIO_BLK_T_WRITE_ZEROES:
      return "VIRTIO_BLK_T_WRITE_ZEROES";
    default:
      return `type ${type}`;
  }
}

/**
 * A request the device answered with VIRTIO_BLK_S_IOERR or
 * VIRTIO_BLK_S_UNSUPP (code `BLK_IOERR` / `BLK_UNSUPP`), or that the driver
 * refused itself with the answer the device would have given (`local`:
 * a write to a read-only device, a feature that was not negotiated).
 */
export class BlkIoError extends VirtioError {
  /** The status byte: VIRTIO_BLK_S_IOERR (1) or VIRTIO_BLK_S_UNSUPP (2). */
  readonly status: number;
  /** Request type (VIRTIO_BLK_T_*). */
  readonly type: number;
  /** True if the driver decided without sending anything to the device. */
  readonly local: boolean;

  constructor(status: number, type: number, message: string, local = false) {
    super(status === VIRTIO_BLK_S_UNSUPP ? ErrorCode.BLK_UNSUPP : ErrorCode.BLK_IOERR, message, {
      status,
      type,
      local,
    });
    this.status = status;
    this.type = type;
    this.local = local;
  }
}

/** A local refusal: IOERR for writes to a read-only device. */
export function readOnlyError(type: number): BlkIoError {
  return new BlkIoError(
    VIRTIO_BLK_S_IOERR,
    type,
    `${blkRequestName(type)} refused: the device is read-only (VIRTIO_BLK_F_RO)`,
    true,
  );
}

/** A local refusal: UNSUPP for a request type whose feature was not negotiated. */
export function unsupportedError(type: number, feature: string): BlkIoError {
  return new BlkIoError(
    VIRTIO_BLK_S_UNSUPP,
    type,
    `${blkRequestName(type)} refused: ${feature} was not negotiated`,
    true,
  );
}

/** One API call in progress. Fields are for the driver only. @internal */
export class BlkOp {
  readonly type: number;
  readonly queue: number;
  readonly resolve: (value: string | undefined) => void;
  readonly reject: (err: Error) => void;
  /** Copy path: the caller's buffer (IN: filled on completion; OUT: copied in at submission). */
  user: Uint8Array | null = null;
  /** Zero-copy path: the caller's guest segments. */
  segs: readonly BlkSegment[] | null = null;
  /** DISCARD / WRITE_ZEROES ranges. */
  ranges: readonly BlkRange[] | null = null;
  unmap = false;
  /** Disk byte offset of the first byte (IN / OUT). */
  offset = 0;
  /** Total data bytes (IN / OUT). */
  length = 0;
  /** Data bytes already put in requests (IN / OUT). */
  pos = 0;
  /** Cursor over segs / ranges. */
  readonly cur: PlanCursor = { index: 0, off: 0 };
  /** Every request of this op has been submitted. */
  allSubmitted = false;
  /** Requests submitted and not completed. */
  inFlight = 0;
  /** The first failure; no more requests are submitted once set. */
  error: Error | null = null;
  settled = false;
  /** GET_ID result. */
  result = "";

  constructor(
    type: number,
    queue: number,
    resolve: (value: string | undefined) => void,
    reject: (err: Error) => void,
  ) {
    this.type = type;
    this.queue = queue;
    this.resolve = resolve;
    this.reject = reject;
  }
}

/** A request slot: header + status in guest memory and the request it carries. @internal */
export class BlkSlot {
  /** Token given to the DriverQueue: the slot's index in its queue. */
  readonly index: number;
  /** Guest address of the 16-byte header; the status byte follows at +16. */
  readonly addr: number;
  /** Offset of the header in the driver's slot-area slice. */
  readonly off: number;
  /** The operation this request belongs to, or null when free. */
  op: BlkOp | null = null;
  /** Kept out of use until reset (its request may still sit in a broken ring). */
  held = false;
  type = 0;
  /** Disk byte offset (for messages). */
  offset = 0;
  /** IN: data bytes the device must write; OUT: data bytes sent. */
  dataLen = 0;
  /** Copy IN: where in the caller's buffer the data goes. */
  userPos = 0;
  /** Bounce run of this request, or -1. */
  bounceAddr = -1;
  bounceBytes = 0;

  constructor(index: number, addr: number, off: number) {
    this.index = index;
    this.addr = addr;
    this.off = off;
  }
}

/**
 * QEMU-style names of virtio-blk request types, and the queue engine's log
 * and trace lines (QEMU's trace-event names and fields). VIRTIO 1.2 §5.2.6
 * (request types). The logger itself is the project's (../../log.ts).
 *
 * @module
 */
import type { DescriptorChain } from "../../ring/chain.ts";
import type { BlkRequest } from "./request.ts";

const TYPE_NAMES: Readonly<Record<number, string>> = {
  0: "IN",
  1: "OUT",
  4: "FLUSH",
  8: "GET_ID",
  10: "GET_LIFETIME",
  11: "DISCARD",
  13: "WRITE_ZEROES",
  14: "SECURE_ERASE",
};

/** The spec name of a request type without its prefix, or the number. */
export function blkTypeName(type: number): string {
  return TYPE_NAMES[type] ?? String(type);
}

/** `virtqueue_pop`: a chain taken from the available ring. */
export function popLine(qi: number, chain: DescriptorChain): string {
  return `virtqueue_pop vq ${qi} head ${chain.head} in_num ${chain.numSegs - chain.numReadable} out_num ${chain.numReadable}`;
}

/** `virtio_blk_req_invalid`: a request answered at once with an error status. */
export function invalidLine(qi: number, req: BlkRequest): string {
  return `virtio_blk_req_invalid vq ${qi} req ${req.chain!.head} type ${blkTypeName(req.type)} status ${req.status} reason ${req.reason}`;
}

/** `virtio_blk_submit`: a request handed to the backing store. */
export function submitLine(qi: number, req: BlkRequest): string {
  return `virtio_blk_submit vq ${qi} req ${req.chain!.head} type ${blkTypeName(req.type)} sector ${req.sector} len ${req.length} segs ${req.segCount}`;
}

/** A request that failed, and why (`len` only when it moved data). */
export function failedLine(qi: number, req: BlkRequest, why: string, withLen = true): string {
  const len = withLen ? ` len ${req.length}` : "";
  return `virtio-blk vq ${qi} req ${req.chain!.head}: ${blkTypeName(req.type)} sector ${req.sector}${len} failed: ${why}`;
}

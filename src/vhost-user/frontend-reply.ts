/**
 * What a reply to a front-end request must look like — header, size and
 * content — checked strictly before anything uses it. qemu/qemu
 * docs/interop/vhost-user.rst "Message Specification" (header, reply flag),
 * "REPLY_ACK", "Front-end message types" (GET_VRING_BASE, GET_CONFIG,
 * GET_INFLIGHT_FD), "Inflight I/O tracking";
 * docs/vhost-user.md
 *
 * The back-end is untrusted. A reply is accepted only if its flags are
 * exactly 0x5 (version 1 + REPLY; "the back-end MUST ... set the reply bit"),
 * it answers the request in flight (same id), its size is exactly what that
 * request's reply needs, and its content echoes what the request asked (ring
 * index, config offset/size/flags, inflight queue count and size). Only a
 * GET_INFLIGHT_FD reply carries an fd, exactly one. A violation is a {@link VirtioError}
 * `VIRTIO_ERR_VHOST_USER_PROTOCOL`. A REPLY_ACK with a non-zero status, and
 * an empty GET_CONFIG reply, are refusals: `VIRTIO_ERR_VHOST_USER_REFUSED`.
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../errors.ts";
import {
  VHOST_USER_CONFIG_HDR_SIZE,
  VHOST_USER_INFLIGHT_SIZE,
  VHOST_USER_REPLY_FLAGS,
  VHOST_USER_U64_SIZE,
  VHOST_USER_VRING_STATE_SIZE,
  inflightQueueRegionSize,
  vhostUserRequestName,
} from "../spec/vhost-user.ts";
import {
  decodeConfig,
  decodeHeader,
  decodeInflight,
  decodeU64,
  decodeVringState,
  type InflightDescription,
  type VringState,
} from "./codec.ts";

/** What a request with a reply body expects back (requests without one get an ack or nothing). */
export type ReplyBody =
  | { readonly kind: "u64" }
  | { readonly kind: "vring-state"; readonly index: number }
  | {
      readonly kind: "config";
      readonly offset: number;
      readonly size: number;
      readonly flags: number;
    }
  | { readonly kind: "inflight"; readonly numQueues: number; readonly queueSize: number };

/** A GET_INFLIGHT_FD reply: the buffer's description and its fd (now the caller's). */
export interface InflightReply {
  readonly description: InflightDescription;
  readonly fd: number;
}

/** The decoded reply of a request, by {@link ReplyBody} kind. */
export type ReplyValue<B extends ReplyBody | undefined> = B extends { kind: "u64" }
  ? bigint
  : B extends { kind: "vring-state" }
    ? VringState
    : B extends { kind: "config" }
      ? Uint8Array
      : B extends { kind: "inflight" }
        ? InflightReply
        : undefined;

/** How a request is answered. */
export type Expect = "none" | "ack" | ReplyBody;

/** Replies are small (the largest is a 256-byte config); this bounds what we buffer. */
const MAX_REPLY_PAYLOAD = VHOST_USER_CONFIG_HDR_SIZE + 256;

/** The largest inflight buffer accepted: far above any ring's (32768 entries × 32 queues is 16 MiB). */
const MAX_INFLIGHT_BYTES = 2n ** 30n;

/** True if replies to `expect` carry one fd. */
export function replyTakesFd(expect: Expect): boolean {
  return expect !== "ack" && expect !== "none" && expect.kind === "inflight";
}

/** A violation of the protocol by the back-end. */
export function protocolError(
  message: string,
  details: Record<string, number | string | bigint | boolean> = {},
): VirtioError {
  return new VirtioError(ErrorCode.VHOST_USER_PROTOCOL, message, details);
}

function replySize(expect: Expect): number {
  if (expect === "ack") return VHOST_USER_U64_SIZE;
  if (expect === "none") return 0;
  switch (expect.kind) {
    case "u64":
      return VHOST_USER_U64_SIZE;
    case "vring-state":
      return VHOST_USER_VRING_STATE_SIZE;
    case "config":
      return VHOST_USER_CONFIG_HDR_SIZE + expect.size;
    case "inflight":
      return VHOST_USER_INFLIGHT_SIZE;
  }
}

/**
 * Validates a reply header (`hdr`, the whole header) against the request in
 * flight; returns the payload size.
 *
 * @throws {VirtioError} `VIRTIO_ERR_VHOST_USER_PROTOCOL` for a violation.
 */
export function checkReplyHeader(hdr: Uint8Array, request: number, expect: Expect): number {
  const h = decodeHeader(hdr);
  const name = vhostUserRequestName(request);
  const details = { request, replyRequest: h.request, flags: h.flags, size: h.size };
  // "The back-end MUST ... set the reply bit"; QEMU accepts exactly 0x5 and nothing else.
  if (h.flags !== VHOST_USER_REPLY_FLAGS)
    throw protocolError(
      `reply to ${name}: flags 0x${h.flags.toString(16)}, expected exactly 0x5`,
      details,
    );
  if (h.request !== request)
    throw protocolError(
      `reply to ${name} carries request ${vhostUserRequestName(h.request)}`,
      details,
    );
  const want = replySize(expect);
  // libvhost-user answers a GET_CONFIG it cannot serve with an empty payload
  // ("resize to zero to indicate an error to frontend"): a refusal, decoded below.
  const refusedConfig =
    h.size === 0 && expect !== "ack" && expect !== "none" && expect.kind === "config";
  if (!refusedConfig && (h.size > MAX_REPLY_PAYLOAD || h.size !== want))
    throw protocolError(`reply to ${name}: ${h.size} payload bytes, expected ${want}`, details);
  return h.size;
}

/**
 * Decodes and checks a reply payload of the size {@link checkReplyHeader}
 * accepted; `fd` is the one fd that came with it (see {@link replyTakesFd}),
 * or -1. The caller keeps `fd` if this throws.
 *
 * @throws {VirtioError} `VIRTIO_ERR_VHOST_USER_REFUSED` for a refusal,
 *   `VIRTIO_ERR_VHOST_USER_PROTOCOL` for a violation.
 */
export function decodeReply(
  request: number,
  expect: Expect,
  payload: Uint8Array,
  fd = -1,
): unknown {
  if (expect === "ack") return decodeAck(request, payload);
  if (expect === "none") return undefined;
  switch (expect.kind) {
    case "u64":
      return decodeU64(payload);
    case "vring-state":
      return decodeVringStateReply(request, expect.index, payload);
    case "config":
      return decodeConfigReply(request, expect, payload);
    case "inflight":
      return decodeInflightReply(expect, payload, fd);
  }
}

/** The back-end's buffer must fit the queues asked for (it is handed back to a back-end later). */
function decodeInflightReply(
  expect: { readonly numQueues: number; readonly queueSize: number },
  payload: Uint8Array,
  fd: number,
): InflightReply {
  const d = decodeInflight(payload);
  if (fd < 0) throw protocolError("reply to GET_INFLIGHT_FD carries no fd");
  if (d.numQueues !== expect.numQueues || d.queueSize !== expect.queueSize)
    throw protocolError(
      `reply to GET_INFLIGHT_FD: ${d.numQueues} queues of ${d.queueSize}, asked for ${expect.numQueues} of ${expect.queueSize}`,
      { numQueues: d.numQueues, queueSize: d.queueSize },
    );
  const needed = BigInt(expect.numQueues * inflightQueueRegionSize(expect.queueSize));
  if (d.mmapSize < needed || d.mmapSize > MAX_INFLIGHT_BYTES || d.mmapOffset > MAX_INFLIGHT_BYTES)
    throw protocolError(
      `reply to GET_INFLIGHT_FD: mmap_size ${d.mmapSize} at offset ${d.mmapOffset}, needed ${needed}..${MAX_INFLIGHT_BYTES}`,
      { mmapSize: d.mmapSize, mmapOffset: d.mmapOffset },
    );
  return { description: d, fd };
}

function decodeAck(request: number, payload: Uint8Array): undefined {
  const status = decodeU64(payload);
  // "REPLY_ACK ... a zero value indicates success, a non-zero value failure."
  if (status !== 0n)
    throw new VirtioError(
      ErrorCode.VHOST_USER_REFUSED,
      `the back-end refused ${vhostUserRequestName(request)} (status ${status})`,
      { request, status },
    );
  return undefined;
}

function decodeVringStateReply(request: number, index: number, payload: Uint8Array): VringState {
  const s = decodeVringState(payload);
  if (s.index !== index)
    throw protocolError(
      `reply to ${vhostUserRequestName(request)} is for ring ${s.index}, asked for ${index}`,
      { index: s.index, expected: index },
    );
  return s;
}

function decodeConfigReply(
  request: number,
  expect: { readonly offset: number; readonly size: number; readonly flags: number },
  payload: Uint8Array,
): Uint8Array {
  const name = vhostUserRequestName(request);
  if (payload.byteLength === 0)
    throw new VirtioError(
      ErrorCode.VHOST_USER_REFUSED,
      `the back-end refused ${name} of ${expect.size} bytes at offset ${expect.offset} (empty reply)`,
      { request, offset: expect.offset, size: expect.size },
    );
  const c = decodeConfig(payload);
  // The back-end answers with the request's own header: offset, size and flags echoed.
  if (c.offset !== expect.offset || c.flags !== expect.flags)
    throw protocolError(
      `reply to ${name}: offset ${c.offset} flags ${c.flags}, asked for offset ${expect.offset} flags ${expect.flags}`,
      { offset: c.offset, flags: c.flags },
    );
  return c.data;
}

/**
 * Errors with stable codes.
 *
 * Three kinds (docs/errors.md):
 *  1. API misuse by the embedding program: plain `TypeError` / `RangeError`.
 *  2. The other side broke the protocol: {@link VirtioError} with a stable
 *     `code`; rings and devices become *broken*, connections close.
 *  3. Unknown but legal input is data (e.g. VIRTIO_BLK_S_UNSUPP), not an error.
 *
 * @module
 */

/** Every stable error code. docs/errors.md describes each one. */
export const ErrorCode = {
  // memory/
  MEM_OUT_OF_RANGE: "VIRTIO_ERR_MEM_OUT_OF_RANGE",
  MEM_MISALIGNED: "VIRTIO_ERR_MEM_MISALIGNED",
  MEM_FAULT: "VIRTIO_ERR_MEM_FAULT",
  // ring/ device side (docs/conformance.md "Ring violations")
  QUEUE_CONFIG: "VIRTIO_ERR_QUEUE_CONFIG",
  QUEUE_NOT_READY: "VIRTIO_ERR_QUEUE_NOT_READY",
  AVAIL_IDX_JUMP: "VIRTIO_ERR_AVAIL_IDX_JUMP",
  HEAD_OUT_OF_RANGE: "VIRTIO_ERR_HEAD_OUT_OF_RANGE",
  HEAD_IN_USE: "VIRTIO_ERR_HEAD_IN_USE",
  TOO_MANY_IN_FLIGHT: "VIRTIO_ERR_TOO_MANY_IN_FLIGHT",
  NEXT_OUT_OF_RANGE: "VIRTIO_ERR_NEXT_OUT_OF_RANGE",
  DESC_LOOP: "VIRTIO_ERR_DESC_LOOP",
  CHAIN_TOO_LONG: "VIRTIO_ERR_CHAIN_TOO_LONG",
  DESC_OUT_OF_BOUNDS: "VIRTIO_ERR_DESC_OUT_OF_BOUNDS",
  READ_AFTER_WRITE: "VIRTIO_ERR_READ_AFTER_WRITE",
  INDIRECT_TABLE: "VIRTIO_ERR_INDIRECT_TABLE",
  INDIRECT_NESTED: "VIRTIO_ERR_INDIRECT_NESTED",
  INDIRECT_NEXT: "VIRTIO_ERR_INDIRECT_NEXT",
  DESC_NOT_AVAIL: "VIRTIO_ERR_DESC_NOT_AVAIL",
  USED_HEAD_NOT_IN_FLIGHT: "VIRTIO_ERR_USED_HEAD_NOT_IN_FLIGHT",
  // ring/ driver side (the device broke the protocol)
  USED_ID_OUT_OF_RANGE: "VIRTIO_ERR_USED_ID_OUT_OF_RANGE",
  USED_ID_NOT_OUTSTANDING: "VIRTIO_ERR_USED_ID_NOT_OUTSTANDING",
  USED_IDX_JUMP: "VIRTIO_ERR_USED_IDX_JUMP",
  USED_LEN_TOO_LONG: "VIRTIO_ERR_USED_LEN_TOO_LONG",
  // device/
  QUEUE_BROKEN: "VIRTIO_ERR_QUEUE_BROKEN",
  DEVICE_BROKEN: "VIRTIO_ERR_DEVICE_BROKEN",
  DEVICE_RESET: "VIRTIO_ERR_DEVICE_RESET",
  FEATURES_REFUSED: "VIRTIO_ERR_FEATURES_REFUSED",
  // devices/blk
  BLK_MISSING_HEADERS: "VIRTIO_ERR_BLK_MISSING_HEADERS",
  BLK_BAD_STATUS: "VIRTIO_ERR_BLK_BAD_STATUS",
  BLK_IOERR: "VIRTIO_ERR_BLK_IOERR",
  BLK_UNSUPP: "VIRTIO_ERR_BLK_UNSUPP",
  BLK_IMAGE: "VIRTIO_ERR_BLK_IMAGE",
  // devices/blk driver side (the device answered badly)
  BLK_BAD_CONFIG: "VIRTIO_ERR_BLK_BAD_CONFIG",
  BLK_USED_LEN: "VIRTIO_ERR_BLK_USED_LEN",
  // vhost-user (the frontend broke the protocol)
  VHOST_USER_PROTOCOL: "VIRTIO_ERR_VHOST_USER_PROTOCOL",
  VHOST_USER_DISCONNECTED: "VIRTIO_ERR_VHOST_USER_DISCONNECTED",
  VHOST_USER_BACKEND: "VIRTIO_ERR_VHOST_USER_BACKEND",
  // vhost-user front-end (the back-end refused a request, or lacks what the front-end needs)
  VHOST_USER_REFUSED: "VIRTIO_ERR_VHOST_USER_REFUSED",
  VHOST_USER_INCOMPATIBLE: "VIRTIO_ERR_VHOST_USER_INCOMPATIBLE",
  // transport/inproc (the peer thread stopped answering)
  INPROC_TIMEOUT: "VIRTIO_ERR_INPROC_TIMEOUT",
  // nbd/ (an NBD server, seen from the client; docs/conformance.md "NBD server replies")
  NBD_URI: "VIRTIO_ERR_NBD_URI",
  NBD_HANDSHAKE: "VIRTIO_ERR_NBD_HANDSHAKE",
  NBD_REFUSED: "VIRTIO_ERR_NBD_REFUSED",
  NBD_EXPORT: "VIRTIO_ERR_NBD_EXPORT",
  NBD_PROTOCOL: "VIRTIO_ERR_NBD_PROTOCOL",
  NBD_REQUEST: "VIRTIO_ERR_NBD_REQUEST",
  NBD_DISCONNECTED: "VIRTIO_ERR_NBD_DISCONNECTED",
  NBD_TIMEOUT: "VIRTIO_ERR_NBD_TIMEOUT",
  // native/
  NATIVE: "VIRTIO_ERR_NATIVE",
} as const;

/** A stable error code string, e.g. `"VIRTIO_ERR_DESC_LOOP"`. */
export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

/**
 * An error caused by the other side (or by the environment) with a stable
 * `code`. `details` holds the numbers involved, for logs.
 */
export class VirtioError extends Error {
  override readonly name = "VirtioError";
  readonly code: ErrorCodeValue;
  readonly details: Readonly<Record<string, number | string | bigint | boolean>>;

  constructor(
    code: ErrorCodeValue,
    message: string,
    details: Readonly<Record<string, number | string | bigint | boolean>> = {},
  ) {
    super(message);
    this.code = code;
    this.details = details;
  }
}

/** True if `e` is a {@link VirtioError} (optionally with the given code). */
export function isVirtioError(e: unknown, code?: ErrorCodeValue): e is VirtioError {
  return e instanceof VirtioError && (code === undefined || e.code === code);
}

/**
 * The field checks every vhost-user payload codec shares: a payload of the
 * wrong size is the untrusted front-end's protocol error; a value that does
 * not fit its field is the caller's RangeError. qemu/qemu
 * docs/interop/vhost-user.rst "Message Specification" (little-endian fields
 * of fixed width).
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../errors.ts";

/** `VIRTIO_ERR_VHOST_USER_PROTOCOL` for a payload of `got` bytes where `want` were needed. */
export function badPayload(what: string, got: number, want: string): VirtioError {
  return new VirtioError(
    ErrorCode.VHOST_USER_PROTOCOL,
    `${what} payload is ${got} bytes, expected ${want}`,
    { size: got },
  );
}

/** A little-endian view of `bytes`. */
export function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A view of a payload that must be exactly `n` bytes. */
export function expectSize(what: string, bytes: Uint8Array, n: number): DataView {
  if (bytes.byteLength !== n) throw badPayload(what, bytes.byteLength, String(n));
  return view(bytes);
}

/** `v`, checked to fit a u32 field. */
export function u32(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff_ffff)
    throw new RangeError(`${name} must be a u32, got ${v}`);
  return v;
}

/** `v`, checked to fit a u64 field. */
export function u64(name: string, v: bigint): bigint {
  if (v < 0n || v > 0xffff_ffff_ffff_ffffn) throw new RangeError(`${name} must be a u64, got ${v}`);
  return v;
}

/**
 * vhost-user payloads that describe shared buffers and config space: the
 * log description (SET_LOG_BASE), the config space access (GET_CONFIG /
 * SET_CONFIG) and the inflight description (GET/SET_INFLIGHT_FD). qemu/qemu
 * docs/interop/vhost-user.rst "Message Specification" ("Log description",
 * "Virtio device config space", "Inflight description").
 *
 * Decoders take exactly the payload bytes and throw a {@link VirtioError}
 * `VIRTIO_ERR_VHOST_USER_PROTOCOL` for a wrong length (the bytes come from
 * the untrusted front-end).
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../errors.ts";
import {
  VHOST_USER_CONFIG_HDR_SIZE,
  VHOST_USER_INFLIGHT_SIZE,
  VHOST_USER_LOG_SIZE,
  VHOST_USER_MAX_CONFIG_SIZE,
} from "../spec/vhost-user.ts";
import { badPayload, expectSize, u32, u64, view } from "./codec-fields.ts";

/** "Log description" (SET_LOG_BASE). */
export interface LogDescription {
  readonly mmapSize: bigint;
  readonly mmapOffset: bigint;
}

/** "Virtio device config space" (GET_CONFIG / SET_CONFIG). */
export interface ConfigPayload {
  readonly offset: number;
  readonly flags: number;
  /** `size` bytes of config space (for a GET_CONFIG request: `size` bytes the back-end ignores). */
  readonly data: Uint8Array;
}

/** "Inflight description" (GET/SET_INFLIGHT_FD). */
export interface InflightDescription {
  readonly mmapSize: bigint;
  readonly mmapOffset: bigint;
  readonly numQueues: number;
  readonly queueSize: number;
}

/** "Log description" (SET_LOG_BASE). */
export function decodeLog(bytes: Uint8Array): LogDescription {
  const dv = expectSize("log", bytes, VHOST_USER_LOG_SIZE);
  return { mmapSize: dv.getBigUint64(0, true), mmapOffset: dv.getBigUint64(8, true) };
}

export function encodeLog(l: LogDescription): Uint8Array {
  const out = new Uint8Array(VHOST_USER_LOG_SIZE);
  const dv = view(out);
  dv.setBigUint64(0, u64("mmapSize", l.mmapSize), true);
  dv.setBigUint64(8, u64("mmapOffset", l.mmapOffset), true);
  return out;
}

/**
 * "Virtio device config space": offset, size, flags, then exactly `size`
 * bytes (at most 256). The returned `data` is a copy.
 */
export function decodeConfig(bytes: Uint8Array): ConfigPayload {
  if (bytes.byteLength < VHOST_USER_CONFIG_HDR_SIZE)
    throw badPayload("config", bytes.byteLength, `>= ${VHOST_USER_CONFIG_HDR_SIZE}`);
  const dv = view(bytes);
  const size = dv.getUint32(4, true);
  if (size > VHOST_USER_MAX_CONFIG_SIZE) {
    throw new VirtioError(
      ErrorCode.VHOST_USER_PROTOCOL,
      `config access of ${size} bytes exceeds ${VHOST_USER_MAX_CONFIG_SIZE}`,
      { size },
    );
  }
  if (bytes.byteLength !== VHOST_USER_CONFIG_HDR_SIZE + size)
    throw badPayload(
      `config (size ${size})`,
      bytes.byteLength,
      String(VHOST_USER_CONFIG_HDR_SIZE + size),
    );
  return {
    offset: dv.getUint32(0, true),
    flags: dv.getUint32(8, true),
    data: bytes.slice(VHOST_USER_CONFIG_HDR_SIZE),
  };
}

/** @throws {RangeError} for more than 256 bytes of data. */
export function encodeConfig(c: ConfigPayload): Uint8Array {
  if (c.data.byteLength > VHOST_USER_MAX_CONFIG_SIZE)
    throw new RangeError(
      `config data is ${c.data.byteLength} bytes, at most ${VHOST_USER_MAX_CONFIG_SIZE}`,
    );
  const out = new Uint8Array(VHOST_USER_CONFIG_HDR_SIZE + c.data.byteLength);
  const dv = view(out);
  dv.setUint32(0, u32("offset", c.offset), true);
  dv.setUint32(4, c.data.byteLength, true);
  dv.setUint32(8, u32("flags", c.flags), true);
  out.set(c.data, VHOST_USER_CONFIG_HDR_SIZE);
  return out;
}

/** "Inflight description"; the 4 trailing padding bytes QEMU sends are ignored. */
export function decodeInflight(bytes: Uint8Array): InflightDescription {
  const dv = expectSize("inflight", bytes, VHOST_USER_INFLIGHT_SIZE);
  return {
    mmapSize: dv.getBigUint64(0, true),
    mmapOffset: dv.getBigUint64(8, true),
    numQueues: dv.getUint16(16, true),
    queueSize: dv.getUint16(18, true),
  };
}

/** @throws {RangeError} for a queue count or size that is not a u16. */
export function encodeInflight(d: InflightDescription): Uint8Array {
  for (const [name, v] of [
    ["numQueues", d.numQueues],
    ["queueSize", d.queueSize],
  ] as const) {
    if (!Number.isInteger(v) || v < 0 || v > 0xffff)
      throw new RangeError(`${name} must be a u16, got ${v}`);
  }
  const out = new Uint8Array(VHOST_USER_INFLIGHT_SIZE);
  const dv = view(out);
  dv.setBigUint64(0, u64("mmapSize", d.mmapSize), true);
  dv.setBigUint64(8, u64("mmapOffset", d.mmapOffset), true);
  dv.setUint16(16, d.numQueues, true);
  dv.setUint16(18, d.queueSize, true);
  return out;
}

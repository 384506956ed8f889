/**
 * Pure encoders and decoders for the vhost-user header and every payload
 * layout. qemu/qemu docs/interop/vhost-user.rst "Message Specification".
 * The payloads that describe shared buffers and config space are in
 * ./codec-buffers.ts (re-exported here), the shared field checks in
 * ./codec-fields.ts.
 *
 * Decoders take exactly the payload bytes (the framing layer has already
 * checked the size against the request) and throw a {@link VirtioError} with
 * code `VIRTIO_ERR_VHOST_USER_PROTOCOL` if the length is wrong, since the
 * bytes come from the untrusted front-end. 64-bit fields are bigints.
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../errors.ts";
import {
  VHOST_MEMORY_BASELINE_NREGIONS,
  VHOST_USER_HDR_OFF_FLAGS,
  VHOST_USER_HDR_OFF_REQUEST,
  VHOST_USER_HDR_OFF_SIZE,
  VHOST_USER_HDR_SIZE,
  VHOST_USER_MEMORY_HDR_SIZE,
  VHOST_USER_MEM_REGION_OFF_GPA,
  VHOST_USER_MEM_REGION_OFF_MMAP_OFFSET,
  VHOST_USER_MEM_REGION_OFF_SIZE,
  VHOST_USER_MEM_REGION_OFF_UVA,
  VHOST_USER_MEM_REGION_SIZE,
  VHOST_USER_REPLY_FLAGS,
  VHOST_USER_SINGLE_MEM_REGION_SIZE,
  VHOST_USER_U64_SIZE,
  VHOST_USER_VRING_ADDR_OFF_AVAIL,
  VHOST_USER_VRING_ADDR_OFF_DESC,
  VHOST_USER_VRING_ADDR_OFF_FLAGS,
  VHOST_USER_VRING_ADDR_OFF_INDEX,
  VHOST_USER_VRING_ADDR_OFF_LOG,
  VHOST_USER_VRING_ADDR_OFF_USED,
  VHOST_USER_VRING_ADDR_SIZE,
  VHOST_USER_VRING_IDX_MASK,
  VHOST_USER_VRING_NOFD_MASK,
  VHOST_USER_VRING_STATE_SIZE,
  vhostUserMemoryTableSize,
} from "../spec/vhost-user.ts";
import { badPayload, expectSize, u32, u64, view } from "./codec-fields.ts";

export * from "./codec-buffers.ts";

/** The 12-byte message header. */
export interface VhostUserHeader {
  readonly request: number;
  readonly flags: number;
  /** Payload length in bytes (header not included). */
  readonly size: number;
}

/** "A vring state description" (SET_VRING_NUM/BASE/ENABLE, GET_VRING_BASE). */
export interface VringState {
  readonly index: number;
  readonly num: number;
}

/** "A vring address description" (SET_VRING_ADDR). Ring addresses are front-end virtual addresses. */
export interface VringAddr {
  readonly index: number;
  readonly flags: number;
  readonly desc: bigint;
  readonly used: bigint;
  readonly avail: bigint;
  /** Guest-physical address of the used ring, for dirty logging. */
  readonly log: bigint;
}

/** The u64 of SET_VRING_KICK/CALL/ERR: a vring index and the "no fd" flag. */
export interface VringFile {
  readonly index: number;
  /** Bit 8: no file descriptor in the ancillary data. */
  readonly noFd: boolean;
}

/** One memory region: guest address, size, front-end (user) address, mmap offset. */
export interface MemRegion {
  readonly guestPhysAddr: bigint;
  readonly memorySize: bigint;
  readonly userspaceAddr: bigint;
  readonly mmapOffset: bigint;
}

// ---------------------------------------------------------------- header

/**
 * Decodes a 12-byte header (`bytes` may be longer; only the first 12 are read).
 *
 * @throws {RangeError} if fewer than 12 bytes are given (a caller bug: the framing layer waits for 12).
 */
export function decodeHeader(bytes: Uint8Array): VhostUserHeader {
  if (bytes.byteLength < VHOST_USER_HDR_SIZE)
    throw new RangeError(`a header needs ${VHOST_USER_HDR_SIZE} bytes, got ${bytes.byteLength}`);
  const dv = view(bytes);
  return {
    request: dv.getUint32(VHOST_USER_HDR_OFF_REQUEST, true),
    flags: dv.getUint32(VHOST_USER_HDR_OFF_FLAGS, true),
    size: dv.getUint32(VHOST_USER_HDR_OFF_SIZE, true),
  };
}

/** Encodes a 12-byte header. @throws {RangeError} for a field that is not a u32. */
export function encodeHeader(h: VhostUserHeader): Uint8Array {
  const out = new Uint8Array(VHOST_USER_HDR_SIZE);
  const dv = view(out);
  dv.setUint32(VHOST_USER_HDR_OFF_REQUEST, u32("request", h.request), true);
  dv.setUint32(VHOST_USER_HDR_OFF_FLAGS, u32("flags", h.flags), true);
  dv.setUint32(VHOST_USER_HDR_OFF_SIZE, u32("size", h.size), true);
  return out;
}

/** Header + payload in one buffer (what one `sendmsg` carries). */
export function encodeMessage(request: number, flags: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(VHOST_USER_HDR_SIZE + payload.byteLength);
  out.set(encodeHeader({ request, flags, size: payload.byteLength }), 0);
  out.set(payload, VHOST_USER_HDR_SIZE);
  return out;
}

/**
 * A reply to `request`: its flags are exactly 0x5 (version 1 + REPLY). QEMU
 * rejects any other value, so NEED_REPLY is never echoed.
 */
export function encodeReply(request: number, payload: Uint8Array): Uint8Array {
  return encodeMessage(request, VHOST_USER_REPLY_FLAGS, payload);
}

// ---------------------------------------------------------------- u64

/** "A single 64-bit integer". */
export function decodeU64(bytes: Uint8Array): bigint {
  return expectSize("u64", bytes, VHOST_USER_U64_SIZE).getBigUint64(0, true);
}

export function encodeU64(v: bigint): Uint8Array {
  const out = new Uint8Array(VHOST_USER_U64_SIZE);
  view(out).setBigUint64(0, u64("u64", v), true);
  return out;
}

// ---------------------------------------------------------------- vring state / addr / file

export function decodeVringState(bytes: Uint8Array): VringState {
  const dv = expectSize("vring state", bytes, VHOST_USER_VRING_STATE_SIZE);
  return { index: dv.getUint32(0, true), num: dv.getUint32(4, true) };
}

export function encodeVringState(s: VringState): Uint8Array {
  const out = new Uint8Array(VHOST_USER_VRING_STATE_SIZE);
  const dv = view(out);
  dv.setUint32(0, u32("index", s.index), true);
  dv.setUint32(4, u32("num", s.num), true);
  return out;
}

/** Note the field order on the wire: desc, used, avail, log. */
export function decodeVringAddr(bytes: Uint8Array): VringAddr {
  const dv = expectSize("vring address", bytes, VHOST_USER_VRING_ADDR_SIZE);
  return {
    index: dv.getUint32(VHOST_USER_VRING_ADDR_OFF_INDEX, true),
    flags: dv.getUint32(VHOST_USER_VRING_ADDR_OFF_FLAGS, true),
    desc: dv.getBigUint64(VHOST_USER_VRING_ADDR_OFF_DESC, true),
    used: dv.getBigUint64(VHOST_USER_VRING_ADDR_OFF_USED, true),
    avail: dv.getBigUint64(VHOST_USER_VRING_ADDR_OFF_AVAIL, true),
    log: dv.getBigUint64(VHOST_USER_VRING_ADDR_OFF_LOG, true),
  };
}

export function encodeVringAddr(a: VringAddr): Uint8Array {
  const out = new Uint8Array(VHOST_USER_VRING_ADDR_SIZE);
  const dv = view(out);
  dv.setUint32(VHOST_USER_VRING_ADDR_OFF_INDEX, u32("index", a.index), true);
  dv.setUint32(VHOST_USER_VRING_ADDR_OFF_FLAGS, u32("flags", a.flags), true);
  dv.setBigUint64(VHOST_USER_VRING_ADDR_OFF_DESC, u64("desc", a.desc), true);
  dv.setBigUint64(VHOST_USER_VRING_ADDR_OFF_USED, u64("used", a.used), true);
  dv.setBigUint64(VHOST_USER_VRING_ADDR_OFF_AVAIL, u64("avail", a.avail), true);
  dv.setBigUint64(VHOST_USER_VRING_ADDR_OFF_LOG, u64("log", a.log), true);
  return out;
}

/**
 * The u64 of SET_VRING_KICK/CALL/ERR. Bits above 8 are not defined by the
 * spec; a non-zero value there is a protocol error.
 */
export function decodeVringFile(bytes: Uint8Array): VringFile {
  const v = decodeU64(bytes);
  const known = BigInt(VHOST_USER_VRING_IDX_MASK | VHOST_USER_VRING_NOFD_MASK);
  if ((v & ~known) !== 0n) {
    throw new VirtioError(
      ErrorCode.VHOST_USER_PROTOCOL,
      `vring file value 0x${v.toString(16)} has bits set above bit 8`,
      { value: v },
    );
  }
  const n = Number(v);
  return {
    index: n & VHOST_USER_VRING_IDX_MASK,
    noFd: (n & VHOST_USER_VRING_NOFD_MASK) !== 0,
  };
}

export function encodeVringFile(f: VringFile): Uint8Array {
  if (!Number.isInteger(f.index) || f.index < 0 || f.index > VHOST_USER_VRING_IDX_MASK)
    throw new RangeError(`vring file index must be in 0..255, got ${f.index}`);
  return encodeU64(BigInt(f.index | (f.noFd ? VHOST_USER_VRING_NOFD_MASK : 0)));
}

// ---------------------------------------------------------------- memory regions

function readRegion(dv: DataView, off: number): MemRegion {
  return {
    guestPhysAddr: dv.getBigUint64(off + VHOST_USER_MEM_REGION_OFF_GPA, true),
    memorySize: dv.getBigUint64(off + VHOST_USER_MEM_REGION_OFF_SIZE, true),
    userspaceAddr: dv.getBigUint64(off + VHOST_USER_MEM_REGION_OFF_UVA, true),
    mmapOffset: dv.getBigUint64(off + VHOST_USER_MEM_REGION_OFF_MMAP_OFFSET, true),
  };
}

function writeRegion(dv: DataView, off: number, r: MemRegion): void {
  dv.setBigUint64(off + VHOST_USER_MEM_REGION_OFF_GPA, u64("guestPhysAddr", r.guestPhysAddr), true);
  dv.setBigUint64(off + VHOST_USER_MEM_REGION_OFF_SIZE, u64("memorySize", r.memorySize), true);
  dv.setBigUint64(off + VHOST_USER_MEM_REGION_OFF_UVA, u64("userspaceAddr", r.userspaceAddr), true);
  dv.setBigUint64(
    off + VHOST_USER_MEM_REGION_OFF_MMAP_OFFSET,
    u64("mmapOffset", r.mmapOffset),
    true,
  );
}

/**
 * "Memory regions description" (SET_MEM_TABLE): `num regions` must be 1..8
 * and the payload must hold exactly that many regions.
 */
export function decodeMemoryTable(bytes: Uint8Array): MemRegion[] {
  if (bytes.byteLength < VHOST_USER_MEMORY_HDR_SIZE)
    throw badPayload("memory table", bytes.byteLength, `>= ${VHOST_USER_MEMORY_HDR_SIZE}`);
  const dv = view(bytes);
  const n = dv.getUint32(0, true);
  if (n === 0 || n > VHOST_MEMORY_BASELINE_NREGIONS) {
    throw new VirtioError(
      ErrorCode.VHOST_USER_PROTOCOL,
      `memory table has ${n} regions, expected 1..${VHOST_MEMORY_BASELINE_NREGIONS}`,
      { nregions: n },
    );
  }
  if (bytes.byteLength !== vhostUserMemoryTableSize(n))
    throw badPayload(
      `memory table (${n} regions)`,
      bytes.byteLength,
      String(vhostUserMemoryTableSize(n)),
    );
  const out: MemRegion[] = [];
  for (let i = 0; i < n; i++)
    out.push(readRegion(dv, VHOST_USER_MEMORY_HDR_SIZE + i * VHOST_USER_MEM_REGION_SIZE));
  return out;
}

/** @throws {RangeError} for 0 or more than 8 regions. */
export function encodeMemoryTable(regions: readonly MemRegion[]): Uint8Array {
  const n = regions.length;
  if (n === 0 || n > VHOST_MEMORY_BASELINE_NREGIONS)
    throw new RangeError(
      `a memory table holds 1..${VHOST_MEMORY_BASELINE_NREGIONS} regions, got ${n}`,
    );
  const out = new Uint8Array(vhostUserMemoryTableSize(n));
  const dv = view(out);
  dv.setUint32(0, n, true);
  regions.forEach((r, i) =>
    writeRegion(dv, VHOST_USER_MEMORY_HDR_SIZE + i * VHOST_USER_MEM_REGION_SIZE, r),
  );
  return out;
}

/** "Single memory region description" (ADD_MEM_REG / REM_MEM_REG): u64 padding + one region. */
export function decodeSingleMemRegion(bytes: Uint8Array): MemRegion {
  return readRegion(expectSize("memory region", bytes, VHOST_USER_SINGLE_MEM_REGION_SIZE), 8);
}

export function encodeSingleMemRegion(r: MemRegion): Uint8Array {
  const out = new Uint8Array(VHOST_USER_SINGLE_MEM_REGION_SIZE);
  writeRegion(view(out), 8, r);
  return out;
}

/**
 * Builders of NBD server messages for tests (replies, option replies, the
 * greeting). NetworkBlockDevice/nbd doc/proto.md "Simple reply message",
 * proto.md "Structured reply chunk message", proto.md "Fixed newstyle
 * negotiation". Not part of the package.
 *
 * @module
 */
import * as nbd from "../spec/nbd.ts";
import { writeU64 } from "./codec.ts";

export function simpleReply(
  cookie: number,
  error = 0,
  data: Uint8Array = new Uint8Array(0),
): Buffer {
  const b = Buffer.alloc(nbd.NBD_SIMPLE_REPLY_SIZE + data.length);
  b.writeUInt32BE(nbd.NBD_SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(error, 4);
  writeU64(b, cookie, 8);
  b.set(data, 16);
  return b;
}

export function chunk(cookie: number, type: number, flags: number, payload: Uint8Array): Buffer {
  const b = Buffer.alloc(nbd.NBD_STRUCTURED_REPLY_SIZE + payload.length);
  b.writeUInt32BE(nbd.NBD_STRUCTURED_REPLY_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  writeU64(b, cookie, 8);
  b.writeUInt32BE(payload.length, 16);
  b.set(payload, 20);
  return b;
}

export function dataChunk(cookie: number, offset: number, data: Uint8Array, done = false): Buffer {
  const p = Buffer.alloc(8 + data.length);
  writeU64(p, offset, 0);
  p.set(data, 8);
  return chunk(cookie, nbd.NBD_REPLY_TYPE_OFFSET_DATA, done ? nbd.NBD_REPLY_FLAG_DONE : 0, p);
}

export function holeChunk(cookie: number, offset: number, size: number, done = false): Buffer {
  const p = Buffer.alloc(12);
  writeU64(p, offset, 0);
  p.writeUInt32BE(size, 8);
  return chunk(cookie, nbd.NBD_REPLY_TYPE_OFFSET_HOLE, done ? nbd.NBD_REPLY_FLAG_DONE : 0, p);
}

export function errorChunk(cookie: number, error: number, message = "", done = true): Buffer {
  const m = Buffer.from(message);
  const p = Buffer.alloc(6 + m.length);
  p.writeUInt32BE(error, 0);
  p.writeUInt16BE(m.length, 4);
  m.copy(p, 6);
  return chunk(cookie, nbd.NBD_REPLY_TYPE_ERROR, done ? nbd.NBD_REPLY_FLAG_DONE : 0, p);
}

export function noneChunk(cookie: number): Buffer {
  return chunk(cookie, nbd.NBD_REPLY_TYPE_NONE, nbd.NBD_REPLY_FLAG_DONE, new Uint8Array(0));
}

/** NBDMAGIC, IHAVEOPT, handshake flags. */
export function greeting(flags = nbd.NBD_FLAG_FIXED_NEWSTYLE | nbd.NBD_FLAG_NO_ZEROES): Buffer {
  const b = Buffer.alloc(18);
  b.writeBigUInt64BE(nbd.NBDMAGIC, 0);
  b.writeBigUInt64BE(nbd.IHAVEOPT, 8);
  b.writeUInt16BE(flags, 16);
  return b;
}

export function optionReply(
  option: number,
  type: number,
  data: Uint8Array = new Uint8Array(0),
): Buffer {
  const b = Buffer.alloc(nbd.NBD_OPTION_REPLY_HEADER_SIZE + data.length);
  b.writeBigUInt64BE(nbd.NBD_OPT_REPLY_MAGIC, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(type, 12);
  b.writeUInt32BE(data.length, 16);
  b.set(data, 20);
  return b;
}

export function infoExport(size: number, flags: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt16BE(nbd.NBD_INFO_EXPORT, 0);
  writeU64(b, size, 2);
  b.writeUInt16BE(flags, 10);
  return b;
}

export function infoBlockSize(min: number, pref: number, max: number): Buffer {
  const b = Buffer.alloc(14);
  b.writeUInt16BE(nbd.NBD_INFO_BLOCK_SIZE, 0);
  b.writeUInt32BE(min, 2);
  b.writeUInt32BE(pref, 6);
  b.writeUInt32BE(max, 10);
  return b;
}

/**
 * NBD messages the client sends, and the byte queue the readers share. Pure:
 * no I/O. NetworkBlockDevice/nbd doc/proto.md "Request message", proto.md
 * "Newstyle negotiation" (option requests), proto.md "Option types"
 * (NBD_OPT_GO's data).
 *
 * A cookie is the client's number for a request in flight; it goes on the
 * wire as 64 bits (high word first) and is at most 2^53 − 1 here, so a reply
 * naming a larger cookie is simply unknown.
 *
 * @module
 */
import {
  IHAVEOPT,
  NBD_OPTION_HEADER_SIZE,
  NBD_REQUEST_MAGIC,
  NBD_REQUEST_SIZE,
} from "../spec/nbd.ts";

/** A request header (proto.md "Request message"). */
export interface NbdRequestHeader {
  readonly flags: number;
  readonly type: number;
  readonly cookie: number;
  readonly offset: number;
  readonly length: number;
}

/** Writes a safe non-negative integer as a big-endian u64. */
export function writeU64(buf: Buffer, value: number, at: number): void {
  buf.writeUInt32BE(Math.floor(value / 2 ** 32), at);
  buf.writeUInt32BE(value >>> 0, at + 4);
}

/** Reads a big-endian u64; values above 2^53 − 1 come back as `Infinity`. */
export function readU64(buf: Uint8Array, at: number): number {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const hi = b.readUInt32BE(at);
  const lo = b.readUInt32BE(at + 4);
  return hi >= 2 ** 21 ? Infinity : hi * 2 ** 32 + lo;
}

/** The 28 header bytes of a request (its WRITE payload follows separately). */
export function encodeRequest(h: NbdRequestHeader): Buffer {
  const b = Buffer.allocUnsafe(NBD_REQUEST_SIZE);
  b.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
  b.writeUInt16BE(h.flags, 4);
  b.writeUInt16BE(h.type, 6);
  writeU64(b, h.cookie, 8);
  writeU64(b, h.offset, 16);
  b.writeUInt32BE(h.length, 24);
  return b;
}

/** An option request: IHAVEOPT, option, length, data (proto.md "Newstyle negotiation"). */
export function encodeOption(option: number, data: Uint8Array = new Uint8Array(0)): Buffer {
  const b = Buffer.allocUnsafe(NBD_OPTION_HEADER_SIZE + data.length);
  b.writeBigUInt64BE(IHAVEOPT, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(data.length, 12);
  b.set(data, NBD_OPTION_HEADER_SIZE);
  return b;
}

/** NBD_OPT_GO / NBD_OPT_INFO data: name length, name, count, info requests. */
export function encodeGoData(exportName: string, infos: readonly number[]): Buffer {
  const name = Buffer.from(exportName, "utf8");
  const b = Buffer.allocUnsafe(4 + name.length + 2 + 2 * infos.length);
  b.writeUInt32BE(name.length, 0);
  name.copy(b, 4);
  b.writeUInt16BE(infos.length, 4 + name.length);
  infos.forEach((info, i) => b.writeUInt16BE(info, 6 + name.length + 2 * i));
  return b;
}

/**
 * Text from the server (an error message, an export description) made safe
 * for one log line: control characters replaced, at most `max` characters.
 */
export function serverText(bytes: Uint8Array, max = 200): string {
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8");
  // eslint-disable-next-line no-control-regex
  const clean = text.replace(/[\u0000-\u001f\u007f-\u009f]/g, "?");
  return clean.length > max ? `${clean.slice(0, max)}…` : clean;
}

/**
 * Received bytes not consumed yet. Bytes are appended as the socket delivers
 * them and taken from the front; `take` copies only when a field spans two
 * deliveries.
 */
export class ByteQueue {
  #chunks: Buffer[] = [];
  #head = 0;
  #length = 0;

  get length(): number {
    return this.#length;
  }

  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.#chunks.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    this.#length += chunk.length;
  }

  /** Up to `max` bytes from the front without copying (a view of one delivery). */
  takeUpTo(max: number): Buffer {
    const first = this.#chunks[0];
    if (first === undefined || max <= 0) return Buffer.alloc(0);
    const n = Math.min(max, first.length - this.#head);
    const out = first.subarray(this.#head, this.#head + n);
    this.#advance(n);
    return out;
  }

  /** Exactly `n` bytes (the caller checked `length >= n`). */
  take(n: number): Buffer {
    const first = this.#chunks[0];
    if (first !== undefined && first.length - this.#head >= n) return this.takeUpTo(n);
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const part = this.takeUpTo(n - filled);
      if (part.length === 0) throw new RangeError("ByteQueue.take past the end");
      part.copy(out, filled);
      filled += part.length;
    }
    return out;
  }

  /** A copy of the first `n` bytes, not consumed (the caller checked `length >= n`). */
  peek(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    let head = this.#head;
    for (const c of this.#chunks) {
      if (filled === n) break;
      const k = Math.min(n - filled, c.length - head);
      c.copy(out, filled, head, head + k);
      filled += k;
      head = 0;
    }
    return out;
  }

  /** Everything left, as one buffer (hands bytes from one reader to the next). */
  drain(): Buffer {
    return this.take(this.#length);
  }

  #advance(n: number): void {
    this.#head += n;
    this.#length -= n;
    if (this.#head === this.#chunks[0]!.length) {
      this.#chunks.shift();
      this.#head = 0;
    }
  }
}

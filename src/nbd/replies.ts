/**
 * The transmission-phase reply parser: bytes from the server in, answers to
 * requests out. Pure: no I/O, no timers. NetworkBlockDevice/nbd doc/proto.md
 * "Simple reply message", proto.md "Structured reply chunk message", proto.md
 * "Structured reply types", proto.md "Request types" (NBD_CMD_READ).
 *
 * Every field is untrusted. A reply that breaks the protocol throws a
 * `VirtioError` `NBD_PROTOCOL` (the connection is then closed; the parser
 * refuses further bytes): a bad magic; a cookie not in flight; a structured
 * chunk without negotiation, or a simple reply to NBD_CMD_READ with it
 * ("MUST NOT use a simple reply for NBD_CMD_READ"); a chunk length the type
 * does not allow; content chunks for other commands, outside the request or
 * overlapping earlier ones ("MUST NOT send chunks that describe data outside
 * the offset and length of the request"); a zero error value in an error
 * chunk ("MUST be nonzero"); a successful read that did not cover the whole
 * request; an unknown non-error chunk type ("it MUST initiate a hard
 * disconnect"); more than {@link MAX_CHUNKS_PER_REPLY} chunks for one request.
 *
 * An error value the server reports is an answer, not a violation: the
 * request completes with it (an unknown value counts as NBD_EINVAL: "The
 * client SHOULD treat an unexpected error value as if it had been
 * `NBD_EINVAL`"). Unknown error chunk types error the reply and the stream
 * goes on ("MUST consider the current reply as errored, but MAY continue").
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../errors.ts";
import * as nbd from "../spec/nbd.ts";
import { ByteQueue, readU64, serverText } from "./codec.ts";

/** Chunks accepted for one structured reply; a server sending more is cut off. */
export const MAX_CHUNKS_PER_REPLY = 1 << 16;
/** Largest error chunk payload: error, message length, a 4096-byte message, an offset. */
const MAX_ERROR_CHUNK = 6 + nbd.NBD_MAX_STRING_LENGTH + 8;
const KNOWN_ERRORS = new Set([1, 5, 12, 22, 28, 75, 95, 108]);

/** What the parser needs to know about a request in flight. */
export interface NbdPendingRequest {
  readonly type: number;
  readonly offset: number;
  readonly length: number;
}

/** An error value reported by the server. */
export interface NbdServerError {
  /** The spec's error value (an unknown one is mapped to NBD_EINVAL). */
  readonly error: number;
  /** The value as sent. */
  readonly raw: number;
  /** The server's message, made safe for a log line ("" if none). */
  readonly message: string;
}

/** Where the parser delivers answers. */
export interface NbdReplySink {
  /** The request in flight with this cookie, or undefined. */
  lookup(cookie: number): NbdPendingRequest | undefined;
  /** `bytes` are the read's data at byte `at` of the request (valid only during the call). */
  data(cookie: number, at: number, bytes: Uint8Array): void;
  /** Bytes [at, at + length) of the read read as zeroes. */
  zero(cookie: number, at: number, length: number): void;
  /** The request is answered: `error` undefined on success. */
  done(cookie: number, error: NbdServerError | undefined): void;
}

/** Structured-reply bookkeeping of one request (ranges covered so far, sorted, merged). */
interface ReplyState {
  starts: number[];
  ends: number[];
  covered: number;
  chunks: number;
  error: NbdServerError | undefined;
}

type Step =
  | { readonly k: "header" }
  | { readonly k: "fixed"; readonly need: number; readonly then: (p: Buffer) => void }
  | {
      readonly k: "stream";
      readonly cookie: number;
      at: number;
      left: number;
      readonly then: () => void;
    };

const HEADER: Step = { k: "header" };

/** Maps an error value from the wire to a server error. */
export function serverError(raw: number, message = ""): NbdServerError {
  return { error: KNOWN_ERRORS.has(raw) ? raw : nbd.NBD_EINVAL, raw, message };
}

/**
 * Parses replies for one connection.
 *
 * @example
 * ```ts
 * const parser = new NbdReplyParser(sink, { structured: true });
 * socket.on("data", (b) => parser.feed(b)); // throws VirtioError NBD_PROTOCOL on a bad reply
 * ```
 */
export class NbdReplyParser {
  readonly #sink: NbdReplySink;
  readonly #structured: boolean;
  readonly #queue = new ByteQueue();
  readonly #replies = new Map<number, ReplyState>();
  #step: Step = HEADER;
  #failed: VirtioError | undefined;

  constructor(sink: NbdReplySink, options: { readonly structured: boolean }) {
    this.#sink = sink;
    this.#structured = options.structured;
  }

  /** Bytes received but not parsed yet (a partial message). */
  get buffered(): number {
    return this.#queue.length;
  }

  /** Parses what it can of `bytes` (and earlier leftovers); throws on a violation. */
  feed(bytes: Uint8Array): void {
    if (this.#failed) throw this.#failed;
    this.#queue.push(bytes);
    try {
      while (this.#advance());
    } catch (e) {
      this.#failed =
        e instanceof VirtioError ? e : violation(`parser failure: ${(e as Error).message}`);
      throw this.#failed;
    }
  }

  #advance(): boolean {
    const s = this.#step;
    if (s.k === "stream") return this.#stream(s);
    if (s.k === "fixed") {
      if (this.#queue.length < s.need) return false;
      this.#step = HEADER;
      s.then(this.#queue.take(s.need));
      return true;
    }
    if (this.#queue.length < 4) return false;
    const magic = this.#queue.peek(4).readUInt32BE(0);
    if (magic === nbd.NBD_SIMPLE_REPLY_MAGIC) return this.#simple();
    if (magic === nbd.NBD_STRUCTURED_REPLY_MAGIC) return this.#chunk();
    throw violation(`bad reply magic 0x${magic.toString(16)}`, { magic });
  }

  #stream(s: Extract<Step, { k: "stream" }>): boolean {
    if (this.#queue.length === 0) return false;
    const part = this.#queue.takeUpTo(s.left);
    this.#sink.data(s.cookie, s.at, part);
    s.at += part.length;
    s.left -= part.length;
    if (s.left === 0) {
      this.#step = HEADER;
      s.then();
    }
    return true;
  }

  #pending(cookie: number): NbdPendingRequest {
    const p = Number.isFinite(cookie) ? this.#sink.lookup(cookie) : undefined;
    if (!p) throw violation(`reply for cookie ${cookie}, which is not in flight`, { cookie });
    return p;
  }

  #simple(): boolean {
    if (this.#queue.length < nbd.NBD_SIMPLE_REPLY_SIZE) return false;
    const h = this.#queue.take(nbd.NBD_SIMPLE_REPLY_SIZE);
    const raw = h.readUInt32BE(4);
    const cookie = readU64(h, 8);
    const p = this.#pending(cookie);
    if (this.#replies.has(cookie))
      throw violation(`simple reply to cookie ${cookie} in the middle of its structured reply`);
    // proto.md "Structured reply chunk message": the server "MUST NOT use a simple reply for NBD_CMD_READ".
    if (this.#structured && p.type === nbd.NBD_CMD_READ)
      throw violation(
        `simple reply to NBD_CMD_READ cookie ${cookie} after structured replies were negotiated`,
      );
    if (raw !== 0) this.#sink.done(cookie, serverError(raw));
    else if (p.type !== nbd.NBD_CMD_READ || p.length === 0) this.#sink.done(cookie, undefined);
    else {
      const then = (): void => this.#sink.done(cookie, undefined);
      this.#step = { k: "stream", cookie, at: 0, left: p.length, then };
    }
    return true;
  }

  #chunk(): boolean {
    if (this.#queue.length < nbd.NBD_STRUCTURED_REPLY_SIZE) return false;
    const h = this.#queue.take(nbd.NBD_STRUCTURED_REPLY_SIZE);
    const flags = h.readUInt16BE(4);
    const type = h.readUInt16BE(6);
    const cookie = readU64(h, 8);
    const length = h.readUInt32BE(16);
    // proto.md "Structured reply chunk message": "The server MUST NOT send this reply type unless the client has successfully negotiated structured replies".
    if (!this.#structured)
      throw violation("structured reply chunk without NBD_OPT_STRUCTURED_REPLY");
    const p = this.#pending(cookie);
    const st = this.#state(cookie);
    if (++st.chunks > MAX_CHUNKS_PER_REPLY)
      throw violation(`more than ${MAX_CHUNKS_PER_REPLY} chunks for cookie ${cookie}`);
    const done = (flags & nbd.NBD_REPLY_FLAG_DONE) !== 0;
    const finish = (): void => (done ? this.#finish(cookie, p, st) : undefined);
    if (type === nbd.NBD_REPLY_TYPE_NONE) this.#none(cookie, length, done, finish);
    else if (type & nbd.NBD_REPLY_TYPE_ERROR_BIT) this.#error(cookie, p, st, type, length, finish);
    else if (p.type !== nbd.NBD_CMD_READ)
      throw violation(`chunk type ${type} for ${nbd.nbdCommandName(p.type)} cookie ${cookie}`);
    else if (type === nbd.NBD_REPLY_TYPE_OFFSET_DATA) this.#data(cookie, p, st, length, finish);
    else if (type === nbd.NBD_REPLY_TYPE_OFFSET_HOLE) this.#hole(cookie, p, st, length, finish);
    else throw violation(`unknown chunk type ${type} for cookie ${cookie}`, { type });
    return true;
  }

  #state(cookie: number): ReplyState {
    let st = this.#replies.get(cookie);
    if (!st) {
      st = { starts: [], ends: [], covered: 0, chunks: 0, error: undefined };
      this.#replies.set(cookie, st);
    }
    return st;
  }

  #none(cookie: number, length: number, done: boolean, finish: () => void): void {
    // proto.md "Structured reply types": NBD_REPLY_TYPE_NONE "length MUST be 0" and "MUST always be used with the NBD_REPLY_FLAG_DONE bit set".
    if (length !== 0)
      throw violation(`NBD_REPLY_TYPE_NONE with length ${length} (cookie ${cookie})`);
    if (!done)
      throw violation(`NBD_REPLY_TYPE_NONE without NBD_REPLY_FLAG_DONE (cookie ${cookie})`);
    finish();
  }

  #data(
    cookie: number,
    p: NbdPendingRequest,
    st: ReplyState,
    length: number,
    finish: () => void,
  ): void {
    // "length MUST be at least 9"; the data "MUST lie within the bounds of the original offset and length".
    if (length < 9 || length - 8 > p.length)
      throw violation(
        `NBD_REPLY_TYPE_OFFSET_DATA length ${length} for a ${p.length}-byte read (cookie ${cookie})`,
      );
    this.#fixed(8, (b) => {
      const at = this.#claim(cookie, p, st, readU64(b, 0), length - 8);
      const then = (): void => finish();
      this.#step = { k: "stream", cookie, at, left: length - 8, then };
    });
  }

  #hole(
    cookie: number,
    p: NbdPendingRequest,
    st: ReplyState,
    length: number,
    finish: () => void,
  ): void {
    // "length MUST be exactly 12"; the hole size is "MUST be nonzero".
    if (length !== 12)
      throw violation(`NBD_REPLY_TYPE_OFFSET_HOLE length ${length} (cookie ${cookie})`);
    this.#fixed(12, (b) => {
      const size = b.readUInt32BE(8);
      if (size === 0) throw violation(`NBD_REPLY_TYPE_OFFSET_HOLE of size 0 (cookie ${cookie})`);
      const at = this.#claim(cookie, p, st, readU64(b, 0), size);
      this.#sink.zero(cookie, at, size);
      finish();
    });
  }

  #error(
    cookie: number,
    p: NbdPendingRequest,
    st: ReplyState,
    type: number,
    length: number,
    finish: () => void,
  ): void {
    const isOffset = type === nbd.NBD_REPLY_TYPE_ERROR_OFFSET;
    const min = isOffset ? 14 : 6;
    if (length < min || length > MAX_ERROR_CHUNK)
      throw violation(`error chunk type ${type} with length ${length} (cookie ${cookie})`);
    this.#fixed(length, (b) => {
      const raw = b.readUInt32BE(0);
      const msgLen = b.readUInt16BE(4);
      // "error (MUST be nonzero)"; "message length (no more than header length - 6)" (- 14 with an offset).
      if (raw === 0) throw violation(`error chunk with error value 0 (cookie ${cookie})`);
      if (msgLen > length - min)
        throw violation(`error chunk message of ${msgLen} bytes in a ${length}-byte chunk`);
      if (isOffset) {
        const off = readU64(b, length - 8);
        if (!(off >= p.offset && off < p.offset + Math.max(p.length, 1)))
          throw violation(
            `NBD_REPLY_TYPE_ERROR_OFFSET at ${off}, outside the request (cookie ${cookie})`,
          );
      }
      st.error ??= serverError(raw, serverText(b.subarray(6, 6 + msgLen)));
      finish();
    });
  }

  #fixed(need: number, then: (p: Buffer) => void): void {
    this.#step = { k: "fixed", need, then };
  }

  /** Records [offset, offset + size) as covered; returns its position in the request. */
  #claim(
    cookie: number,
    p: NbdPendingRequest,
    st: ReplyState,
    offset: number,
    size: number,
  ): number {
    const at = offset - p.offset;
    if (!(at >= 0 && at + size <= p.length))
      throw violation(
        `chunk [${offset}, +${size}) outside the request [${p.offset}, +${p.length}) (cookie ${cookie})`,
      );
    insertRange(st, at, at + size, cookie);
    st.covered += size;
    return at;
  }

  #finish(cookie: number, p: NbdPendingRequest, st: ReplyState): void {
    this.#replies.delete(cookie);
    if (!st.error && p.type === nbd.NBD_CMD_READ && st.covered !== p.length)
      throw violation(
        `read reply done after ${st.covered} of ${p.length} bytes (cookie ${cookie})`,
      );
    this.#sink.done(cookie, st.error);
  }
}

/** Inserts [start, end) into the sorted, merged ranges; throws if it overlaps one. */
function insertRange(st: ReplyState, start: number, end: number, cookie: number): void {
  let lo = 0;
  let hi = st.starts.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (st.starts[mid]! < start) lo = mid + 1;
    else hi = mid;
  }
  // proto.md "Structured reply types": content "MUST NOT overlap with the bounds of any earlier content chunk".
  if ((lo > 0 && st.ends[lo - 1]! > start) || (lo < st.starts.length && st.starts[lo]! < end))
    throw violation(`chunk [+${start}, +${end}) overlaps an earlier chunk (cookie ${cookie})`);
  const joinLeft = lo > 0 && st.ends[lo - 1] === start;
  const joinRight = lo < st.starts.length && st.starts[lo] === end;
  if (joinLeft && joinRight) {
    st.ends[lo - 1] = st.ends[lo]!;
    st.starts.splice(lo, 1);
    st.ends.splice(lo, 1);
  } else if (joinLeft) st.ends[lo - 1] = end;
  else if (joinRight) st.starts[lo] = start;
  else {
    st.starts.splice(lo, 0, start);
    st.ends.splice(lo, 0, end);
  }
}

function violation(why: string, details: Record<string, number> = {}): VirtioError {
  return new VirtioError(ErrorCode.NBD_PROTOCOL, `NBD server broke the protocol: ${why}`, details);
}

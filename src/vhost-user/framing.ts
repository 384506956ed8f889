/**
 * Incremental vhost-user message reader: bytes and file descriptors arrive in
 * arbitrary fragments (one `recvmsg` each); complete, validated messages come
 * out. qemu/qemu docs/interop/vhost-user.rst "Message Specification",
 * docs/conformance.md "vhost-user frontend violations".
 *
 * Which message owns the fds of a fragment: a Unix stream socket never joins
 * data written after an SCM_RIGHTS-carrying write into the same `recvmsg`
 * (Linux stops reading after the skb that carries fds), and a front-end
 * writes each message, fds included, with one `sendmsg`. So the fds received
 * with a fragment belong to the message holding the fragment's last byte.
 *
 * Validation, in the order rust-vmm's vhost crate uses (header, size, fds):
 * version bits must be 1, REPLY must be clear, no undefined flag bits, the
 * request must be supported, the payload at most {@link VHOST_USER_MAX_PAYLOAD}
 * bytes and of the size the request needs, and the fd count what the request
 * carries. Any violation throws a {@link VirtioError}
 * (`VIRTIO_ERR_VHOST_USER_PROTOCOL`) after closing every fd the reader holds;
 * the reader is then dead and the connection must close.
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../errors.ts";
import {
  VHOST_MEMORY_BASELINE_NREGIONS,
  VHOST_USER_HDR_SIZE,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_REPLY_MASK,
  VHOST_USER_VERSION,
  VHOST_USER_VERSION_MASK,
  VHOST_USER_VRING_NOFD_MASK,
  vhostUserRequestName,
} from "../spec/vhost-user.ts";
import { decodeHeader, type VhostUserHeader } from "./codec.ts";
import {
  VHOST_USER_REQUEST_RULES,
  checkPayloadFields,
  checkPayloadSize,
  type RequestRule,
} from "./request-rules.ts";

/**
 * Payload cap: any message announcing more is refused before its payload is
 * read. The largest legal payload is a 256-byte GET_CONFIG (268 bytes); 4 KiB
 * leaves room and bounds what a hostile front-end can make us buffer.
 */
export const VHOST_USER_MAX_PAYLOAD = 4096;

/** Most fds one message may carry (QEMU's VHOST_MEMORY_BASELINE_NREGIONS). */
export const VHOST_USER_MAX_FDS = VHOST_MEMORY_BASELINE_NREGIONS;

/** A complete, validated front-end message. */
export interface VhostUserMessage {
  readonly request: number;
  readonly flags: number;
  /** Exactly `size` payload bytes (a copy owned by the message). */
  readonly payload: Uint8Array;
  /**
   * The fds that came with the message, in order. The receiver owns them:
   * whoever keeps one removes it from this array (see {@link takeFd}); the
   * dispatcher closes whatever is left.
   */
  readonly fds: number[];
}

/** Removes and returns the first fd of `msg` (ownership moves to the caller). */
export function takeFd(msg: VhostUserMessage): number {
  const fd = msg.fds.shift();
  if (fd === undefined) throw new RangeError(`${vhostUserRequestName(msg.request)} has no fd left`);
  return fd;
}

/** True if the message asks for a REPLY_ACK (flags bit 3). */
export function needsReply(msg: VhostUserMessage): boolean {
  return (msg.flags & VHOST_USER_NEED_REPLY_MASK) !== 0;
}

const KNOWN_FLAGS = VHOST_USER_VERSION_MASK | VHOST_USER_REPLY_MASK | VHOST_USER_NEED_REPLY_MASK;

function protocolError(
  message: string,
  details: Record<string, number | string | bigint | boolean>,
): VirtioError {
  return new VirtioError(ErrorCode.VHOST_USER_PROTOCOL, message, details);
}

/** Checks a header; returns the request's rule. */
function validateHeader(h: VhostUserHeader, rules: ReadonlyMap<number, RequestRule>): RequestRule {
  const name = vhostUserRequestName(h.request);
  const details = { request: h.request, flags: h.flags, size: h.size };
  if ((h.flags & VHOST_USER_VERSION_MASK) !== VHOST_USER_VERSION)
    throw protocolError(
      `${name}: version bits ${h.flags & VHOST_USER_VERSION_MASK}, expected 1`,
      details,
    );
  if ((h.flags & VHOST_USER_REPLY_MASK) !== 0)
    throw protocolError(`${name}: REPLY flag set on a request`, details);
  if ((h.flags & ~KNOWN_FLAGS) !== 0)
    throw protocolError(
      `${name}: undefined flag bits 0x${(h.flags & ~KNOWN_FLAGS).toString(16)}`,
      details,
    );
  const rule = rules.get(h.request);
  if (rule === undefined) throw protocolError(`${name}: unknown or unsupported request`, details);
  if (h.size > VHOST_USER_MAX_PAYLOAD)
    throw protocolError(
      `${name}: payload of ${h.size} bytes exceeds ${VHOST_USER_MAX_PAYLOAD}`,
      details,
    );
  const want = checkPayloadSize(rule.payload, h.size);
  if (want !== undefined)
    throw protocolError(`${name}: payload of ${h.size} bytes, expected ${want}`, details);
  return rule;
}

/** How many fds a complete message must carry. */
function expectedFds(rule: RequestRule, payload: Uint8Array): readonly number[] {
  const dv = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  switch (rule.fds) {
    case "none":
      return [0];
    case "one":
      return [1];
    case "at-most-one":
      return [0, 1];
    case "regions":
      return [dv.getUint32(0, true)];
    case "vring-file":
      return [(dv.getUint32(0, true) & VHOST_USER_VRING_NOFD_MASK) !== 0 ? 0 : 1];
  }
}

/**
 * The reader. Not reentrant; one per connection.
 *
 * @example
 * ```ts
 * const reader = new MessageReader((fd) => native.close(fd));
 * socket.onData((bytes, fds) => {
 *   for (const msg of reader.push(bytes, fds)) dispatch(msg);
 * });
 * ```
 */
export class MessageReader {
  readonly #closeFd: (fd: number) => void;
  readonly #rules: ReadonlyMap<number, RequestRule>;
  readonly #hdr = new Uint8Array(VHOST_USER_HDR_SIZE);
  #hdrFill = 0;
  #header: VhostUserHeader | undefined;
  #payload = new Uint8Array(0);
  #payloadFill = 0;
  /** fds of the message being assembled. */
  #fds: number[] = [];
  #dead = false;

  /**
   * @param closeFd closes an fd the reader owns (on errors and {@link dispose}).
   * @param rules the supported requests (default: every request the back-end handles).
   */
  constructor(
    closeFd: (fd: number) => void,
    rules: ReadonlyMap<number, RequestRule> = VHOST_USER_REQUEST_RULES,
  ) {
    this.#closeFd = closeFd;
    this.#rules = rules;
  }

  /** True once a violation was found or {@link dispose} was called. */
  get dead(): boolean {
    return this.#dead;
  }

  /** True if part of a message has been received. */
  get hasPartialMessage(): boolean {
    return this.#hdrFill > 0;
  }

  /**
   * Feeds one received fragment. Takes ownership of `fds` in every case.
   * Returns the messages it completed (their fds now belong to the caller).
   *
   * @throws {VirtioError} `VIRTIO_ERR_VHOST_USER_PROTOCOL` on a violation; every fd
   *   the reader held (including `fds` and those of messages completed by this call)
   *   has been closed.
   * @throws {Error} if the reader is dead (after closing `fds`).
   */
  push(bytes: Uint8Array, fds: readonly number[] = []): VhostUserMessage[] {
    const done: VhostUserMessage[] = [];
    if (this.#dead) {
      fds.forEach((fd) => this.#safeClose(fd));
      throw new Error("vhost-user message reader is closed");
    }
    try {
      if (fds.length > 0 && bytes.byteLength === 0)
        throw protocolError("file descriptors received without data", { fds: fds.length });
      this.#consume(bytes, done);
      this.#assignFds(fds, done);
      for (const m of done) this.#checkComplete(m);
      return done;
    } catch (e) {
      this.#fail(fds, done);
      throw e;
    }
  }

  /** Closes the fds of a partially received message and kills the reader (EOF, teardown). */
  dispose(): void {
    if (this.#dead) return;
    this.#dead = true;
    this.#fds.forEach((fd) => this.#safeClose(fd));
    this.#fds = [];
  }

  #consume(bytes: Uint8Array, done: VhostUserMessage[]): void {
    let off = 0;
    while (off < bytes.byteLength) {
      if (this.#header === undefined) {
        const n = Math.min(VHOST_USER_HDR_SIZE - this.#hdrFill, bytes.byteLength - off);
        this.#hdr.set(bytes.subarray(off, off + n), this.#hdrFill);
        this.#hdrFill += n;
        off += n;
        if (this.#hdrFill < VHOST_USER_HDR_SIZE) break;
        const h = decodeHeader(this.#hdr);
        validateHeader(h, this.#rules);
        this.#header = h;
        this.#payload = new Uint8Array(h.size);
        this.#payloadFill = 0;
      } else {
        const n = Math.min(this.#payload.byteLength - this.#payloadFill, bytes.byteLength - off);
        this.#payload.set(bytes.subarray(off, off + n), this.#payloadFill);
        this.#payloadFill += n;
        off += n;
      }
      if (this.#header !== undefined && this.#payloadFill === this.#payload.byteLength)
        done.push(this.#complete(this.#header));
    }
  }

  #complete(h: VhostUserHeader): VhostUserMessage {
    const msg = { request: h.request, flags: h.flags, payload: this.#payload, fds: this.#fds };
    this.#fds = [];
    this.#header = undefined;
    this.#hdrFill = 0;
    this.#payload = new Uint8Array(0);
    this.#payloadFill = 0;
    return msg;
  }

  /** The fragment's fds go to the message holding its last byte. */
  #assignFds(fds: readonly number[], done: VhostUserMessage[]): void {
    if (fds.length === 0) return;
    const owner = this.#hdrFill > 0 ? this.#fds : done[done.length - 1]!.fds;
    owner.push(...fds);
    if (owner.length > VHOST_USER_MAX_FDS)
      throw protocolError(`${owner.length} fds for one message, at most ${VHOST_USER_MAX_FDS}`, {
        fds: owner.length,
      });
  }

  #checkComplete(m: VhostUserMessage): void {
    const rule = this.#rules.get(m.request)!;
    const name = vhostUserRequestName(m.request);
    const bad = checkPayloadFields(rule.payload, m.payload);
    if (bad !== undefined)
      throw protocolError(`${name}: ${bad}`, {
        request: m.request,
        flags: m.flags,
        size: m.payload.byteLength,
      });
    const allowed = expectedFds(rule, m.payload);
    if (!allowed.includes(m.fds.length)) {
      throw protocolError(`${name}: ${m.fds.length} fds, expected ${allowed.join(" or ")}`, {
        request: m.request,
        flags: m.flags,
        fds: m.fds.length,
      });
    }
  }

  #fail(fds: readonly number[], done: VhostUserMessage[]): void {
    this.#dead = true;
    const owned = new Set<number>([...this.#fds, ...fds, ...done.flatMap((m) => m.fds)]);
    this.#fds = [];
    for (const m of done) m.fds.length = 0;
    owned.forEach((fd) => this.#safeClose(fd));
  }

  #safeClose(fd: number): void {
    try {
      this.#closeFd(fd);
    } catch {
      // Closing is best effort: an fd that cannot be closed is already gone.
    }
  }
}

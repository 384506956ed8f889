/**
 * The front-end's control channel: requests go out one at a time, each reply
 * is validated strictly before anything uses it. qemu/qemu
 * docs/interop/vhost-user.rst "Message Specification" (header, reply flag),
 * "Communication" (which requests have replies), "REPLY_ACK";
 * docs/vhost-user.md
 *
 * The back-end is untrusted. What a reply must look like is
 * ./frontend-reply.ts; a reply must also carry no fds (a GET_INFLIGHT_FD
 * reply exactly one, with its header), and bytes that arrive
 * while no reply is awaited are a violation too. Any violation closes the
 * channel with a {@link VirtioError} `VIRTIO_ERR_VHOST_USER_PROTOCOL`: the
 * request in flight and every queued one reject with it, and so does every
 * later request. A refusal (a REPLY_ACK with a non-zero status) is not a
 * violation: that request rejects with `VIRTIO_ERR_VHOST_USER_REFUSED` and
 * the channel stays open.
 *
 * NEED_REPLY: once REPLY_ACK is negotiated, libblkio sets it on every
 * request. Here it is set on every request that has no reply body of its own
 * ("a reply ... is sent only for the body"): on GET_* requests it asks for
 * nothing, and libvhost-user echoes it into the GET_CONFIG reply (flags 0xd,
 * observed with qemu-storage-daemon 7.2), which the exact-0x5 rule refuses.
 *
 * Only one request is outstanding at a time (as QEMU and libblkio do): the
 * next is sent once the previous one's reply arrived (or at once after a
 * request that expects no reply).
 *
 * @module
 */
import { ErrorCode, VirtioError, isVirtioError } from "../errors.ts";
import {
  VHOST_USER_HDR_SIZE,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_VERSION,
  vhostUserRequestName,
} from "../spec/vhost-user.ts";
import { encodeMessage } from "./codec.ts";
import {
  checkReplyHeader,
  decodeReply,
  protocolError,
  replyTakesFd,
  type Expect,
  type ReplyBody,
  type ReplyValue,
} from "./frontend-reply.ts";
import type { FdCloser, VhostUserSocket } from "./host.ts";

export type { InflightReply, ReplyBody, ReplyValue } from "./frontend-reply.ts";

/** Options of {@link ControlChannel}. */
export interface ControlChannelOptions {
  /**
   * Milliseconds to wait for a reply before the back-end counts as hung and
   * the channel closes with `VIRTIO_ERR_VHOST_USER_PROTOCOL`; 0 waits forever.
   * Default 30 000.
   */
  readonly replyTimeoutMs?: number;
  /** Closes fds the back-end sent where none belong. */
  readonly fds: FdCloser;
  /** Called once when the channel closes (the error says why). */
  readonly onClose?: (error: VirtioError) => void;
}

interface Op {
  readonly request: number;
  readonly bytes: Uint8Array;
  readonly fds: readonly number[];
  readonly expect: Expect;
  readonly resolve: (v: unknown) => void;
  readonly reject: (e: VirtioError) => void;
}

const DEFAULT_REPLY_TIMEOUT_MS = 30_000;

/**
 * A request/response channel over a connected {@link VhostUserSocket}. Owns
 * the socket from construction on.
 *
 * @example
 * ```ts
 * const ch = new ControlChannel(new NativeSocket(connectUnix(path)), { fds });
 * const features = await ch.request(R.GET_FEATURES, new Uint8Array(0), { kind: "u64" });
 * ```
 */
export class ControlChannel {
  readonly #socket: VhostUserSocket;
  readonly #fds: FdCloser;
  readonly #timeoutMs: number;
  readonly #onClose: ((error: VirtioError) => void) | undefined;
  readonly #queue: Op[] = [];
  #inflight: Op | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #needReply = false;
  #error: VirtioError | undefined;
  // Reply being assembled.
  readonly #hdr = new Uint8Array(VHOST_USER_HDR_SIZE);
  #hdrFill = 0;
  #payload: Uint8Array | undefined;
  #payloadFill = 0;
  /** The fd that came with the reply being assembled (GET_INFLIGHT_FD), or -1. */
  #replyFd = -1;

  constructor(socket: VhostUserSocket, options: ControlChannelOptions) {
    const t = options.replyTimeoutMs ?? DEFAULT_REPLY_TIMEOUT_MS;
    if (!Number.isFinite(t) || t < 0)
      throw new RangeError(`replyTimeoutMs must be a number >= 0, got ${t}`);
    this.#socket = socket;
    this.#fds = options.fds;
    this.#timeoutMs = t;
    this.#onClose = options.onClose;
    socket.start({
      data: (bytes, fds) => this.#onData(bytes, fds),
      end: (error) =>
        this.close(
          new VirtioError(
            ErrorCode.VHOST_USER_DISCONNECTED,
            error === undefined
              ? "the back-end closed the connection"
              : `the connection failed: ${error.message}`,
          ),
        ),
    });
  }

  /**
   * Once REPLY_ACK is negotiated: every later request without a reply body
   * is sent with NEED_REPLY and waits for its REPLY_ACK status (requests with
   * a reply body are sent without it; see {@link request}).
   */
  set needReply(on: boolean) {
    this.#needReply = on;
  }

  get needReply(): boolean {
    return this.#needReply;
  }

  /** Why the channel closed, or undefined while it is open. */
  get error(): VirtioError | undefined {
    return this.#error;
  }

  /** True once the channel is closed. */
  get closed(): boolean {
    return this.#error !== undefined;
  }

  /**
   * Sends `request` with `payload` (and `fds`, which stay owned by the
   * caller) after every earlier request has been answered. Resolves with the
   * decoded reply body, or undefined for a request without one (after its
   * REPLY_ACK when {@link needReply} is on, else once sent).
   *
   * Rejects with the channel's error if it is or becomes closed, or with
   * `VIRTIO_ERR_VHOST_USER_REFUSED` for a non-zero REPLY_ACK status.
   */
  request<B extends ReplyBody | undefined = undefined>(
    request: number,
    payload: Uint8Array,
    body?: B,
    fds: readonly number[] = [],
  ): Promise<ReplyValue<B>> {
    if (this.#error !== undefined) return Promise.reject(this.#error);
    const ack = body === undefined && this.#needReply;
    const expect: Expect = body ?? (ack ? "ack" : "none");
    // NEED_REPLY only where it asks for something: a request with a reply body gets
    // "only that reply" anyway, and libvhost-user (qemu-storage-daemon 7.2) echoes
    // NEED_REPLY into some such replies (GET_CONFIG: flags 0xd), which a strict
    // 0x5 check must refuse. QEMU never sets it on these requests either.
    const flags = VHOST_USER_VERSION | (ack ? VHOST_USER_NEED_REPLY_MASK : 0);
    return new Promise<ReplyValue<B>>((resolve, reject) => {
      this.#queue.push({
        request,
        bytes: encodeMessage(request, flags, payload),
        fds: [...fds],
        expect,
        resolve: resolve as (v: unknown) => void,
        reject,
      });
      this.#pump();
    });
  }

  /**
   * Closes the channel and the socket (idempotent): the request in flight
   * and every queued one reject with `error` (default: closed by the
   * front-end, `VIRTIO_ERR_VHOST_USER_DISCONNECTED`).
   */
  close(error?: VirtioError): void {
    if (this.#error !== undefined) return;
    const err =
      error ??
      new VirtioError(ErrorCode.VHOST_USER_DISCONNECTED, "the front-end closed the connection");
    this.#error = err;
    this.#clearTimer();
    this.#dropReplyFd();
    this.#socket.close();
    const ops = this.#inflight === undefined ? this.#queue : [this.#inflight, ...this.#queue];
    this.#inflight = undefined;
    this.#queue.length = 0;
    for (const op of ops) op.reject(err);
    this.#onClose?.(err);
  }

  /** Sends queued requests until one awaits a reply (or the queue is empty). */
  #pump(): void {
    while (this.#inflight === undefined && this.#error === undefined) {
      const op = this.#queue.shift();
      if (op === undefined) return;
      try {
        this.#socket.send(op.bytes, op.fds);
      } catch (e) {
        const err = this.#sendError(e);
        op.reject(err);
        this.close(err);
        return;
      }
      if (op.expect === "none") {
        op.resolve(undefined);
        continue;
      }
      this.#inflight = op;
      this.#hdrFill = 0;
      this.#payload = undefined;
      this.#payloadFill = 0;
      if (this.#timeoutMs > 0) {
        this.#timer = setTimeout(() => this.#onTimeout(op), this.#timeoutMs);
        this.#timer.unref();
      }
    }
  }

  #sendError(e: unknown): VirtioError {
    return isVirtioError(e)
      ? e
      : new VirtioError(
          ErrorCode.VHOST_USER_DISCONNECTED,
          `sending to the back-end failed: ${e instanceof Error ? e.message : String(e)}`,
        );
  }

  #onTimeout(op: Op): void {
    if (this.#inflight !== op) return;
    this.close(
      protocolError(
        `no reply to ${vhostUserRequestName(op.request)} within ${this.#timeoutMs} ms`,
        { request: op.request, timeoutMs: this.#timeoutMs },
      ),
    );
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #onData(bytes: Uint8Array, fds: number[]): void {
    if (this.#error !== undefined) {
      fds.forEach((fd) => this.#fds.close(fd));
      return;
    }
    if (fds.length > 0 && !this.#takeReplyFd(fds)) {
      fds.forEach((fd) => this.#fds.close(fd));
      this.close(
        protocolError(`the back-end sent ${fds.length} fds where the reply carries none`, {
          fds: fds.length,
        }),
      );
      return;
    }
    try {
      this.#consume(bytes);
    } catch (e) {
      this.close(isVirtioError(e) ? e : protocolError(String(e)));
    }
  }

  /** Keeps the one fd of a reply that carries one, sent with its header; false for anything else. */
  #takeReplyFd(fds: number[]): boolean {
    const op = this.#inflight;
    if (op === undefined || !replyTakesFd(op.expect) || this.#replyFd >= 0) return false;
    if (fds.length !== 1 || this.#hdrFill !== 0 || this.#payload !== undefined) return false;
    this.#replyFd = fds[0]!;
    return true;
  }

  /** Closes a reply's fd that nobody took. */
  #dropReplyFd(): void {
    if (this.#replyFd >= 0) this.#fds.close(this.#replyFd);
    this.#replyFd = -1;
  }

  /**
   * Feeds received bytes into the reply being assembled and completes it.
   * Nothing legitimate can follow a reply in the same fragment: the next
   * request has not been sent yet, so such bytes are unsolicited.
   */
  #consume(bytes: Uint8Array): void {
    let off = 0;
    while (off < bytes.byteLength) {
      const op = this.#inflight;
      if (op === undefined)
        throw protocolError(
          `${bytes.byteLength - off} unsolicited bytes from the back-end: no reply is awaited`,
          { bytes: bytes.byteLength - off },
        );
      if (this.#payload === undefined) {
        const n = Math.min(VHOST_USER_HDR_SIZE - this.#hdrFill, bytes.byteLength - off);
        this.#hdr.set(bytes.subarray(off, off + n), this.#hdrFill);
        this.#hdrFill += n;
        off += n;
        if (this.#hdrFill < VHOST_USER_HDR_SIZE) return;
        this.#payload = new Uint8Array(checkReplyHeader(this.#hdr, op.request, op.expect));
        this.#payloadFill = 0;
      }
      const n = Math.min(this.#payload.byteLength - this.#payloadFill, bytes.byteLength - off);
      this.#payload.set(bytes.subarray(off, off + n), this.#payloadFill);
      this.#payloadFill += n;
      off += n;
      if (this.#payloadFill === this.#payload.byteLength) {
        if (off < bytes.byteLength)
          throw protocolError(
            `${bytes.byteLength - off} unsolicited bytes after the reply to ${vhostUserRequestName(op.request)}`,
            { bytes: bytes.byteLength - off },
          );
        this.#complete(op, this.#payload);
        return;
      }
    }
  }

  /** Decodes the reply; a violation leaves `op` in flight so that close() rejects it. */
  #complete(op: Op, payload: Uint8Array): void {
    this.#clearTimer();
    this.#hdrFill = 0;
    this.#payload = undefined;
    this.#payloadFill = 0;
    let value: unknown;
    try {
      value = decodeReply(op.request, op.expect, payload, this.#replyFd);
      this.#replyFd = -1; // the reply's value owns it now
    } catch (e) {
      this.#dropReplyFd();
      if (!isVirtioError(e, ErrorCode.VHOST_USER_REFUSED)) throw e;
      this.#inflight = undefined;
      op.reject(e);
      this.#pump();
      return;
    }
    this.#inflight = undefined;
    op.resolve(value);
    this.#pump();
  }
}

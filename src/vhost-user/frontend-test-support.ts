/**
 * A scripted vhost-user back-end for the front-end's tests: it parses what
 * the front-end sends with the back-end's own strict reader (./framing.ts),
 * records every request, answers like qemu-storage-daemon by default, and
 * lets a test replace any answer with a malformed one. Runs over one end of
 * a socketpair on the test's event loop. Not part of the library's API.
 *
 * @module
 */
import { close, eventfdRead, eventfdWrite } from "../native/index.ts";
import { VHOST_USER_NEED_REPLY_MASK, VhostUserRequest as R } from "../spec/vhost-user.ts";
import {
  decodeConfig,
  decodeVringFile,
  decodeVringState,
  encodeConfig,
  encodeMessage,
  encodeReply,
  encodeU64,
  encodeVringState,
} from "./codec.ts";
import { MessageReader, takeFd, type VhostUserMessage } from "./framing.ts";
import { NativeSocket } from "./native-host.ts";

/** What the fake offers. */
export interface FakeBackendOptions {
  /** GET_FEATURES answer (default VERSION_1 | PROTOCOL_FEATURES | FLUSH). */
  readonly features?: bigint;
  /** GET_PROTOCOL_FEATURES answer (default qemu-storage-daemon 7.2's 0x8f2b). */
  readonly protocolFeatures?: bigint;
  /** GET_QUEUE_NUM answer (default 2). */
  readonly queueNum?: bigint;
  /** GET_MAX_MEM_SLOTS answer (default 32). */
  readonly maxMemSlots?: bigint;
  /** Config space served by GET_CONFIG (default 60 bytes 0..59). */
  readonly config?: Uint8Array;
}

/**
 * A test's answer to a request: return true if it answered (or chose to say
 * nothing), false to let the default answer go out.
 */
export type Responder = (msg: VhostUserMessage, backend: FakeBackend) => boolean;

/** A request as the fake recorded it (fds counted, not kept). */
export interface RecordedRequest {
  readonly request: number;
  readonly flags: number;
  readonly payload: Uint8Array;
  readonly fdCount: number;
}

const closeQuietly = (fd: number): void => {
  try {
    close(fd);
  } catch {
    // already closed
  }
};

/** The fake back-end. */
export class FakeBackend {
  readonly options: Required<FakeBackendOptions>;
  readonly received: RecordedRequest[] = [];
  /** Kick and call eventfds received, by ring index (owned by the fake). */
  readonly kickFds = new Map<number, number>();
  readonly callFds = new Map<number, number>();
  /** Memory fds received (ADD_MEM_REG / SET_MEM_TABLE), owned by the fake. */
  readonly memFds: number[] = [];
  /** Per-request overrides. */
  readonly responders = new Map<number, Responder>();
  /** Set when the front-end hung up or the fake's reader failed. */
  ended = false;
  readerError: Error | undefined;
  readonly #socket: NativeSocket;
  readonly #reader = new MessageReader(closeQuietly);
  #closed = false;

  constructor(fd: number, options: FakeBackendOptions = {}) {
    this.options = {
      features: options.features ?? (1n << 32n) | (1n << 30n) | (1n << 9n),
      protocolFeatures: options.protocolFeatures ?? 0x8f2bn,
      queueNum: options.queueNum ?? 2n,
      maxMemSlots: options.maxMemSlots ?? 32n,
      config: options.config ?? Uint8Array.from({ length: 60 }, (_, i) => i),
    };
    this.#socket = new NativeSocket(fd);
    this.#socket.start({
      data: (bytes, fds) => this.#onData(bytes, fds),
      end: () => {
        this.ended = true;
      },
    });
  }

  /** Requests received so far, as names-free ids. */
  get requests(): number[] {
    return this.received.map((m) => m.request);
  }

  /** Sends raw bytes (and fds) to the front-end. */
  sendRaw(bytes: Uint8Array, fds: readonly number[] = []): void {
    this.#socket.send(bytes, fds);
  }

  /** Sends a reply with the given flags (default exactly 0x5). */
  reply(request: number, payload: Uint8Array, flags = 0x5): void {
    this.sendRaw(encodeMessage(request, flags, payload));
  }

  /** Signals the call eventfd of ring `index`. */
  call(index: number): void {
    const fd = this.callFds.get(index);
    if (fd === undefined) throw new Error(`no call fd for ring ${index}`);
    eventfdWrite(fd, 1);
  }

  /** Reads (resets) the kick eventfd of ring `index`: true if it was signalled. */
  takeKick(index: number): boolean {
    const fd = this.kickFds.get(index);
    if (fd === undefined) throw new Error(`no kick fd for ring ${index}`);
    return eventfdRead(fd) !== null;
  }

  /** Closes the socket and every fd the fake holds (idempotent). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.ended = true;
    this.#socket.close();
    this.#reader.dispose();
    for (const fd of [...this.kickFds.values(), ...this.callFds.values(), ...this.memFds])
      closeQuietly(fd);
    this.kickFds.clear();
    this.callFds.clear();
    this.memFds.length = 0;
  }

  #onData(bytes: Uint8Array, fds: number[]): void {
    let msgs: VhostUserMessage[];
    try {
      msgs = this.#reader.push(bytes, fds);
    } catch (e) {
      this.readerError = e instanceof Error ? e : new Error(String(e));
      return;
    }
    for (const m of msgs) {
      this.received.push({
        request: m.request,
        flags: m.flags,
        payload: m.payload,
        fdCount: m.fds.length,
      });
      const custom = this.responders.get(m.request);
      if (custom === undefined || !custom(m, this)) this.#answer(m);
      m.fds.forEach(closeQuietly);
      m.fds.length = 0;
    }
  }

  /** qemu-storage-daemon-like default answers. */
  #answer(m: VhostUserMessage): void {
    const o = this.options;
    const u64 = (v: bigint): void => this.sendRaw(encodeReply(m.request, encodeU64(v)));
    switch (m.request) {
      case R.GET_FEATURES:
        return u64(o.features);
      case R.GET_PROTOCOL_FEATURES:
        return u64(o.protocolFeatures);
      case R.GET_QUEUE_NUM:
        return u64(o.queueNum);
      case R.GET_MAX_MEM_SLOTS:
        return u64(o.maxMemSlots);
      case R.GET_CONFIG: {
        const c = decodeConfig(m.payload);
        const data = new Uint8Array(c.data.byteLength);
        data.set(o.config.subarray(c.offset, c.offset + data.byteLength));
        return this.sendRaw(
          encodeReply(m.request, encodeConfig({ offset: c.offset, flags: c.flags, data })),
        );
      }
      case R.GET_VRING_BASE: {
        const s = decodeVringState(m.payload);
        return this.sendRaw(encodeReply(m.request, encodeVringState({ index: s.index, num: 7 })));
      }
      case R.SET_VRING_KICK:
      case R.SET_VRING_CALL: {
        const f = decodeVringFile(m.payload);
        const map = m.request === R.SET_VRING_KICK ? this.kickFds : this.callFds;
        if (!f.noFd) {
          const old = map.get(f.index);
          if (old !== undefined) closeQuietly(old);
          map.set(f.index, takeFd(m));
        }
        break;
      }
      case R.ADD_MEM_REG:
      case R.SET_MEM_TABLE:
        while (m.fds.length > 0) this.memFds.push(takeFd(m));
        break;
    }
    if ((m.flags & VHOST_USER_NEED_REPLY_MASK) !== 0) u64(0n);
  }
}

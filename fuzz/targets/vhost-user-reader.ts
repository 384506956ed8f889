/**
 * Fuzz target: the vhost-user message reader (src/vhost-user/framing.ts)
 * and the payload decoders (src/vhost-user/codec.ts).
 *
 * Feeds: a stream of received fragments, each `u16 length, u8 fd count,
 * bytes` (fake fd numbers, each unique), as a socket's `recvmsg` would
 * deliver them, to one MessageReader; the payload of every message it
 * completes goes to the codec decoder of its request.
 *
 * Failure: an exception other than the documented VirtioError
 * `VHOST_USER_PROTOCOL` (from `push` or a decoder); a completed message with
 * more than VHOST_USER_MAX_PAYLOAD bytes or VHOST_USER_MAX_FDS fds
 * (unbounded buffering); an fd closed twice, closed while handed out with a
 * message, or neither closed nor handed out once the reader is disposed
 * (a leak); a dead reader accepting data.
 *
 * @module
 */
import { ErrorCode, type ErrorCodeValue } from "../../src/errors.ts";
import { VhostUserRequest as R } from "../../src/spec/vhost-user.ts";
import {
  decodeConfig,
  decodeInflight,
  decodeMemoryTable,
  decodeSingleMemRegion,
  decodeU64,
  decodeVringAddr,
  decodeVringFile,
  decodeVringState,
} from "../../src/vhost-user/codec.ts";
import {
  MessageReader,
  VHOST_USER_MAX_FDS,
  VHOST_USER_MAX_PAYLOAD,
  type VhostUserMessage,
} from "../../src/vhost-user/framing.ts";
import { FuzzFailure, allowOnly, expect } from "../lib/check.ts";
import { FuzzInput } from "../lib/input.ts";

const PROTOCOL: ReadonlySet<ErrorCodeValue> = new Set([ErrorCode.VHOST_USER_PROTOCOL]);

/** The decoder of each request's payload. */
const DECODERS = new Map<number, (b: Uint8Array) => unknown>([
  [R.SET_FEATURES, decodeU64],
  [R.SET_PROTOCOL_FEATURES, decodeU64],
  [R.SET_VRING_NUM, decodeVringState],
  [R.SET_VRING_BASE, decodeVringState],
  [R.GET_VRING_BASE, decodeVringState],
  [R.SET_VRING_ENABLE, decodeVringState],
  [R.SET_VRING_ADDR, decodeVringAddr],
  [R.SET_VRING_KICK, decodeVringFile],
  [R.SET_VRING_CALL, decodeVringFile],
  [R.SET_VRING_ERR, decodeVringFile],
  [R.SET_MEM_TABLE, decodeMemoryTable],
  [R.ADD_MEM_REG, decodeSingleMemRegion],
  [R.REM_MEM_REG, decodeSingleMemRegion],
  [R.GET_CONFIG, decodeConfig],
  [R.SET_CONFIG, decodeConfig],
  [R.GET_INFLIGHT_FD, decodeInflight],
  [R.SET_INFLIGHT_FD, decodeInflight],
]);

/** Most fragments one input feeds. */
const MAX_FRAGMENTS = 256;

/** Runs one input. */
export function fuzz(data: Uint8Array): void {
  const input = new FuzzInput(data);
  let nextFd = 1000;
  const given = new Set<number>();
  const closed = new Set<number>();
  const handedOut = new Set<number>();
  const reader = new MessageReader((fd) => {
    expect(given.has(fd), `closed fd ${fd}, which it was never given`);
    expect(!closed.has(fd), `closed fd ${fd} twice`);
    expect(!handedOut.has(fd), `closed fd ${fd}, which belongs to a completed message`);
    closed.add(fd);
  });

  for (let i = 0; i < MAX_FRAGMENTS && !input.done; i++) {
    const bytes = input.bytes(input.u16() % 4200);
    const fds = Array.from({ length: input.u8() % 12 }, () => nextFd++);
    fds.forEach((fd) => given.add(fd));
    let messages: VhostUserMessage[];
    try {
      messages = reader.push(bytes, fds);
    } catch (e) {
      if (e instanceof FuzzFailure) throw e;
      allowOnly(e, PROTOCOL);
      expect(reader.dead, "a protocol error left the reader alive");
      for (const fd of fds) expect(closed.has(fd), `fd ${fd} of the failed fragment not closed`);
      break;
    }
    for (const m of messages) {
      expect(m.payload.byteLength <= VHOST_USER_MAX_PAYLOAD, `payload of ${m.payload.byteLength}`);
      expect(m.fds.length <= VHOST_USER_MAX_FDS, `${m.fds.length} fds on one message`);
      for (const fd of m.fds) {
        expect(given.has(fd) && !closed.has(fd), `message carries fd ${fd}, not an open one`);
        handedOut.add(fd);
      }
      decode(m);
    }
  }
  if (reader.dead) {
    // A dead reader refuses data and closes what came with it.
    const fd = nextFd++;
    given.add(fd);
    let threw = false;
    try {
      reader.push(new Uint8Array(1), [fd]);
    } catch {
      threw = true;
    }
    expect(threw, "a dead reader accepted data");
    expect(closed.has(fd), "a dead reader kept an fd");
  }
  reader.dispose();
  for (const fd of given)
    expect(closed.has(fd) !== handedOut.has(fd), `fd ${fd} leaked (neither closed nor handed out)`);
}

function decode(m: VhostUserMessage): void {
  const d = DECODERS.get(m.request);
  if (d === undefined) return;
  try {
    d(m.payload);
  } catch (e) {
    allowOnly(e, PROTOCOL);
  }
}

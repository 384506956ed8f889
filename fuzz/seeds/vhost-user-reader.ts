/**
 * Seed inputs of the vhost-user-reader target: the messages of a QEMU-like
 * negotiation and ring setup (features, memory table with an fd, vring
 * num/addr/base, kick and call with fds, enable, config), delivered whole,
 * byte by byte, and in odd-sized fragments.
 *
 * @module
 */
import { VhostUserRequest as R } from "../../src/spec/vhost-user.ts";
import {
  encodeConfig,
  encodeMemoryTable,
  encodeMessage,
  encodeU64,
  encodeVringAddr,
  encodeVringFile,
  encodeVringState,
} from "../../src/vhost-user/codec.ts";

/** One message with the number of fds it carries. */
export interface SeedMessage {
  readonly request: number;
  readonly payload: Uint8Array;
  readonly fds: number;
  readonly flags?: number;
}

/** A QEMU-like start of a connection: negotiation, memory, one ring. */
export function setupMessages(): SeedMessage[] {
  const none = new Uint8Array(0);
  return [
    { request: R.GET_FEATURES, payload: none, fds: 0 },
    { request: R.SET_FEATURES, payload: encodeU64((1n << 32n) | (1n << 30n)), fds: 0 },
    { request: R.GET_PROTOCOL_FEATURES, payload: none, fds: 0 },
    { request: R.SET_PROTOCOL_FEATURES, payload: encodeU64(0x8a3n), fds: 0 },
    { request: R.SET_OWNER, payload: none, fds: 0 },
    { request: R.GET_QUEUE_NUM, payload: none, fds: 0 },
    { request: R.GET_MAX_MEM_SLOTS, payload: none, fds: 0 },
    {
      request: R.SET_MEM_TABLE,
      payload: encodeMemoryTable([
        {
          guestPhysAddr: 0n,
          memorySize: 0x10000n,
          userspaceAddr: 0x7f0000000000n,
          mmapOffset: 0n,
        },
      ]),
      fds: 1,
    },
    { request: R.SET_VRING_NUM, payload: encodeVringState({ index: 0, num: 16 }), fds: 0 },
    {
      request: R.SET_VRING_ADDR,
      payload: encodeVringAddr({
        index: 0,
        flags: 0,
        desc: 0x7f0000001000n,
        used: 0x7f0000002000n,
        avail: 0x7f0000001100n,
        log: 0n,
      }),
      fds: 0,
    },
    { request: R.SET_VRING_BASE, payload: encodeVringState({ index: 0, num: 0 }), fds: 0 },
    { request: R.SET_VRING_CALL, payload: encodeVringFile({ index: 0, noFd: false }), fds: 1 },
    { request: R.SET_VRING_KICK, payload: encodeVringFile({ index: 0, noFd: false }), fds: 1 },
    { request: R.SET_VRING_ENABLE, payload: encodeVringState({ index: 0, num: 1 }), fds: 0 },
    {
      request: R.GET_CONFIG,
      payload: encodeConfig({ offset: 0, flags: 0, data: new Uint8Array(60) }),
      fds: 0,
    },
    { request: R.GET_VRING_BASE, payload: encodeVringState({ index: 0, num: 0 }), fds: 0 },
  ];
}

/** Encodes messages as reader fragments: `u16 length, u8 fds, bytes`, split every `chunk` bytes. */
function fragments(msgs: readonly SeedMessage[], chunk: number): Uint8Array {
  const out: number[] = [];
  for (const m of msgs) {
    const bytes = encodeMessage(m.request, m.flags ?? 1, m.payload);
    for (let off = 0; off < bytes.byteLength; off += chunk) {
      const part = bytes.subarray(off, off + chunk);
      const last = off + chunk >= bytes.byteLength;
      out.push(part.byteLength & 0xff, part.byteLength >> 8, last ? m.fds : 0, ...part);
    }
  }
  return new Uint8Array(out);
}

export function vhostUserReaderSeeds(): Uint8Array[] {
  const msgs = setupMessages();
  return [
    fragments(msgs, 1 << 16),
    fragments(msgs.slice(0, 8), 1),
    fragments(msgs, 7),
    fragments(
      msgs.map((m) => ({ ...m, flags: 0x9 })),
      1 << 16,
    ),
  ];
}

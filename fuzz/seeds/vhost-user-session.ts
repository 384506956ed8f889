/**
 * Seed inputs of the vhost-user-session target: a QEMU-like connection
 * (negotiation, a memory table over one 64 KiB memfd, ring 0 set up at
 * offsets 0x1000/0x1100/0x2000 with kick and call fds, enabled), variants
 * with NEED_REPLY, a kick, a stop with GET_VRING_BASE, and a reconfiguration.
 *
 * @module
 */
import { VhostUserRequest as R } from "../../src/spec/vhost-user.ts";
import { REQUESTS } from "../targets/vhost-user-session.ts";
import { setupMessages, type SeedMessage } from "./vhost-user-reader.ts";

/** Step bytes of one "send" (whole, no fd tweak). */
function send(m: SeedMessage, needReply: boolean): number[] {
  const pick = REQUESTS.indexOf(m.request);
  if (pick < 0) throw new Error(`request ${m.request} not supported`);
  // op 0 = send; request index; flags mode (0: 0x1, 5: 0x9); size mode 0; payload; tweak 2 (none); whole.
  return [0, pick, needReply ? 5 : 0, 0, ...extra(m), ...m.payload, 2, 1];
}

/** Choice bytes a request's size mode consumes before the payload. */
function extra(m: SeedMessage): number[] {
  if (m.request === R.SET_MEM_TABLE) return [(m.payload.byteLength - 8) / 32 - 1];
  if (m.request === R.GET_CONFIG || m.request === R.SET_CONFIG) return [m.payload.byteLength - 12];
  return [];
}

const IDLE = [10];
const KICK = [13, 0];

export function vhostUserSessionSeeds(): Uint8Array[] {
  const setup = setupMessages();
  const run = (msgs: readonly SeedMessage[], reply: boolean, tail: number[] = []): Uint8Array =>
    new Uint8Array([...msgs.flatMap((m) => [...send(m, reply), ...IDLE]), ...tail]);
  const ringUp = setup.slice(0, 14);
  return [
    run(setup, false),
    run(setup, true),
    run(ringUp, false, [...KICK, ...IDLE, ...send(setup[15]!, false), ...IDLE]),
    run([...ringUp, setup[8]!, setup[15]!, ...ringUp.slice(8)], true, KICK),
    run(setup.slice(0, 7), false, [15]),
  ];
}

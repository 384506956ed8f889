/**
 * One ring of the vhost-user front-end: its kick and call eventfds, and the
 * messages that start and stop it. qemu/qemu docs/interop/vhost-user.rst
 * "Starting and stopping rings", "Front-end message types" (SET_VRING_*,
 * GET_VRING_BASE), "Vring descriptor indices for packed virtqueues";
 * VIRTIO 1.2 §2.8 (a packed ring's Driver and Device Areas);
 * docs/vhost-user.md
 *
 * A ring starts with SET_VRING_NUM, SET_VRING_BASE, SET_VRING_ADDR,
 * SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ENABLE(1) and stops with
 * GET_VRING_BASE. The ring base is per layout (./frontend-vring-base.ts: a
 * fresh packed ring is 0x80008000); SET_VRING_ADDR's used and available
 * addresses are a packed ring's Device and Driver Areas. A kick writes 1 to the kick eventfd; the call eventfd is
 * watched on the calling thread's event loop, read (reset) and reported to
 * the ring's `onCall`. Releasing a ring stops the watch and closes both
 * eventfds.
 *
 * Node-only (native addon).
 *
 * @module
 */
import {
  close as closeFd,
  eventfd,
  eventfdRead,
  eventfdWrite,
  PollEvent,
  watch,
  type FdWatch,
} from "../native/index.ts";
import { VHOST_USER_VRING_IDX_MASK, VhostUserRequest as R } from "../spec/vhost-user.ts";
import { encodeVringAddr, encodeVringFile, encodeVringState } from "./codec.ts";
import type { ControlChannel } from "./frontend-channel.ts";
import { freshVringBase } from "./frontend-vring-base.ts";
import type { RingLayoutKind } from "../ring/ring-layout.ts";

/**
 * Where a ring lives in guest memory (guest-physical addresses, also sent as
 * user addresses), placed for the negotiated layout (`placeRing`).
 */
export interface FrontendRingAddresses {
  /** Queue size: a power of two in 1..32768; with VIRTIO_F_RING_PACKED any of 1..32768. */
  readonly size: number;
  /** Descriptor table (split) or Descriptor Ring (packed). */
  readonly descAddr: number;
  /** Available ring (split) or Driver Area (packed). */
  readonly availAddr: number;
  /** Used ring (split) or Device Area (packed). */
  readonly usedAddr: number;
}

/** Options of {@link VhostUserFrontend.startRing}. */
export interface StartRingOptions extends FrontendRingAddresses {
  /**
   * Where the back-end starts (SET_VRING_BASE `num`, in the layout's
   * encoding: the avail index of a split ring, `encodePackedVringBase` of a
   * packed one). Default: a fresh ring (0; packed 0x80008000).
   */
  readonly base?: number;
  /**
   * Called on this thread's loop after the back-end signalled the call
   * eventfd (the counter has been reset): drain the used ring.
   */
  readonly onCall: () => void;
}

/** A started ring: its notification side. */
export interface FrontendRing {
  readonly index: number;
  /** Signals the kick eventfd (an available-buffer notification). No-op once stopped. */
  kick(): void;
  /** True once the ring was stopped or the connection closed. */
  readonly stopped: boolean;
}

/** A ring's eventfds and the watch on its call eventfd. */
export class Ring implements FrontendRing {
  readonly index: number;
  readonly kickFd: number;
  readonly callFd: number;
  #watch: FdWatch | undefined;
  #stopped = false;

  constructor(index: number, kickFd: number, callFd: number, onCall: () => void) {
    this.index = index;
    this.kickFd = kickFd;
    this.callFd = callFd;
    this.#watch = watch(callFd, PollEvent.READABLE, (error) => {
      if (error !== null) {
        // A poll error on our own eventfd: stop rather than spin.
        this.#watch?.stop();
        return;
      }
      // "The 8-value itself has no meaning and should not be interpreted": read to reset, then drain.
      if (eventfdRead(callFd) !== null && !this.#stopped) onCall();
    });
  }

  get stopped(): boolean {
    return this.#stopped;
  }

  kick(): void {
    // false (counter at its maximum) means a kick is already pending.
    if (!this.#stopped) eventfdWrite(this.kickFd, 1);
  }

  /** Stops the call watch and closes both eventfds (idempotent). */
  release(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#watch?.stop();
    this.#watch = undefined;
    closeFd(this.kickFd);
    closeFd(this.callFd);
  }
}

/** A ring with fresh kick and call eventfds (nothing stays open on failure). */
export function createRing(index: number, onCall: () => void): Ring {
  const fds: number[] = [];
  try {
    fds.push(eventfd());
    fds.push(eventfd());
    return new Ring(index, fds[0]!, fds[1]!, onCall);
  } catch (e) {
    fds.forEach(closeQuietly);
    throw e;
  }
}

/**
 * Sends the messages that start `ring` of `layout` (SET_VRING_NUM,
 * SET_VRING_BASE, SET_VRING_ADDR, SET_VRING_KICK, SET_VRING_CALL,
 * SET_VRING_ENABLE 1).
 */
export async function sendRingStart(
  ch: ControlChannel,
  ring: Ring,
  layout: RingLayoutKind,
  o: StartRingOptions,
): Promise<void> {
  const index = ring.index;
  await ch.request(R.SET_VRING_NUM, encodeVringState({ index, num: o.size }));
  const base = o.base ?? freshVringBase(layout);
  await ch.request(R.SET_VRING_BASE, encodeVringState({ index, num: base }));
  // "A vring address description": the payload order is desc, used, avail, log (packed: the Descriptor Ring,
  // the Device Area and the Driver Area, as QEMU sends them).
  await ch.request(
    R.SET_VRING_ADDR,
    encodeVringAddr({
      index,
      flags: 0,
      desc: BigInt(o.descAddr),
      used: BigInt(o.usedAddr),
      avail: BigInt(o.availAddr),
      log: 0n,
    }),
  );
  const file = encodeVringFile({ index: index & VHOST_USER_VRING_IDX_MASK, noFd: false });
  await ch.request(R.SET_VRING_KICK, file, undefined, [ring.kickFd]);
  await ch.request(R.SET_VRING_CALL, file, undefined, [ring.callFd]);
  // With VHOST_USER_F_PROTOCOL_FEATURES negotiated "the ring starts directly in the disabled state".
  await ch.request(R.SET_VRING_ENABLE, encodeVringState({ index, num: 1 }));
}

/** GET_VRING_BASE ("stop the ring"): resolves with the raw `num`, where the back-end would resume. */
export async function sendRingStop(ch: ControlChannel, index: number): Promise<number> {
  const state = await ch.request(R.GET_VRING_BASE, encodeVringState({ index, num: 0 }), {
    kind: "vring-state",
    index,
  });
  return state.num;
}

/** Closes `fd`, ignoring errors. */
export function closeQuietly(fd: number): void {
  try {
    closeFd(fd);
  } catch {
    // Best effort: the fd is gone either way.
  }
}

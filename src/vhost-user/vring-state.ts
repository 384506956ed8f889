/**
 * One ring's state as the front-end configured it through the vhost-user
 * messages (qemu/qemu docs/interop/vhost-user.rst "Ring states": started by
 * its kick fd, stopped by GET_VRING_BASE, enabled by SET_VRING_ENABLE). The
 * session (./session.ts) runs the state machine over it.
 *
 * @module
 */
import type { VringAddr } from "./codec.ts";

/** Per-ring state as the front-end configured it. */
export class VringState {
  readonly index: number;
  /** SET_VRING_NUM (0 until set). */
  num = 0;
  /** The next available index: SET_VRING_BASE, or where the last stop left it. */
  base = 0;
  /** SET_VRING_ADDR as received (front-end virtual addresses). */
  addr: VringAddr | undefined;
  kickFd: number | null = null;
  callFd: number | null = null;
  errFd: number | null = null;
  /** Started by a kick fd, stopped by GET_VRING_BASE. */
  started = false;
  enabled = false;
  /** The dataplane serves the ring. */
  running = false;
  /** The last start was refused (bad size / layout); not retried until the ring is reconfigured. */
  startFailed = false;
  /** A stop in progress (never rejects). */
  stopping: Promise<void> | null = null;
  /** The error of a failed background stop, reported by the next `VhostUserSession.settle`. */
  stopError: Error | undefined = undefined;

  constructor(index: number) {
    this.index = index;
  }
}

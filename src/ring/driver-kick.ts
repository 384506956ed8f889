/**
 * The driver's decision to notify the device after making buffers
 * available, as far as it does not depend on the ring layout (Linux
 * virtqueue_kick_prepare). VIRTIO 1.2 §2.7.10 (available buffer
 * notification suppression: the event-index rule) — a packed-ring driver
 * queue decides the same way once it has read the device's event.
 *
 * The queue counts the requests made available since its last decision.
 * None: nothing to announce. 0xffff or more: the 16-bit window no longer
 * tells, and a spurious kick is harmless, so kick. Otherwise the device's
 * suppression state decides: with event indexes {@link kickByEvent}, else
 * the layout's no-notify flag.
 *
 * @module
 */
import { vringNeedEvent } from "../spec/virtqueue.ts";

/** Linux forces a kick after this many adds without one so 16-bit windows stay exact. */
const FORCE_KICK_ADDED = 0xffff;

/**
 * The decision from the count alone: false (nothing was added), true (a
 * kick is forced), or null (ask the device's suppression state).
 */
export function kickByCount(added: number): boolean | null {
  if (added === 0) return false;
  // Beyond 65535 adds the 16-bit window (old, new] no longer tells; a spurious kick is harmless (§2.7.10).
  if (added >= FORCE_KICK_ADDED) return true;
  return null;
}

/** With event indexes: kick if the `added` requests up to `newIdx` passed the device's `event`. */
export function kickByEvent(event: number, newIdx: number, added: number): boolean {
  // §2.7.10 "the driver MUST ... check avail_event ... [notify] if the new idx ... passed avail_event".
  return vringNeedEvent(event, newIdx, (newIdx - added) & 0xffff);
}

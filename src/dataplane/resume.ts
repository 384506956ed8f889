/**
 * Opening a queue's ring in the runtime, and what it does when the ring ran
 * before — on an earlier back-end that crashed, or before a stop: the ring
 * keeps the transport's inflight log in the layout of the ring (split or
 * packed), the runtime says what the log made it resubmit and where the
 * ring resumed, and it sends the driver one used buffer notification.
 * qemu/qemu docs/interop/vhost-user.rst "Inflight I/O tracking" ("When
 * reconnecting"); VIRTIO 1.2 §2.7.7 and §2.8.10 (used buffer notifications;
 * one the driver did not need is harmless: it finds nothing new in the used
 * ring).
 *
 * @module
 */
import type { VirtioError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { GuestMemory } from "../memory/guest-memory.ts";
import type { DeviceRing } from "../ring/device-ring.ts";
import type { InflightRecovery } from "../ring/inflight-recovery.ts";
import { openRing, type RingStart } from "../ring/open-ring.ts";
import { isPackedRing } from "../ring/ring-layout.ts";
import {
  PACKED_RING_START,
  decodePackedVringBase,
  type PackedRingState,
} from "../ring/packed-ring-state.ts";
import type { MemorySpace, QueueDoorbells } from "./seams.ts";

/**
 * Opens queue `start.queue`'s ring over `memory` with the inflight log the
 * memory space keeps for it (if any), in the layout of the ring, and logs
 * what the log recovered.
 * `resumed`: the ring continues a used ring already in guest memory.
 *
 * @throws {VirtioError} `QUEUE_CONFIG` for a ring that does not fit the memory.
 */
export function openQueueRing(
  space: MemorySpace | null,
  memory: GuestMemory,
  start: { readonly queue: number; readonly ring: RingStart },
  logger: Logger,
  onBroken: (err: VirtioError) => void,
): { queue: DeviceRing; resumed: boolean } {
  const inflight = space?.inflight?.(start.queue, isPackedRing(start.ring.features)) ?? null;
  const queue = openRing(memory, start.ring, onBroken, inflight);
  logRecovery(logger, start.queue, queue.recovery, start.ring.base);
  return { queue, resumed: start.ring.usedIdxFromMemory === true || inflight !== null };
}

/**
 * A resumed ring may hold completions the driver was never told about: a
 * back-end killed between storing used.idx and its call leaves the guest
 * waiting for an interrupt that never comes, with nothing in flight anywhere.
 * One call at the start closes that window (libvhost-user signals a call fd
 * it receives for the same reason).
 */
export function announceResume(bells: QueueDoorbells): void {
  bells.call();
}

/**
 * One line when a queue resumes from an inflight log that held something,
 * that moved a packed ring away from where SET_VRING_BASE (`base`) put it,
 * or that was not trusted.
 */
function logRecovery(
  logger: Logger,
  queue: number,
  r: InflightRecovery | null,
  base: number | undefined,
): void {
  if (r === null) return;
  if (r.untracked === true) {
    logger.warn(
      `queue ${queue}: inflight log not used (${r.discarded}): the queue runs untracked`,
      { queue },
    );
  } else if (r.discarded !== undefined) {
    logger.warn(`queue ${queue}: inflight log not trusted (${r.discarded}); started afresh`, {
      queue,
    });
  } else if (r.resubmit.length > 0) {
    const what = r.ring === undefined ? "heads" : "buffer IDs";
    logger.warn(
      `queue ${queue}: resubmitting ${r.resubmit.length} request(s) left in flight by an earlier back-end (${what} ${r.resubmit.join(", ")}); resuming at ${resumedAt(r)}`,
      { queue },
    );
  } else if (r.ring !== undefined && !sameState(r.ring, base)) {
    logger.warn(
      `queue ${queue}: nothing left in flight by an earlier back-end; resuming at ${resumedAt(r)} as the inflight log says (SET_VRING_BASE said ${describe(base === undefined ? PACKED_RING_START : decodePackedVringBase(base))})`,
      { queue },
    );
  }
}

/** Where the ring resumes: a split ring's avail index, or a packed ring's positions and wrap counters. */
function resumedAt(r: InflightRecovery): string {
  return r.ring === undefined ? `avail index ${r.nextAvail}` : describe(r.ring);
}

function describe(s: PackedRingState): string {
  return `avail position ${s.availPos} (wrap ${s.availWrap}), used position ${s.usedPos} (wrap ${s.usedWrap})`;
}

/** True if `s` is the packed ring state vring base `base` encodes (a fresh ring when absent). */
function sameState(s: PackedRingState, base: number | undefined): boolean {
  const b = base === undefined ? PACKED_RING_START : decodePackedVringBase(base);
  return (
    s.availPos === b.availPos &&
    s.availWrap === b.availWrap &&
    s.usedPos === b.usedPos &&
    s.usedWrap === b.usedWrap
  );
}

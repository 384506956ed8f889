/**
 * Opening a queue's ring in the runtime, and what it does when the ring ran
 * before — on an earlier back-end that crashed, or before a stop: the ring
 * keeps the transport's inflight log, the runtime says what the log made it
 * resubmit, and it sends the driver one used buffer notification. qemu/qemu docs/interop/vhost-user.rst "Inflight I/O
 * tracking" ("When reconnecting"); VIRTIO 1.2 §2.7.7 (used buffer
 * notifications; one the driver did not need is harmless: it finds nothing
 * new in the used ring).
 *
 * @module
 */
import type { VirtioError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { GuestMemory } from "../memory/guest-memory.ts";
import type { DeviceRing } from "../ring/device-ring.ts";
import type { InflightRecovery } from "../ring/inflight-split.ts";
import { isPackedRing, openRing, type RingStart } from "../ring/open-ring.ts";
import type { MemorySpace, QueueDoorbells } from "./seams.ts";

/**
 * Opens queue `start.queue`'s ring over `memory` with the inflight log the
 * memory space keeps for it (if any; split rings only: the log's layout is
 * the split ring's), and logs what the log recovered.
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
  const inflight = isPackedRing(start.ring.features)
    ? null
    : (space?.inflight?.(start.queue) ?? null);
  const queue = openRing(memory, start.ring, onBroken, inflight);
  logRecovery(logger, start.queue, queue.recovery);
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

/** One line when a queue resumes from an inflight log that held something, or that was not trusted. */
function logRecovery(logger: Logger, queue: number, r: InflightRecovery | null): void {
  if (r === null) return;
  if (r.untracked === true) {
    logger.warn(
      `queue ${queue}: inflight log not used (${r.discarded}): the queue runs untracked`,
      {
        queue,
      },
    );
  } else if (r.discarded !== undefined) {
    logger.warn(`queue ${queue}: inflight log not trusted (${r.discarded}); started afresh`, {
      queue,
    });
  } else if (r.resubmit.length > 0) {
    logger.warn(
      `queue ${queue}: resubmitting ${r.resubmit.length} request(s) left in flight by an earlier back-end (heads ${r.resubmit.join(", ")}); resuming at avail index ${r.nextAvail}`,
      { queue },
    );
  }
}

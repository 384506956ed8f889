/**
 * What the runtime does when a queue resumes a ring that ran before — on an
 * earlier back-end that crashed, or before a stop: it says what the inflight
 * log made it resubmit, and it sends the driver one used buffer
 * notification. qemu/qemu docs/interop/vhost-user.rst "Inflight I/O
 * tracking" ("When reconnecting"); VIRTIO 1.2 §2.7.7 (used buffer
 * notifications; one the driver did not need is harmless: it finds nothing
 * new in the used ring).
 *
 * @module
 */
import type { Logger } from "../log.ts";
import type { InflightRecovery } from "../ring/inflight-split.ts";
import type { QueueDoorbells } from "./seams.ts";

/**
 * A resumed ring may hold completions the driver was never told about: a
 * back-end killed between storing used.idx and its call leaves the guest
 * waiting for an interrupt that never comes, with nothing in flight anywhere.
 * One call at the start closes that window (libvhost-user signals a call fd
 * it receives for the same reason).
 */
export function resumed(bells: QueueDoorbells): void {
  bells.call();
}

/** One line when a queue resumes from an inflight log that held something, or that was not trusted. */
export function logRecovery(logger: Logger, queue: number, r: InflightRecovery | null): void {
  if (r === null) return;
  if (r.discarded !== undefined) {
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

/**
 * How a virtio-blk queue engine reports that its device is broken: the
 * error it becomes (the memory fault behind it, if any), recorded on the
 * queue, logged once, and handed to the embedder. VIRTIO 1.2 §2.1.2
 * (DEVICE_NEEDS_RESET: "the device has experienced an error from which it
 * can't recover"); docs/conformance.md "Ring violations".
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../../errors.ts";
import { type Logger, errorText } from "../../log.ts";
import type { BlkVirtqueue } from "./queue-engine-options.ts";

/** What the report needs from the engine. */
export interface BrokenReport {
  readonly queue: BlkVirtqueue;
  readonly queueIndex: number;
  readonly log: Logger;
  /** The memory fault behind the failure, if the transport saw one. */
  readonly memoryFault: () => VirtioError | null;
  readonly onBroken: (err: VirtioError) => void;
}

/** Reports `e` (a ring violation, or a request without headers) as the device's breakage. */
export function reportBroken(r: BrokenReport, e: unknown): void {
  const qi = r.queueIndex;
  const err =
    r.memoryFault() ??
    (e instanceof VirtioError
      ? e
      : new VirtioError(ErrorCode.DEVICE_BROKEN, `virtio-blk vq ${qi}: ${errorText(e)}`));
  try {
    if (r.queue.broken === null) r.queue.markBroken(err);
  } catch {
    // The queue could not record it; the engine is halted either way.
  }
  // A MEM_FAULT is reported by the transport that owns the memory.
  if (err.code !== ErrorCode.MEM_FAULT)
    r.log.error(`virtio-blk vq ${qi}: device broken: ${errorText(err)}`);
  try {
    r.onBroken(err);
  } catch (cbErr) {
    r.log.error(`virtio-blk vq ${qi}: onBroken callback threw: ${errorText(cbErr)}`);
  }
}

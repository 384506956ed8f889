/**
 * The completion side of one virtio-blk queue: writes a request's status,
 * adds its used element, publishes the batch and notifies the driver if it
 * asked to be. VIRTIO 1.2 §2.7.8 (the used ring: the device writes the
 * element, then updates `idx`), §2.7.10 (publish, then decide whether to
 * notify), §5.2.6 (the status byte is the last byte written).
 *
 * The engine (./queue-engine.ts) owns the lifecycle and calls these only
 * while it is not halted; a throw from the ring is handed to its `fail`.
 *
 * @module
 */
import { errorText, type Logger } from "../../log.ts";
import { writeStatus } from "./execute.ts";
import type { BlkVirtqueue } from "./queue-engine-options.ts";
import type { BlkRequest } from "./request.ts";

/** Where the completions of one queue go. */
export interface BlkUsedTarget {
  readonly queue: BlkVirtqueue;
  readonly queueIndex: number;
  readonly log: Logger;
  /** The transport's notification (the engine decides whether the driver wants it). */
  readonly notify: (() => void) | null;
  /** Replaces publish → needsNotification → notify (the device framework's signalUsed). */
  readonly signalUsed: (() => void) | null;
  /** A ring violation while completing: the engine breaks the device. */
  readonly fail: (e: unknown) => void;
}

/** Adds used elements and publishes them in batches. */
export class BlkUsedPublisher {
  readonly #t: BlkUsedTarget;
  /** addUsed calls not yet published. */
  #unpublished = 0;

  constructor(target: BlkUsedTarget) {
    this.#t = target;
  }

  /** Writes the status byte and adds the used element (published by {@link flush}). */
  add(req: BlkRequest): void {
    const head = req.chain!.head;
    try {
      writeStatus(req);
      this.#t.queue.addUsed(head, req.usedLen);
      this.#unpublished++;
      this.#t.log.trace?.(
        `virtio_blk_req_complete vq ${this.#t.queueIndex} req ${head} status ${req.status} len ${req.usedLen}`,
      );
    } catch (e) {
      this.#t.fail(e);
    }
  }

  /** Publishes what was added and notifies the driver if it asked to be. */
  flush(): void {
    if (this.#unpublished === 0) return;
    this.#unpublished = 0;
    const { queue, queueIndex, log, signalUsed } = this.#t;
    if (signalUsed !== null) {
      log.trace?.(`virtio_blk_signal_used vq ${queueIndex}`);
      this.#callback("signalUsed", signalUsed);
      return;
    }
    try {
      queue.publishUsed();
      if (!queue.needsNotification()) return;
    } catch (e) {
      this.#t.fail(e);
      return;
    }
    log.trace?.(`virtio_notify vq ${queueIndex}`);
    this.#callback("notify", this.#t.notify!);
  }

  /** Sends the driver a used buffer notification now (one it missed; §2.7.7.2 allows spurious ones). */
  nudge(): void {
    const { queue, signalUsed } = this.#t;
    if (queue.forceNotification === undefined) return;
    queue.forceNotification();
    if (signalUsed !== null) this.#callback("signalUsed", signalUsed);
    else if (queue.needsNotification()) this.#callback("notify", this.#t.notify!);
  }

  /** Runs an embedder callback; a throw is logged, never propagated into the engine. */
  #callback(name: string, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.#t.log.error(
        `virtio-blk vq ${this.#t.queueIndex}: ${name} callback threw: ${errorText(e)}`,
      );
    }
  }
}

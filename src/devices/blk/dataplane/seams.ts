/**
 * The two pluggable parts of a virtio-blk dataplane, on each side of the
 * thread boundary: where guest memory comes from, and how kicks arrive and
 * calls leave. VIRTIO 1.2 §2.3 (notifications: the transport carries them;
 * the ring decides whether to send one) and §2.7 (the rings in guest memory).
 *
 * | part | control thread | worker |
 * |---|---|---|
 * | guest memory | {@link DataplaneBinding.exportMemory} describes it | a {@link MemoryAttacher} for that `kind` maps it |
 * | doorbells | {@link DataplaneBinding.queueDoorbells} describes a queue's | a {@link DoorbellOpener} for that `kind` opens {@link QueueDoorbells} |
 *
 * In-process transport (./inproc-binding.ts): memory is the transport's
 * SharedArrayBuffer regions (`GuestMemory.toTransferable` /
 * `fromTransferable`); a kick is the queue's KICK counter in the register
 * block, which the worker waits on with `Atomics.waitAsync`; a call is the
 * CALL counter plus the driver's doorbell.
 *
 * vhost-user (not built here; the seam it plugs into): memory would be the
 * region table with one fd per region (`{ kind, regions: [{ gpa, size,
 * mmapOffset, fd }] }`, fds being process-wide), which the worker maps
 * itself with src/native; kicks would be the kick eventfd watched on the
 * worker's own libuv loop (src/native/watch.ts), calls an `eventfdWrite` on
 * the call fd. Changing the call fd of a running ring is a new start of that
 * ring or a new doorbell kind.
 *
 * @module
 */
import type { GuestMemory } from "../../../memory/guest-memory.ts";
import type { BlkBacking } from "../backing.ts";
import type { BlkLogger } from "../log.ts";
import type { BackingSpec, DoorbellDescriptor, MemoryDescriptor } from "./protocol.ts";

/**
 * One queue's notifications, in the worker. Not reentrant: the worker's
 * thread only.
 */
export interface QueueDoorbells {
  /**
   * Starts taking kicks: calls `onKick` once at once (work queued before the
   * start is not lost), then once per kick, each time from a fresh event-loop
   * task (so I/O completions are never starved).
   */
  start(onKick: () => void): void;
  /** Sends a used-buffer notification (the ring already said one is needed). */
  call(): void;
  /** Stops taking kicks: `onKick` is not called after this returns. `call` still works. */
  stop(): void;
  /** Times the worker woke up for a kick (or found the kick count moved). */
  readonly wakeups: number;
  /** Calls sent. */
  readonly calls: number;
}

/** Maps the guest memory a descriptor names (worker side). */
export type MemoryAttacher = (descriptor: MemoryDescriptor) => GuestMemory | Promise<GuestMemory>;

/** Opens the doorbells of queue `queue` that a descriptor names (worker side). */
export type DoorbellOpener = (queue: number, descriptor: DoorbellDescriptor) => QueueDoorbells;

/** What a worker needs to open its disk. */
export interface BackingContext {
  /** The device's logical block size: the image size must be a multiple of it. */
  readonly logicalBlockSize: number;
  /** Logs go to the control thread. */
  readonly logger: BlkLogger;
}

/** Opens the disk a spec names (worker side). */
export type BackingOpener = (spec: BackingSpec, context: BackingContext) => Promise<BlkBacking>;

/** The control thread's half: how to describe memory and doorbells to the workers. */
export interface DataplaneBinding {
  /**
   * Describes the guest memory of an activation for the workers.
   *
   * @throws {TypeError} if this binding cannot share that memory.
   */
  exportMemory(memory: GuestMemory): MemoryDescriptor;
  /** Describes queue `index`'s doorbells for the worker that will run it. */
  queueDoorbells(index: number): DoorbellDescriptor;
}

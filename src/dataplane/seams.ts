/**
 * What a transport plugs into the dataplane: where guest memory comes from
 * and how kicks arrive and calls leave. VIRTIO 1.2 §2.3 (notifications: the
 * transport carries them; the ring decides whether one is needed) and §2.7
 * (the rings live in guest memory).
 *
 * | part | control side | dataplane runtime (worker or calling thread) |
 * |---|---|---|
 * | guest memory | describes it as a {@link MemoryDescriptor} | a {@link MemorySpace} for that `kind` maps it |
 * | doorbells | describe a queue's as a {@link DoorbellDescriptor} | a {@link DoorbellOpener} for that `kind` opens {@link QueueDoorbells} |
 *
 * Bindings so far: the in-process transport (SharedArrayBuffer regions,
 * counter doorbells in its register block: ../transport/inproc/) and
 * vhost-user (region fds mapped by the runtime itself, kick and call
 * eventfds: ../vhost-user/). Descriptors are plain data: they cross
 * `postMessage` unchanged (fds are process-wide numbers).
 *
 * @module
 */
import type { VirtioError } from "../errors.ts";
import type { GuestMemory } from "../memory/guest-memory.ts";
import type { RingInflightLog } from "../ring/open-ring.ts";

/** Where guest memory comes from; `kind` selects the runtime's {@link MemorySpace}. */
export interface MemoryDescriptor {
  readonly kind: string;
}

/** How kicks arrive and calls leave for one queue; `kind` selects the runtime's opener. */
export interface DoorbellDescriptor {
  readonly kind: string;
}

/**
 * One device's guest memory inside a runtime, for one descriptor kind.
 * Stateful: a transport whose memory changes piecewise (vhost-user adds and
 * removes regions) keeps what is already mapped.
 */
export interface MemorySpace {
  /**
   * Takes the memory a descriptor names (maps what is new, releases what is
   * gone). The result may be inconsistent until the transport's other side
   * finished its change (two regions overlap while one replaces the other);
   * {@link memory} is asked only at a queue start.
   *
   * @param busy queues of the device run (on the memory of an earlier
   *   update): nothing they may use can be released.
   * @throws {VirtioError} for memory the transport's other side got wrong;
   *   `RangeError` if `busy` and the update would release memory.
   */
  update(descriptor: MemoryDescriptor, busy: boolean): void | Promise<void>;
  /**
   * The guest memory as it is now, or null if there is none.
   *
   * @throws {VirtioError} if it is not usable (e.g. regions overlap).
   */
  memory(): GuestMemory | null;
  /**
   * The inflight log of queue `queue`, in the layout of its ring (`packed`:
   * VIRTIO_F_RING_PACKED was negotiated), where the transport keeps one
   * (vhost-user inflight I/O tracking); absent or null otherwise. A new log
   * object per call: each queue start recovers from what the shared memory
   * holds.
   */
  inflight?(queue: number, packed: boolean): RingInflightLog | null;
  /**
   * Memory the transport's other side pulled away under its mappings (e.g. a
   * vhost-user front-end shrank a region's file): a `MEM_FAULT` error naming
   * it, or null. Absent where memory cannot go away. Cheap: the runtime asks
   * after every run of a queue.
   */
  fault?(): VirtioError | null;
  /** Releases every mapping (the device is closed). */
  dispose(): void;
}

/** Creates a device's {@link MemorySpace} for one kind. */
export type MemorySpaceFactory = () => MemorySpace;

/**
 * One queue's notifications, in the runtime. Not reentrant: the runtime's
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
  /**
   * Replaces where calls go (vhost-user SET_VRING_CALL on a running ring);
   * absent where the transport cannot change it.
   */
  update?(descriptor: DoorbellDescriptor): void;
  /** Times the runtime woke up for a kick (or found the kick count moved). */
  readonly wakeups: number;
  /** Calls sent. */
  readonly calls: number;
}

/** Opens the doorbells of queue `queue` that a descriptor names. */
export type DoorbellOpener = (queue: number, descriptor: DoorbellDescriptor) => QueueDoorbells;

/** The control side's half of a transport binding: how to describe memory and doorbells. */
export interface DataplaneBinding {
  /**
   * Describes the guest memory of an activation for the runtime.
   *
   * @throws {TypeError} if this binding cannot share that memory.
   */
  exportMemory(memory: GuestMemory): MemoryDescriptor;
  /** Describes queue `index`'s doorbells. */
  queueDoorbells(index: number): DoorbellDescriptor;
}

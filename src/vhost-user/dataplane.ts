/**
 * Where the rings of a vhost-user connection run. The control side (the
 * connection's message handlers) tells a {@link VringDataplane} which guest
 * memory regions exist and when each ring starts and stops; the dataplane
 * maps the memory, builds the {@link DeviceQueue}s, watches the kick
 * eventfds and drives the device. Everything crossing this interface is plain
 * data (numbers, fd numbers), so a dataplane may live in a worker thread:
 * fds and mappings are process-wide, and only a worker's own ArrayBuffers
 * are thread-local.
 *
 * {@link LocalDataplane} runs the rings on the calling thread.
 *
 * Memory: "map ... and close the fd" — the caller keeps ownership of a
 * region's fd and closes it once `addRegion` has resolved (the mapping keeps
 * the memory alive). qemu/qemu docs/interop/vhost-user.rst "Memory access",
 * "Ring states".
 *
 * @module
 */
import { ErrorCode, VirtioError, isVirtioError } from "../errors.ts";
import { GuestMemory, type RegionDescriptor } from "../memory/guest-memory.ts";
import { DeviceQueue } from "../ring/device-queue.ts";
import {
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  hasFeature,
} from "../spec/virtio.ts";
import type { VhostUserBackend, VhostUserQueueContext } from "./backend.ts";
import type { EventFds, Mapping, MemoryMapper } from "./host.ts";
import type { RegionInfo } from "./memory-table.ts";

/** Everything needed to start one ring. Addresses are guest-physical. */
export interface RingStart {
  readonly size: number;
  readonly descAddr: number;
  readonly availAddr: number;
  readonly usedAddr: number;
  /** The next available-ring index to consume (SET_VRING_BASE, or where the last stop left it). */
  readonly nextAvail: number;
  /** Feature bits the front-end set. */
  readonly features: bigint;
  readonly kickFd: number;
  /** The call eventfd, or null (no used-buffer notifications). */
  readonly callFd: number | null;
}

/** What a dataplane reports about a running ring. */
export interface RingEvents {
  /** The ring (or the device through it) became broken. At most once per start. */
  broken(err: VirtioError): void;
}

/**
 * The rings of one connection. Calls come from the control side one at a
 * time (each awaited before the next); the fds passed in stay owned by the
 * caller.
 */
export interface VringDataplane {
  /** Maps a region from `fd` (the caller closes `fd` once this resolves). */
  addRegion(region: RegionInfo, fd: number): void | Promise<void>;
  /**
   * Unmaps a region (the first one mapped with this gpa, uva and size). No
   * ring is running when this is called. Rings started later see exactly the
   * regions mapped at their start.
   */
  removeRegion(region: RegionInfo): void | Promise<void>;
  /**
   * Starts ring `index`. A kick follows at once (work queued before the start
   * is not lost).
   *
   * @throws {VirtioError} `QUEUE_CONFIG` if the ring does not fit the memory
   *   (size, alignment, not inside one region): the ring does not start.
   */
  startRing(index: number, ring: RingStart, events: RingEvents): void | Promise<void>;
  /**
   * Stops ring `index`: no more kicks are taken, in-flight requests complete
   * into the used ring. Resolves to the next available index (for
   * VHOST_USER_GET_VRING_BASE).
   */
  stopRing(index: number): Promise<number>;
  /** Replaces the call eventfd of a running ring (the old one is no longer used once this resolves). */
  setCallFd(index: number, fd: number | null): void | Promise<void>;
  /**
   * A SET_CONFIG the control side's device accepted, for a dataplane whose
   * rings run on another instance of the device (a worker): apply it there
   * too. Absent when the dataplane drives the control side's own instance.
   */
  writeConfig?(offset: number, data: Uint8Array, flags: number): void | Promise<void>;
  /** VHOST_USER_RESET_DEVICE for such a separate device instance (every ring is stopped). */
  resetDevice?(): void | Promise<void>;
  /** Stops every ring and unmaps every region. */
  dispose(): Promise<void>;
}

/** Options of {@link LocalDataplane}. */
export interface LocalDataplaneOptions {
  readonly backend: VhostUserBackend;
  readonly mapper: MemoryMapper;
  /** Kick watches and call signals (on this thread's loop). */
  readonly eventFds: EventFds;
  /** Largest indirect table accepted, in entries (DeviceQueue default when absent). */
  readonly maxIndirectEntries?: number;
}

interface MappedRegion {
  readonly region: RegionInfo;
  readonly mapping: Mapping;
}

interface LocalRing {
  readonly queue: DeviceQueue;
  callFd: number | null;
  unwatch: () => void;
}

const hex = (v: number): string => `0x${v.toString(16)}`;

/** Runs the rings on the calling thread, driving a {@link VhostUserBackend}. */
export class LocalDataplane implements VringDataplane {
  readonly #backend: VhostUserBackend;
  readonly #mapper: MemoryMapper;
  readonly #eventFds: EventFds;
  readonly #maxIndirect: number | undefined;
  #regions: MappedRegion[] = [];
  #memory: GuestMemory | undefined;
  readonly #rings = new Map<number, LocalRing>();

  constructor(options: LocalDataplaneOptions) {
    this.#backend = options.backend;
    this.#mapper = options.mapper;
    this.#eventFds = options.eventFds;
    this.#maxIndirect = options.maxIndirectEntries;
  }

  /** Number of running rings (for tests and stats). */
  get runningRings(): number {
    return this.#rings.size;
  }

  addRegion(region: RegionInfo, fd: number): void {
    let mapping: Mapping;
    try {
      mapping = this.#mapper.map(fd, region.size, region.mmapOffset);
    } catch (e) {
      // A failed mmap is ours (e.g. ENOMEM); anything the mapper refused (an fd that is not a
      // shared-memory file, a file smaller than the region) is the front-end's.
      throw new VirtioError(
        isVirtioError(e, ErrorCode.NATIVE)
          ? ErrorCode.VHOST_USER_BACKEND
          : ErrorCode.VHOST_USER_PROTOCOL,
        `cannot map region gpa ${hex(region.gpa)} size ${hex(region.size)} from fd ${fd} at offset ${hex(region.mmapOffset)}: ${e instanceof Error ? e.message : String(e)}`,
        { gpa: region.gpa, size: region.size, fd },
      );
    }
    const total = mapping.windows.reduce((n, w) => n + w.byteLength, 0);
    if (total !== region.size) {
      mapping.unmap();
      throw new Error(`mapper returned ${total} bytes for a region of ${region.size}`);
    }
    this.#regions.push({ region, mapping });
    this.#memory = undefined;
  }

  removeRegion(region: RegionInfo): void {
    this.#assertIdle("removeRegion");
    const i = this.#regions.findIndex(
      (m) =>
        m.region.gpa === region.gpa && m.region.uva === region.uva && m.region.size === region.size,
    );
    if (i < 0) throw new RangeError(`no mapped region at gpa ${hex(region.gpa)}`);
    this.#regions[i]!.mapping.unmap();
    this.#regions.splice(i, 1);
    this.#memory = undefined;
  }

  async startRing(index: number, ring: RingStart, events: RingEvents): Promise<void> {
    if (this.#rings.has(index)) throw new RangeError(`ring ${index} is already running`);
    const memory = this.#guestMemory();
    const queue = new DeviceQueue(memory, {
      size: ring.size,
      descAddr: ring.descAddr,
      availAddr: ring.availAddr,
      usedAddr: ring.usedAddr,
      eventIdx: hasFeature(ring.features, VIRTIO_RING_F_EVENT_IDX),
      indirect: hasFeature(ring.features, VIRTIO_RING_F_INDIRECT_DESC),
      nextAvail: ring.nextAvail,
      // The used index is where the previous owner of the ring left it (reboot, reconnect).
      usedIdxFromMemory: true,
      onBroken: (err) => events.broken(err),
      ...(this.#maxIndirect === undefined ? {} : { maxIndirectEntries: this.#maxIndirect }),
    });
    const local: LocalRing = { queue, callFd: ring.callFd, unwatch: () => {} };
    this.#rings.set(index, local);
    try {
      await this.#backend.startQueue(index, queue, this.#context(local, memory, ring.features));
    } catch (e) {
      this.#rings.delete(index);
      throw e;
    }
    local.unwatch = this.#eventFds.watch(ring.kickFd, () => this.#kick(index));
    // A kick the driver sent before the ring started (e.g. before SET_VRING_ENABLE) is not lost.
    this.#kick(index);
  }

  async stopRing(index: number): Promise<number> {
    const ring = this.#rings.get(index);
    if (ring === undefined) throw new RangeError(`ring ${index} is not running`);
    ring.unwatch();
    try {
      await this.#backend.stopQueue(index);
    } finally {
      this.#rings.delete(index);
    }
    return ring.queue.nextAvail;
  }

  setCallFd(index: number, fd: number | null): void {
    const ring = this.#rings.get(index);
    if (ring !== undefined) ring.callFd = fd;
  }

  async dispose(): Promise<void> {
    const errors: unknown[] = [];
    for (const index of [...this.#rings.keys()]) {
      await this.stopRing(index).catch((e: unknown) => errors.push(e));
    }
    for (const m of this.#regions) m.mapping.unmap();
    this.#regions = [];
    this.#memory = undefined;
    if (errors.length > 0) throw errors[0];
  }

  #context(ring: LocalRing, memory: GuestMemory, features: bigint): VhostUserQueueContext {
    const notify = (): void => {
      if (ring.callFd !== null) this.#eventFds.signal(ring.callFd);
    };
    return {
      memory,
      features,
      notify,
      signalUsed: () => {
        ring.queue.publishUsed();
        if (!ring.queue.needsNotification()) return false;
        notify();
        return true;
      },
      markBroken: (err) => ring.queue.markBroken(err),
    };
  }

  #kick(index: number): void {
    const ring = this.#rings.get(index);
    if (ring === undefined) return;
    try {
      this.#backend.queueNotify(index);
    } catch (e) {
      // A ring violation the device let through has already broken the queue
      // (markBroken keeps the first error); anything else is a device bug.
      // Either way the ring stops instead of the exception reaching the loop.
      ring.queue.markBroken(
        isVirtioError(e)
          ? e
          : new VirtioError(
              ErrorCode.VHOST_USER_BACKEND,
              `device failed on a kick of ring ${index}: ${String(e)}`,
              {
                index,
              },
            ),
      );
    }
  }

  #guestMemory(): GuestMemory {
    if (this.#memory !== undefined) return this.#memory;
    if (this.#regions.length === 0) {
      throw new VirtioError(
        ErrorCode.VHOST_USER_PROTOCOL,
        "a ring was started before any guest memory was shared",
      );
    }
    const descriptors: RegionDescriptor[] = [];
    for (const { region, mapping } of this.#regions) {
      let gpa = region.gpa;
      for (const w of mapping.windows) {
        descriptors.push({
          guestPhysAddr: gpa,
          size: w.byteLength,
          buffer: w.buffer,
          bufferOffset: w.byteOffset,
        });
        gpa += w.byteLength;
      }
    }
    this.#memory = new GuestMemory(descriptors);
    return this.#memory;
  }

  #assertIdle(what: string): void {
    if (this.#rings.size > 0)
      throw new RangeError(`${what} while ${this.#rings.size} rings are running`);
  }
}

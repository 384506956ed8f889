/**
 * vhost-user's binding of the dataplane: guest memory is the front-end's
 * region table, each region mapped by the runtime itself from its fd; kicks
 * arrive on the ring's kick eventfd and calls leave on its call eventfd.
 * qemu/qemu docs/interop/vhost-user.rst "Memory access" ("map ... the file
 * descriptor"), VHOST_USER_SET_VRING_KICK / _CALL, "eventfd or pipe" ("the
 * 8-value itself has no meaning and should not be interpreted"). Works on
 * any thread: fds and mappings are process-wide; only a runtime's own
 * ArrayBuffers are thread-local. Knows no device.
 *
 * fd ownership: the control side owns every fd it describes and closes it
 * only after the runtime's reply (a region fd once it is mapped, an old call
 * fd once the runtime has switched to the new one), so a runtime never
 * touches an fd number that was closed and possibly reused.
 *
 * @module
 */
import type {
  DoorbellDescriptor,
  DoorbellOpener,
  MemoryDescriptor,
  MemorySpace,
  QueueDoorbells,
} from "../dataplane/seams.ts";
import { ErrorCode, VirtioError, isVirtioError } from "../errors.ts";
import { GuestMemory, type RegionDescriptor } from "../memory/guest-memory.ts";
import { PackedInflightLog } from "../ring/inflight-packed.ts";
import { SplitInflightLog } from "../ring/inflight-split.ts";
import type { RingInflightLog } from "../ring/open-ring.ts";
import { inflightRegionSize } from "../spec/vhost-user.ts";
import type { EventFds, Mapping, MemoryMapper } from "./host.ts";

/** Memory kind: the front-end's region table. */
export const VHOST_USER_MEMORY = "vhost-user-regions";
/** Doorbell kind: a ring's kick and call eventfds. */
export const EVENTFD_DOORBELLS = "eventfd";

/** One region of the table; `fd` is -1 for a region the runtime has mapped already. */
export interface RegionEntry {
  /** The control side's name for the region (unique per device). */
  readonly id: number;
  readonly gpa: number;
  readonly size: number;
  readonly mmapOffset: number;
  readonly fd: number;
}

/** The inflight tracking buffer; `fd` is -1 once the runtime has mapped this `id`. */
export interface InflightEntry {
  readonly id: number;
  readonly fd: number;
  readonly size: number;
  readonly offset: number;
  readonly numQueues: number;
  readonly queueSize: number;
}

/** The whole region table: regions not listed are unmapped, new ones mapped from their fd. */
export interface RegionTableDescriptor extends MemoryDescriptor {
  readonly kind: typeof VHOST_USER_MEMORY;
  readonly regions: readonly RegionEntry[];
  /** The inflight buffer (SET_INFLIGHT_FD), if any. */
  readonly inflight?: InflightEntry;
  /** Map region fds that can shrink (not sealed; the operator's choice; default false). */
  readonly allowUnsealed?: boolean;
}

/** A ring's eventfds. */
export interface EventfdDoorbellDescriptor extends DoorbellDescriptor {
  readonly kind: typeof EVENTFD_DOORBELLS;
  readonly kickFd: number;
  /** The call eventfd, or null (no used-buffer notifications). */
  readonly callFd: number | null;
}

const hex = (v: number): string => `0x${v.toString(16)}`;

/** The runtime's mappings of one device's regions, kept across table changes. */
export class RegionMemorySpace implements MemorySpace {
  readonly #mapper: MemoryMapper;
  readonly #mapped = new Map<number, { entry: RegionEntry; mapping: Mapping }>();
  #table: readonly RegionEntry[] = [];
  #memory: GuestMemory | null = null;
  #inflight: { entry: InflightEntry; mapping: Mapping; bytes: Uint8Array } | null = null;
  #fault: VirtioError | null = null;

  constructor(mapper: MemoryMapper) {
    this.#mapper = mapper;
  }

  /**
   * @throws {VirtioError} `VHOST_USER_PROTOCOL` for a region the front-end's
   *   fd cannot back; `RangeError` for removing a region while rings run.
   */
  update(descriptor: MemoryDescriptor, busy: boolean): void {
    const d = descriptor as RegionTableDescriptor;
    const table = d.regions;
    const keep = new Set(table.map((r) => r.id));
    const gone = [...this.#mapped.keys()].filter((id) => !keep.has(id));
    if (busy && gone.length > 0)
      throw new RangeError(`guest memory region ${gone[0]} removed while rings run`);
    for (const id of gone) {
      this.#mapped.get(id)!.mapping.unmap();
      this.#mapped.delete(id);
    }
    for (const entry of table) {
      if (this.#mapped.has(entry.id)) continue;
      if (entry.fd < 0) throw new RangeError(`region ${entry.id} has no fd and is not mapped`);
      const what = `region gpa ${hex(entry.gpa)}`;
      this.#mapped.set(entry.id, {
        entry,
        mapping: this.#map(entry, d.allowUnsealed === true, what),
      });
    }
    this.#table = table;
    this.#memory = null;
    this.#fault = null; // recomputed from the mappings that remain
    this.#updateInflight(d.inflight, busy, d.allowUnsealed === true);
  }

  /** Maps a new inflight buffer, or unmaps one that is gone (never while rings run on it). */
  #updateInflight(entry: InflightEntry | undefined, busy: boolean, allowUnsealed: boolean): void {
    if (this.#inflight !== null && this.#inflight.entry.id === entry?.id) return;
    if (this.#inflight !== null) {
      if (busy) throw new RangeError("the inflight buffer changed while rings run");
      this.#inflight.mapping.unmap();
      this.#inflight = null;
    }
    if (entry === undefined) return;
    const region = {
      id: entry.id,
      gpa: 0,
      size: entry.size,
      mmapOffset: entry.offset,
      fd: entry.fd,
    };
    const mapping = this.#map(region, allowUnsealed, "the inflight buffer");
    const w = mapping.windows;
    if (w.length !== 1) {
      mapping.unmap();
      throw new VirtioError(
        ErrorCode.VHOST_USER_PROTOCOL,
        `inflight buffer of ${entry.size} bytes is too large`,
      );
    }
    this.#inflight = {
      entry,
      mapping,
      bytes: new Uint8Array(w[0]!.buffer, w[0]!.byteOffset, w[0]!.byteLength),
    };
  }

  /**
   * Queue `queue`'s part of the inflight buffer as a log of the layout of its
   * ring (`packed`: VIRTIO_F_RING_PACKED), or null without a buffer or for a
   * queue it has no room for (SET_INFLIGHT_FD checked the size for the
   * features negotiated then; the front-end may have changed them since).
   */
  inflight(queue: number, packed: boolean): RingInflightLog | null {
    const i = this.#inflight;
    if (i === null || queue >= i.entry.numQueues) return null;
    const stride = inflightRegionSize(i.entry.queueSize, packed);
    if ((queue + 1) * stride > i.bytes.byteLength) return null;
    const region = i.bytes.subarray(queue * stride, (queue + 1) * stride);
    return packed
      ? new PackedInflightLog(region, i.entry.queueSize)
      : new SplitInflightLog(region, i.entry.queueSize);
  }

  /**
   * The first mapping whose file shrank under it (accesses absorbed by the
   * SIGBUS guard) as a `MEM_FAULT` error naming it, or null. The memory
   * stays unusable while that mapping is in the table.
   */
  fault(): VirtioError | null {
    if (this.#fault !== null) return this.#fault;
    for (const { entry, mapping } of this.#mapped.values()) {
      const n = mapping.faults?.() ?? 0;
      if (n > 0)
        return (this.#fault = faultError(`guest memory region gpa ${hex(entry.gpa)}`, entry, n));
    }
    const i = this.#inflight;
    const n = i?.mapping.faults?.() ?? 0;
    if (n > 0) this.#fault = faultError("the inflight buffer", { size: i!.entry.size, gpa: 0 }, n);
    return this.#fault;
  }

  /** Guest memory of the table's regions, in table order (null for an empty table); built once per table. */
  memory(): GuestMemory | null {
    if (this.#memory === null && this.#table.length > 0) this.#memory = this.#build(this.#table);
    return this.#memory;
  }

  dispose(): void {
    for (const m of this.#mapped.values()) m.mapping.unmap();
    this.#mapped.clear();
    this.#inflight?.mapping.unmap();
    this.#inflight = null;
    this.#table = [];
    this.#memory = null;
    this.#fault = null;
  }

  #map(r: RegionEntry, allowUnsealed: boolean, what: string): Mapping {
    let mapping: Mapping;
    try {
      mapping = this.#mapper.map(r.fd, r.size, r.mmapOffset, { allowUnsealed });
    } catch (e) {
      // A failed mmap is ours (e.g. ENOMEM); anything the mapper refused (an fd that is not a
      // shared-memory file, a file smaller than the region) is the front-end's.
      throw new VirtioError(
        isVirtioError(e, ErrorCode.NATIVE)
          ? ErrorCode.VHOST_USER_BACKEND
          : ErrorCode.VHOST_USER_PROTOCOL,
        `cannot map ${what} size ${hex(r.size)} from fd ${r.fd} at offset ${hex(r.mmapOffset)}: ${e instanceof Error ? e.message : String(e)}`,
        { gpa: r.gpa, size: r.size, fd: r.fd },
      );
    }
    const total = mapping.windows.reduce((n, w) => n + w.byteLength, 0);
    if (total !== r.size) {
      mapping.unmap();
      throw new Error(`mapper returned ${total} bytes for a region of ${r.size}`);
    }
    return mapping;
  }

  #build(table: readonly RegionEntry[]): GuestMemory {
    const descriptors: RegionDescriptor[] = [];
    for (const entry of table) {
      let gpa = entry.gpa;
      for (const w of this.#mapped.get(entry.id)!.mapping.windows) {
        descriptors.push({
          guestPhysAddr: gpa,
          size: w.byteLength,
          buffer: w.buffer,
          bufferOffset: w.byteOffset,
        });
        gpa += w.byteLength;
      }
    }
    return new GuestMemory(descriptors);
  }
}

function faultError(what: string, r: { gpa: number; size: number }, faults: number): VirtioError {
  return new VirtioError(
    ErrorCode.MEM_FAULT,
    `${what} size ${hex(r.size)}: the front-end shrank its file under the mapping ` +
      `(${faults} access${faults === 1 ? "" : "es"} past its end read zeros, wrote nothing)`,
    { gpa: r.gpa, size: r.size, faults },
  );
}

/** A ring's kick watch and call signal on the runtime's own loop. */
class EventfdDoorbells implements QueueDoorbells {
  readonly #fds: EventFds;
  readonly #kickFd: number;
  #callFd: number | null;
  #unwatch: (() => void) | null = null;
  wakeups = 0;
  calls = 0;

  constructor(fds: EventFds, d: EventfdDoorbellDescriptor) {
    this.#fds = fds;
    this.#kickFd = d.kickFd;
    this.#callFd = d.callFd;
  }

  start(onKick: () => void): void {
    if (this.#unwatch !== null) throw new TypeError("doorbells already started");
    const kick = (): void => {
      this.wakeups++;
      onKick();
    };
    this.#unwatch = this.#fds.watch(this.#kickFd, kick);
    // A kick the driver sent before the ring started (e.g. before SET_VRING_ENABLE) is not lost.
    kick();
  }

  call(): void {
    if (this.#callFd === null) return;
    this.calls++;
    this.#fds.signal(this.#callFd);
  }

  stop(): void {
    this.#unwatch?.();
    this.#unwatch = null;
  }

  update(descriptor: DoorbellDescriptor): void {
    this.#callFd = (descriptor as EventfdDoorbellDescriptor).callFd;
  }
}

/** Runtime side: opens {@link EventfdDoorbellDescriptor}s with `fds` (the native eventfds, or fakes). */
export function eventfdDoorbellOpener(fds: EventFds): DoorbellOpener {
  return (_queue, d) => new EventfdDoorbells(fds, d as EventfdDoorbellDescriptor);
}

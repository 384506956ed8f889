/**
 * Where the rings of a vhost-user connection run, as the connection's
 * handlers see it: they tell a {@link VringDataplane} which guest memory
 * regions exist and when each ring starts and stops. The implementation is
 * ./rings.ts over the project's dataplane runtime (on worker threads or on
 * the calling thread). qemu/qemu docs/interop/vhost-user.rst "Memory
 * access", "Ring states".
 *
 * Memory: "map ... and close the fd" — the caller keeps ownership of a
 * region's fd and closes it once `addRegion` has resolved (the mapping keeps
 * the memory alive).
 *
 * @module
 */
import type { VirtioError } from "../errors.ts";
import type { RingStart } from "../ring/open-ring.ts";
import type { RegionInfo } from "./memory-table.ts";

/** Everything needed to start one ring: where it lies (guest-physical) and its eventfds. */
export interface VringStart extends RingStart {
  readonly kickFd: number;
  /** The call eventfd, or null (no used-buffer notifications). */
  readonly callFd: number | null;
}

/** The inflight tracking buffer of SET_INFLIGHT_FD (the caller owns the fd). */
export interface InflightShm {
  readonly fd: number;
  /** Bytes from `offset`: at least `numQueues` queue regions for `queueSize` entries. */
  readonly size: number;
  readonly offset: number;
  readonly numQueues: number;
  readonly queueSize: number;
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
  addRegion(region: RegionInfo, fd: number): Promise<void>;
  /**
   * Unmaps a region (the first one mapped with this gpa, uva and size). No
   * ring is running when this is called. Rings started later see exactly the
   * regions mapped at their start.
   */
  removeRegion(region: RegionInfo): Promise<void>;
  /**
   * Starts ring `index`. A kick follows at once (work queued before the start
   * is not lost).
   *
   * @throws {VirtioError} `QUEUE_CONFIG` if the ring does not fit the memory
   *   (size, alignment, not inside one region): the ring does not start.
   */
  startRing(index: number, ring: VringStart, events: RingEvents): Promise<void>;
  /**
   * Stops ring `index`: no more kicks are taken, in-flight requests complete
   * into the used ring. Resolves to the next available index (for
   * VHOST_USER_GET_VRING_BASE).
   */
  stopRing(index: number): Promise<number>;
  /** Replaces the call eventfd of a running ring (the old one is no longer used once this resolves). */
  setCallFd(index: number, fd: number | null): Promise<void>;
  /**
   * Maps the inflight tracking buffer (or forgets it: null); rings started
   * later keep their inflight logs in it. No ring is running. Absent: the
   * dataplane cannot track (INFLIGHT_SHMFD is not offered).
   *
   * @throws {VirtioError} `VHOST_USER_PROTOCOL` for a buffer the fd cannot back.
   */
  setInflight?(inflight: InflightShm | null): Promise<void>;
  /** Stops every ring and unmaps every region. */
  dispose(): Promise<void>;
}

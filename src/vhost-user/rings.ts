/**
 * The rings of one vhost-user connection on the project's dataplane: a
 * {@link VringDataplane} over a device hosted by a dataplane pool (worker
 * threads, or the calling thread). The region table and each ring's
 * eventfds are described with ./binding.ts; the runtime maps and watches
 * them itself. qemu/qemu docs/interop/vhost-user.rst "Memory access",
 * "Ring states".
 *
 * @module
 */
import type { DataplaneDeviceHandle, DeviceEvent } from "../dataplane/device-handle.ts";
import { ErrorCode, VirtioError } from "../errors.ts";
import {
  EVENTFD_DOORBELLS,
  VHOST_USER_MEMORY,
  type EventfdDoorbellDescriptor,
  type RegionEntry,
  type RegionTableDescriptor,
} from "./binding.ts";
import type { InflightShm, RingEvents, VringDataplane, VringStart } from "./dataplane.ts";
import type { RegionInfo } from "./memory-table.ts";

interface Region {
  readonly id: number;
  readonly info: RegionInfo;
}

interface Running {
  readonly activation: number;
  readonly kickFd: number;
  readonly events: RingEvents;
}

const hex = (v: number): string => `0x${v.toString(16)}`;

/**
 * Bound on one ring's stop (GET_VRING_BASE waits for the ring's requests in
 * flight): generous, since a slow disk is not a fault; the engine's
 * watchdog names stuck requests long before.
 */
export const RING_STOP_TIMEOUT_MS = 5 * 60_000;

/** Activation numbers are unique across every connection of the process. */
let nextActivation = 1;

/** One connection's rings; broken reports of its ring starts reach the connection's handlers. */
export class DataplaneRings implements VringDataplane {
  readonly #device: Promise<DataplaneDeviceHandle>;
  #regions: Region[] = [];
  #nextRegion = 1;
  readonly #rings = new Map<number, Running>();
  #unlisten: (() => void) | null = null;
  readonly #allowUnsealed: boolean;
  #inflight: { id: number; shm: InflightShm; mapped: boolean } | null = null;

  /**
   * @param device the device the rings belong to (or its opening).
   * @param options.allowUnsealedMemory map region fds that can shrink (see `MapOptions`).
   */
  constructor(
    device: DataplaneDeviceHandle | Promise<DataplaneDeviceHandle>,
    options: { readonly allowUnsealedMemory?: boolean } = {},
  ) {
    this.#allowUnsealed = options.allowUnsealedMemory === true;
    this.#device = Promise.resolve(device);
    this.#device.then(
      (d) => (this.#unlisten = d.listen((ev) => this.#onDeviceEvent(ev))),
      () => {}, // a failed open is reported by every call
    );
  }

  /** Number of running rings (for tests and stats). */
  get runningRings(): number {
    return this.#rings.size;
  }

  async addRegion(region: RegionInfo, fd: number): Promise<void> {
    const added: Region = { id: this.#nextRegion++, info: region };
    await (await this.#device).setMemory(this.#table([...this.#regions, added], added.id, fd));
    this.#regions.push(added);
  }

  async removeRegion(region: RegionInfo): Promise<void> {
    if (this.#rings.size > 0)
      throw new RangeError(`removeRegion while ${this.#rings.size} rings are running`);
    const i = this.#regions.findIndex(
      (r) => r.info.gpa === region.gpa && r.info.uva === region.uva && r.info.size === region.size,
    );
    if (i < 0) throw new RangeError(`no mapped region at gpa ${hex(region.gpa)}`);
    const rest = this.#regions.filter((_, j) => j !== i);
    await (await this.#device).setMemory(this.#table(rest));
    this.#regions = rest;
  }

  async startRing(index: number, ring: VringStart, events: RingEvents): Promise<void> {
    if (this.#rings.has(index)) throw new RangeError(`ring ${index} is already running`);
    if (this.#regions.length === 0) {
      throw new VirtioError(
        ErrorCode.VHOST_USER_PROTOCOL,
        "a ring was started before any guest memory was shared",
      );
    }
    const { kickFd, callFd, ...start } = ring;
    const running: Running = { activation: nextActivation++, kickFd, events };
    this.#rings.set(index, running);
    try {
      // The used index is where the previous owner of the ring left it (reboot, reconnect).
      await (
        await this.#device
      ).startQueue(
        index,
        running.activation,
        { ...start, usedIdxFromMemory: true },
        bells(kickFd, callFd),
      );
    } catch (e) {
      this.#rings.delete(index);
      throw e;
    }
  }

  async stopRing(index: number): Promise<number> {
    if (!this.#rings.has(index)) throw new RangeError(`ring ${index} is not running`);
    try {
      const device = await this.#device;
      return (await device.stopQueue(index, { timeoutMs: RING_STOP_TIMEOUT_MS })).base;
    } finally {
      this.#rings.delete(index);
    }
  }

  async setCallFd(index: number, fd: number | null): Promise<void> {
    const r = this.#rings.get(index);
    if (r !== undefined) await (await this.#device).setDoorbells(index, bells(r.kickFd, fd));
  }

  async setInflight(shm: InflightShm | null): Promise<void> {
    if (this.#rings.size > 0)
      throw new RangeError(`setInflight while ${this.#rings.size} rings are running`);
    const next = shm === null ? null : { id: this.#nextRegion++, shm, mapped: false };
    const previous = this.#inflight;
    this.#inflight = next;
    try {
      await (await this.#device).setMemory(this.#table(this.#regions));
    } catch (e) {
      this.#inflight = previous;
      throw e;
    }
    if (next !== null) next.mapped = true;
  }

  async dispose(): Promise<void> {
    const errors: unknown[] = [];
    for (const index of [...this.#rings.keys()])
      await this.stopRing(index).catch((e: unknown) => errors.push(e));
    if (this.#regions.length > 0 || this.#inflight !== null) {
      this.#regions = [];
      this.#inflight = null;
      await (await this.#device).setMemory(this.#table([])).catch((e: unknown) => errors.push(e));
    }
    await this.#device.catch(() => {});
    this.#unlisten?.();
    if (errors.length > 0) throw errors[0];
  }

  /** A device event: a broken report reaches the ring whose start it names. */
  #onDeviceEvent(ev: DeviceEvent): void {
    for (const r of this.#rings.values()) {
      if (ev.type === "failed") {
        r.events.broken(failed(ev.error));
      } else if (r.activation === ev.activation) {
        r.events.broken(asVirtioError(ev.error));
        return;
      }
    }
  }

  #table(regions: readonly Region[], newId = -1, fd = -1): RegionTableDescriptor {
    const entries: RegionEntry[] = regions.map((r) => ({
      id: r.id,
      gpa: r.info.gpa,
      size: r.info.size,
      mmapOffset: r.info.mmapOffset,
      fd: r.id === newId ? fd : -1,
    }));
    const i = this.#inflight;
    return {
      kind: VHOST_USER_MEMORY,
      regions: entries,
      ...(this.#allowUnsealed ? { allowUnsealed: true } : {}),
      ...(i === null ? {} : { inflight: { id: i.id, ...i.shm, fd: i.mapped ? -1 : i.shm.fd } }),
    };
  }
}

function bells(kickFd: number, callFd: number | null): EventfdDoorbellDescriptor {
  return { kind: EVENTFD_DOORBELLS, kickFd, callFd };
}

function asVirtioError(e: Error): VirtioError {
  return e instanceof VirtioError
    ? e
    : new VirtioError(ErrorCode.VHOST_USER_BACKEND, `dataplane: ${e.message}`);
}

function failed(e: Error): VirtioError {
  return new VirtioError(ErrorCode.VHOST_USER_BACKEND, `dataplane worker failed: ${e.message}`);
}

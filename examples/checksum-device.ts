/**
 * An example device type for the in-process transport: a "checksum" device
 * with one queue. For each request it reads the device-readable bytes,
 * computes their 32-bit FNV-1a hash and writes it (le32) into the start of
 * the device-writable part. In "null" mode it only returns each chain
 * (used length 0), which measures the ring and transport alone.
 *
 * It shows the shape of a {@link VirtioDeviceBackend}: activate keeps the
 * queues, queueNotify runs the standard loop (disable notifications → pop
 * everything → re-enable and re-check → publish and maybe notify).
 *
 * @module
 */
import type { ActivationContext, VirtioDeviceBackend } from "../src/device/backend.ts";
import { isVirtioError } from "../src/errors.ts";
import type { GuestMemory, GuestSlice } from "../src/memory/guest-memory.ts";
import type { DescriptorChain } from "../src/ring/chain.ts";
import type { DeviceRing } from "../src/ring/device-ring.ts";
import { VIRTIO_F_RING_PACKED, VIRTIO_RING_F_EVENT_IDX, featureBit } from "../src/spec/virtio.ts";

/** A device id from the range the spec leaves for experiments. */
export const CHECKSUM_DEVICE_ID = 0xffff;

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/** FNV-1a over `bytes` (the driver computes the expected value with it). */
export function fnv1a(bytes: Uint8Array): number {
  let h = FNV_OFFSET;
  for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i]!, FNV_PRIME);
  return h >>> 0;
}

/** Counters of the device. */
export interface ChecksumDeviceStats {
  requests: number;
  bytesRead: number;
  bytesWritten: number;
}

/** The checksum device (see the module documentation). */
export class ChecksumDevice implements VirtioDeviceBackend {
  readonly name = "checksum";
  readonly deviceId = CHECKSUM_DEVICE_ID;
  readonly queueMaxSizes: readonly number[];
  readonly features = featureBit(VIRTIO_RING_F_EVENT_IDX) | featureBit(VIRTIO_F_RING_PACKED);
  readonly stats: ChecksumDeviceStats = { requests: 0, bytesRead: 0, bytesWritten: 0 };
  readonly #mode: "checksum" | "null";
  #ctx: ActivationContext | null = null;
  #queue: DeviceRing | null = null;
  /** Region 0 as one slice: segments inside it are read without any allocation. */
  #slice: GuestSlice | null = null;
  #sliceStart = 0;
  #memory: GuestMemory | null = null;

  constructor(mode: "checksum" | "null" = "checksum", queueSize = 256) {
    this.#mode = mode;
    this.queueMaxSizes = [queueSize];
  }

  activate(ctx: ActivationContext): void {
    this.#ctx = ctx;
    this.#queue = ctx.queues[0] ?? null;
    const r = ctx.memory.layout[0]!;
    this.#memory = ctx.memory;
    this.#slice = ctx.memory.slice(r.guestPhysAddr, r.size);
    this.#sliceStart = r.guestPhysAddr;
  }

  queueNotify(index: number): void {
    const q = this.#queue;
    const ctx = this.#ctx;
    if (index !== 0 || q === null || ctx === null) return;
    try {
      q.disableNotification();
      for (;;) {
        for (let c = q.popAvail(); c !== null; c = q.popAvail()) this.#serve(q, c);
        // enableNotification re-arms and re-checks: true means work slipped in.
        if (!q.enableNotification()) break;
        q.disableNotification();
      }
    } catch (e) {
      // A ring violation: the framework has made the device broken; nothing more to do.
      if (!isVirtioError(e)) throw e;
    }
    ctx.signalUsed(0);
  }

  reset(): void {
    this.#ctx = null;
    this.#queue = null;
  }

  #serve(q: DeviceRing, c: DescriptorChain): void {
    this.stats.requests++;
    if (this.#mode === "null") {
      q.addUsed(c.head, 0);
      return;
    }
    let h = FNV_OFFSET;
    for (let s = 0; s < c.numReadable; s++) h = this.#hash(h, c.segAddr[s]!, c.segLen[s]!);
    this.stats.bytesRead += c.readableBytes;
    let written = 0;
    for (let s = c.numReadable; s < c.numSegs && written < 4; s++) {
      const addr = c.segAddr[s]!;
      const n = Math.min(c.segLen[s]!, 4 - written);
      for (let i = 0; i < n; i++, written++)
        this.#writeByte(addr + i, (h >>> (8 * written)) & 0xff);
    }
    this.stats.bytesWritten += written;
    q.addUsed(c.head, written);
  }

  #hash(h: number, addr: number, len: number): number {
    const s = this.#slice!;
    const off = addr - this.#sliceStart;
    if (off >= 0 && off + len <= s.length) {
      for (let i = 0; i < len; i++) h = Math.imul(h ^ s.readU8(off + i), FNV_PRIME);
      return h;
    }
    // Outside region 0 (a multi-region memory): one copy.
    const bytes = new Uint8Array(len);
    this.#memory!.read(addr, bytes);
    for (let i = 0; i < len; i++) h = Math.imul(h ^ bytes[i]!, FNV_PRIME);
    return h;
  }

  #writeByte(addr: number, v: number): void {
    const s = this.#slice!;
    const off = addr - this.#sliceStart;
    if (off >= 0 && off < s.length) s.writeU8(off, v);
    else this.#memory!.writeU8(addr, v);
  }
}

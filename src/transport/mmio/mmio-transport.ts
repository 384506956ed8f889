/**
 * The virtio-mmio register model: a device of the framework
 * ({@link VirtioDevice}) behind the register window a driver sees, version 2
 * or the legacy version 1. Register reads and writes in; device operations
 * and the interrupt line out. Pure TypeScript, no emulator in it. VIRTIO
 * 1.2 §4.2.2 (register layout and its device / driver requirements),
 * §4.2.3.2 (virtqueue configuration), §4.2.3.3 (QueueNotify), §4.2.3.4
 * (InterruptStatus / InterruptACK, one interrupt line), §4.2.4 (legacy
 * interface: GuestPageSize, QueueNum, QueueAlign, QueuePFN; the ring in the
 * §2.7.2 layout).
 *
 * Register policy (docs/conformance.md "Emulated transports"):
 * - control registers (below 0x100) take 32-bit aligned accesses only
 *   (§4.2.2.2 "The driver MUST only use 32 bit wide and aligned reads and
 *   writes to access the control registers"); the device-specific
 *   configuration at 0x100 takes 1, 2 or 4 bytes at any offset;
 * - a bad access (other width, unaligned, outside the window, a reserved or
 *   other version's register, a read of a write-only or a write to a
 *   read-only register, a bad value) reads 0 / is ignored, with one log
 *   line naming the register; nothing throws;
 * - writes the device framework refuses in the current status are ignored
 *   and logged there.
 *
 * Version 2 needs VIRTIO_F_VERSION_1 (the framework refuses FEATURES_OK
 * without it). Version 1 is a legacy interface: DeviceFeatures shows bits
 * 0–31 only and the device runs with {@link VirtioDevice.beginLegacy}.
 * Status 0 starts the device's reset (asynchronous: Status reads the old
 * value until it is done, §2.4) and clears InterruptStatus at once
 * ("Upon reset, the device MUST clear all bits in InterruptStatus").
 *
 * @module
 */
import type { VirtioDevice } from "../../device/virtio-device.ts";
import * as m from "../../spec/virtio-mmio.ts";
import { VIRTIO_PCI_VENDOR_ID } from "../../spec/virtio-pci.ts";
import { legacyRingParts } from "../../spec/virtqueue.ts";
import { InterruptState, type InterruptLine } from "../interrupt.ts";
import { RegisterLog, hex, isAccessWidth, maskWidth } from "../register-log.ts";
import {
  QueueAddressRegisters,
  readDeviceConfig,
  writeDeviceConfig,
  type QueuePart,
} from "../register-device.ts";
import { mmioRegister, mmioRegisterName } from "./registers.ts";

/** Options of {@link VirtioMmioTransport}. */
export interface MmioTransportOptions {
  /** The device's interrupt line. */
  readonly interrupt: InterruptLine;
  /** 2 (default) or the legacy 1. */
  readonly version?: 1 | 2;
  /** VendorID register (default 0x1af4). */
  readonly vendorId?: number;
  /** Where log lines go (default console.warn). */
  readonly log?: (line: string) => void;
}

/** §4.2.4: the legacy page and used-ring alignment a driver gets before it writes its own. */
const DEFAULT_LEGACY_PAGE = 4096;

/** The 64-bit queue address registers of version 2: offset → part and half. */
const QUEUE_ADDRESS: ReadonlyMap<number, readonly [QueuePart, boolean]> = new Map([
  [m.VIRTIO_MMIO_QUEUE_DESC_LOW, ["desc", false]],
  [m.VIRTIO_MMIO_QUEUE_DESC_HIGH, ["desc", true]],
  [m.VIRTIO_MMIO_QUEUE_AVAIL_LOW, ["driver", false]],
  [m.VIRTIO_MMIO_QUEUE_AVAIL_HIGH, ["driver", true]],
  [m.VIRTIO_MMIO_QUEUE_USED_LOW, ["device", false]],
  [m.VIRTIO_MMIO_QUEUE_USED_HIGH, ["device", true]],
]);

/**
 * One virtio-mmio device window.
 *
 * @example
 * ```ts
 * const mmio = new VirtioMmioTransport(device, { interrupt: { raise, lower } });
 * // the emulator forwards guest accesses to [base, base + mmio.size):
 * const v = mmio.read(offset, 4);
 * mmio.write(offset, 4, value);
 * ```
 */
export class VirtioMmioTransport {
  readonly device: VirtioDevice;
  readonly version: 1 | 2;
  /** Bytes of the register window (registers, then the configuration space). */
  readonly size: number;
  readonly interrupts: InterruptState;
  readonly #vendorId: number;
  readonly #log: RegisterLog;
  readonly #addresses: QueueAddressRegisters;
  /** Legacy: per-queue QueueAlign and the QueuePFN last taken. */
  readonly #align: Uint32Array;
  readonly #pfn: Uint32Array;
  #deviceFeaturesSel = 0;
  #driverFeaturesSel = 0;
  #queueSel = 0;
  #pageSize = DEFAULT_LEGACY_PAGE;
  #pending: Promise<void> = Promise.resolve();

  constructor(device: VirtioDevice, options: MmioTransportOptions) {
    this.device = device;
    this.version = options.version ?? 2;
    if (this.version !== 1 && this.version !== 2)
      throw new RangeError(`virtio-mmio version ${String(this.version)} is not 1 or 2`);
    this.#vendorId = (options.vendorId ?? VIRTIO_PCI_VENDOR_ID) >>> 0;
    const sink = options.log ?? ((line: string) => console.warn(line));
    this.#log = new RegisterLog(`${device.backend.name} (virtio-mmio v${this.version})`, sink);
    this.size = Math.max(0x200, m.VIRTIO_MMIO_CONFIG + Math.ceil(device.configSize / 4) * 4);
    this.interrupts = new InterruptState(options.interrupt, () => device.resetting, sink);
    device.setNotifier(this.interrupts);
    this.#addresses = new QueueAddressRegisters(device.numQueues);
    this.#align = new Uint32Array(device.numQueues).fill(DEFAULT_LEGACY_PAGE);
    this.#pfn = new Uint32Array(device.numQueues);
  }

  /** Bad accesses seen so far. */
  get badAccesses(): number {
    return this.#log.count;
  }

  /** Resolves when the last Status write took effect (a reset done, DRIVER_OK activated). */
  settled(): Promise<void> {
    return this.#pending;
  }

  /** A driver read of `width` (1, 2, 4) bytes at `offset`. Never throws: a bad read gives 0. */
  read(offset: number, width: number): number {
    if (!this.#inWindow(offset, width)) {
      this.#log.bad(`read of ${width} bytes at ${String(offset)} outside the window`);
      return 0;
    }
    if (offset >= m.VIRTIO_MMIO_CONFIG)
      return readDeviceConfig(this.device, offset - m.VIRTIO_MMIO_CONFIG, width);
    const reg = mmioRegister(offset, this.version);
    if (reg === null || reg.dir === "W" || width !== 4 || offset % 4 !== 0) {
      this.#log.bad(`${this.#badWhat(offset, width, "read")} read: 0`);
      return 0;
    }
    return this.#readRegister(offset) >>> 0;
  }

  /** A driver write of `width` (1, 2, 4) bytes at `offset`. Never throws: a bad write is ignored. */
  write(offset: number, width: number, value: number): void {
    if (!this.#inWindow(offset, width)) {
      this.#log.bad(`write of ${width} bytes at ${String(offset)} outside the window ignored`);
      return;
    }
    const v = maskWidth(value, width);
    if (offset >= m.VIRTIO_MMIO_CONFIG) {
      writeDeviceConfig(this.device, offset - m.VIRTIO_MMIO_CONFIG, width, v);
      return;
    }
    const reg = mmioRegister(offset, this.version);
    if (reg === null || reg.dir === "R" || width !== 4 || offset % 4 !== 0) {
      this.#log.bad(`${this.#badWhat(offset, width, "write")} write of ${hex(v)} ignored`);
      return;
    }
    this.#writeRegister(offset, v);
  }

  #inWindow(offset: number, width: number): width is 1 | 2 | 4 {
    return (
      isAccessWidth(width) &&
      Number.isSafeInteger(offset) &&
      offset >= 0 &&
      offset + width <= this.size
    );
  }

  #badWhat(offset: number, width: number, kind: "read" | "write"): string {
    const reg = mmioRegister(offset, this.version);
    const name = mmioRegisterName(offset - (offset % 4), this.version);
    if (reg !== null && width === 4 && offset % 4 === 0)
      return `${name} is ${reg.dir === "R" ? "read-only" : "write-only"}:`;
    return `${name}: ${kind} of ${width} bytes at ${hex(offset)} (32-bit aligned only):`;
  }

  #readRegister(offset: number): number {
    const dev = this.device;
    const q = this.#queueSel;
    switch (offset) {
      case m.VIRTIO_MMIO_MAGIC_VALUE:
        return m.VIRTIO_MMIO_MAGIC;
      case m.VIRTIO_MMIO_VERSION_REG:
        return this.version;
      case m.VIRTIO_MMIO_DEVICE_ID:
        return dev.deviceId;
      case m.VIRTIO_MMIO_VENDOR_ID:
        return this.#vendorId;
      case m.VIRTIO_MMIO_DEVICE_FEATURES:
        // §4.2.4 / §4.1.4.10: a legacy driver sees bits 0–31 only.
        if (this.version === 1 && this.#deviceFeaturesSel !== 0) return 0;
        return dev.readDeviceFeaturesWord(this.#deviceFeaturesSel);
      case m.VIRTIO_MMIO_QUEUE_NUM_MAX:
        return dev.queueMaxSize(q);
      case m.VIRTIO_MMIO_QUEUE_PFN:
        return dev.queueReady(q) ? this.#pfn[q]! : 0;
      case m.VIRTIO_MMIO_QUEUE_READY:
        return dev.queueReady(q) ? 1 : 0;
      case m.VIRTIO_MMIO_INTERRUPT_STATUS:
        return this.interrupts.bits;
      case m.VIRTIO_MMIO_STATUS:
        return dev.readStatus();
      case m.VIRTIO_MMIO_SHM_LEN_LOW:
      case m.VIRTIO_MMIO_SHM_LEN_HIGH:
      case m.VIRTIO_MMIO_SHM_BASE_LOW:
      case m.VIRTIO_MMIO_SHM_BASE_HIGH:
        // No shared memory regions: "a length of -1", "a base address of 0xffffffffffffffff".
        return 0xffff_ffff;
      case m.VIRTIO_MMIO_CONFIG_GENERATION:
        return dev.configGeneration;
      default:
        return 0; // QueueReset: VIRTIO_F_RING_RESET is not offered, it reads 0
    }
  }

  #writeRegister(offset: number, v: number): void {
    switch (offset) {
      case m.VIRTIO_MMIO_DEVICE_FEATURES_SEL:
        this.#deviceFeaturesSel = v;
        return;
      case m.VIRTIO_MMIO_DRIVER_FEATURES_SEL:
        this.#driverFeaturesSel = v;
        return;
      case m.VIRTIO_MMIO_DRIVER_FEATURES:
        return this.#writeDriverFeatures(v);
      case m.VIRTIO_MMIO_QUEUE_SEL:
        this.#queueSel = v;
        return;
      case m.VIRTIO_MMIO_QUEUE_NOTIFY:
        return this.#notify(v);
      case m.VIRTIO_MMIO_INTERRUPT_ACK:
        if ((v & ~(m.VIRTIO_MMIO_INT_VRING | m.VIRTIO_MMIO_INT_CONFIG)) !== 0)
          this.#log.bad(`InterruptACK ${hex(v)} sets undefined bits (ignored)`);
        this.interrupts.acknowledge(v);
        return;
      case m.VIRTIO_MMIO_STATUS:
        return this.#writeStatus(v);
      default:
        if (this.version === 1) this.#writeLegacy(offset, v);
        else this.#writeQueue(offset, v);
    }
  }

  #writeDriverFeatures(v: number): void {
    const sel = this.#driverFeaturesSel;
    if (this.version === 1) {
      if (!this.device.beginLegacy()) return;
      // §4.1.4.10: "Transitional Devices MUST assume that Feature Bits 32 to 63 are not acknowledged".
      if (sel !== 0) {
        if (v !== 0) this.#log.bad(`DriverFeatures ${hex(v)} for word ${sel} ignored (legacy)`);
        return;
      }
    } else if (sel > 1) {
      if (v !== 0) this.#log.bad(`DriverFeatures ${hex(v)} for word ${sel} ignored`);
      return;
    }
    this.device.writeDriverFeaturesWord(sel, v);
  }

  #notify(v: number): void {
    // §4.2.3.3: the queue index (with VIRTIO_F_NOTIFICATION_DATA: vqn in the low 16 bits).
    const q = v & 0xffff;
    if (q >= this.device.numQueues) {
      this.#log.bad(`QueueNotify for queue ${q}: no such queue (ignored)`);
      return;
    }
    this.device.queueNotify(q);
  }

  #writeStatus(v: number): void {
    const status = v & 0xff;
    if (status === 0) {
      this.interrupts.clear();
      this.#addresses.clear();
      this.#align.fill(DEFAULT_LEGACY_PAGE);
    } else if (this.version === 1 && !this.device.beginLegacy()) {
      return;
    }
    if (v > 0xff) this.#log.bad(`Status ${hex(v)}: bits above 7 ignored`);
    this.#pending = this.device.writeStatus(status);
  }

  /** Version 2 queue registers: QueueNum, QueueReady, the queue addresses, SHMSel, QueueReset. */
  #writeQueue(offset: number, v: number): void {
    const dev = this.device;
    const q = this.#queueSel;
    const address = QUEUE_ADDRESS.get(offset);
    if (address !== undefined) {
      // §4.2.2.2: "When QueueReady is not zero, the driver MUST NOT access QueueNum, QueueDescLow, ...".
      if (dev.queueReady(q))
        this.#log.bad(`${mmioRegisterName(offset, 2)} ignored: queue ${q} is ready`);
      else if (!this.#addresses.write(q, address[0], address[1], v))
        this.#log.bad(`${mmioRegisterName(offset, 2)} ignored: no queue ${q}`);
      return;
    }
    switch (offset) {
      case m.VIRTIO_MMIO_QUEUE_NUM:
        dev.setQueueSize(q, v);
        return;
      case m.VIRTIO_MMIO_QUEUE_READY:
        if (v === 1) this.#addresses.enable(dev, q);
        // 0 stops the queue (before DRIVER_OK); on a queue that is not ready it is a no-op
        // (Linux writes it for every queue after a reset).
        else if (v === 0) {
          if (dev.queueReady(q)) dev.setQueueReady(q, false);
        } else this.#log.bad(`QueueReady ${hex(v)} is neither 0 nor 1 (ignored)`);
        return;
      case m.VIRTIO_MMIO_SHM_SEL:
        return; // no shared memory regions: every id reads as absent
      default:
        this.#log.bad(`QueueReset ${hex(v)} ignored: VIRTIO_F_RING_RESET is not offered`);
    }
  }

  /** Version 1 registers: GuestPageSize, QueueNum, QueueAlign, QueuePFN. */
  #writeLegacy(offset: number, v: number): void {
    const q = this.#queueSel;
    switch (offset) {
      case m.VIRTIO_MMIO_GUEST_PAGE_SIZE:
        if (isPowerOfTwo(v, 0x1_0000)) this.#pageSize = v;
        else this.#log.bad(`GuestPageSize ${v} is not a power of two ≤ 65536 (ignored)`);
        return;
      case m.VIRTIO_MMIO_QUEUE_ALIGN:
        if (q >= this.device.numQueues) this.#log.bad(`QueueAlign ignored: no queue ${q}`);
        else if (isPowerOfTwo(v, 0x1_0000) && v >= 4) this.#align[q] = v;
        else this.#log.bad(`QueueAlign ${v} is not a power of two in 4..65536 (ignored)`);
        return;
      case m.VIRTIO_MMIO_QUEUE_NUM:
        if (this.device.beginLegacy()) this.device.setQueueSize(q, v);
        return;
      default:
        this.#writePfn(q, v);
    }
  }

  /** §4.2.4 QueuePFN: 0 stops the queue; otherwise the ring is at PFN × GuestPageSize. */
  #writePfn(q: number, pfn: number): void {
    const dev = this.device;
    if (!dev.beginLegacy()) return;
    if (pfn === 0) {
      if (dev.queueReady(q)) dev.setQueueReady(q, false);
      return;
    }
    if (dev.queueReady(q)) {
      this.#log.bad(`QueuePFN ${hex(pfn)} ignored: queue ${q} is in use (write 0 first)`);
      return;
    }
    if (q >= dev.numQueues) {
      this.#log.bad(`QueuePFN ignored: no queue ${q}`);
      return;
    }
    const parts = legacyRingParts(pfn * this.#pageSize, dev.queueSize(q), this.#align[q]!);
    if (!dev.setQueueAddresses(q, parts.descAddr, parts.availAddr, parts.usedAddr)) return;
    if (dev.setQueueReady(q, true)) this.#pfn[q] = pfn;
  }
}

function isPowerOfTwo(v: number, max: number): boolean {
  return v >= 1 && v <= max && (v & (v - 1)) === 0;
}

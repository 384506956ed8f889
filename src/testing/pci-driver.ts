/**
 * A driver-side model of virtio-pci for tests: finds the virtio structures
 * through the capability list (or takes the legacy block in BAR0) and
 * performs the §3.1.1 initialization and the notifications through BAR
 * reads and writes only. VIRTIO 1.2 §4.1.4 (capability list),
 * §4.1.4.3 (common configuration), §4.1.4.4 (Queue Notify address:
 * `cap.offset + queue_notify_off × notify_off_multiplier`), §4.1.4.5 (ISR
 * read), §4.1.4.10 and §4.1.5.1 legacy note (BAR0 block, queue address in
 * 4096-byte pages).
 *
 * @module
 */
import type { RingAddresses } from "../ring/ring-layout.ts";
import {
  PCI_CAP_ID_VNDR,
  PciHeader,
  VIRTIO_PCI_CAP_COMMON_CFG,
  VIRTIO_PCI_CAP_DEVICE_CFG,
  VIRTIO_PCI_CAP_ISR_CFG,
  VIRTIO_PCI_CAP_NOTIFY_CFG,
  VIRTIO_PCI_LEGACY_CONFIG_OFF,
  VIRTIO_PCI_NOTIFY_CAP_MULT,
  VirtioPciCap,
  VirtioPciCommonCfg as C,
  VirtioPciLegacy as L,
} from "../spec/virtio-pci.ts";
import { legacyRingParts } from "../spec/virtqueue.ts";
import {
  ACKNOWLEDGE,
  DRIVER,
  DRIVER_OK,
  FEATURES_OK,
  halves,
  pollUntil,
  type RegisterDriver,
} from "./register-driver.ts";

/** A PCI function as a guest reaches it: configuration space and BAR accesses. */
export interface PciPort {
  readConfigSpace(offset: number, width: number): number;
  read(bar: number, offset: number, width: number): number;
  write(bar: number, offset: number, width: number, value: number): void;
}

export interface PciStructure {
  readonly bar: number;
  readonly offset: number;
}

/** The structures a modern driver found. */
export interface ModernStructures {
  readonly common: PciStructure;
  readonly notify: PciStructure & { readonly multiplier: number };
  readonly isr: PciStructure;
  readonly device: PciStructure | null;
}

/** Walks the capability list (bounded) for the first structure of each type. */
export function findVirtioStructures(port: PciPort): ModernStructures | null {
  const found = new Map<number, PciStructure & { multiplier: number }>();
  let at = port.readConfigSpace(PciHeader.CAPABILITIES_PTR, 1) & 0xfc;
  for (let n = 0; at !== 0 && n < 48; n++) {
    if (port.readConfigSpace(at + VirtioPciCap.cap_vndr, 1) === PCI_CAP_ID_VNDR) {
      const type = port.readConfigSpace(at + VirtioPciCap.cfg_type, 1);
      if (!found.has(type))
        found.set(type, {
          bar: port.readConfigSpace(at + VirtioPciCap.bar, 1),
          offset: port.readConfigSpace(at + VirtioPciCap.offset, 4),
          multiplier:
            type === VIRTIO_PCI_CAP_NOTIFY_CFG
              ? port.readConfigSpace(at + VIRTIO_PCI_NOTIFY_CAP_MULT, 4)
              : 0,
        });
    }
    at = port.readConfigSpace(at + VirtioPciCap.cap_next, 1) & 0xfc;
  }
  const common = found.get(VIRTIO_PCI_CAP_COMMON_CFG);
  const notify = found.get(VIRTIO_PCI_CAP_NOTIFY_CFG);
  const isr = found.get(VIRTIO_PCI_CAP_ISR_CFG);
  if (common === undefined || notify === undefined || isr === undefined) return null;
  return { common, notify, isr, device: found.get(VIRTIO_PCI_CAP_DEVICE_CFG) ?? null };
}

/** A virtio-pci driver model: modern through the capabilities, or legacy through BAR0. */
export class PciDriverModel implements RegisterDriver {
  readonly legacy: boolean;
  readonly legacyAlign = 4096;
  readonly #port: PciPort;
  readonly #s: ModernStructures | null;

  /**
   * @param useLegacy drive the legacy block even if capabilities exist (a legacy driver).
   * @throws {Error} when neither interface is there.
   */
  constructor(port: PciPort, useLegacy = false) {
    this.#port = port;
    this.#s = useLegacy ? null : findVirtioStructures(port);
    this.legacy = this.#s === null;
    if (this.legacy && port.readConfigSpace(PciHeader.REVISION_ID, 1) !== 0)
      throw new Error("no virtio structures and not a transitional function");
  }

  #cr(off: number, w: number): number {
    const s = this.#s!;
    return this.#port.read(s.common.bar, s.common.offset + off, w);
  }
  #cw(off: number, w: number, v: number): void {
    const s = this.#s!;
    this.#port.write(s.common.bar, s.common.offset + off, w, v);
  }
  #lr(off: number, w: number): number {
    return this.#port.read(0, off, w);
  }
  #lw(off: number, w: number, v: number): void {
    this.#port.write(0, off, w, v);
  }

  status(): number {
    return this.legacy ? this.#lr(L.STATUS, 1) : this.#cr(C.device_status, 1);
  }
  #setStatus(v: number): void {
    if (this.legacy) this.#lw(L.STATUS, 1, v);
    else this.#cw(C.device_status, 1, v);
  }

  async reset(): Promise<void> {
    this.#setStatus(0);
    await pollUntil(() => this.status() === 0, 10_000, "virtio-pci reset");
  }

  acknowledge(): void {
    this.#setStatus(ACKNOWLEDGE);
    this.#setStatus(ACKNOWLEDGE | DRIVER);
  }

  deviceFeatures(): bigint {
    if (this.legacy) return BigInt(this.#lr(L.HOST_FEATURES, 4));
    let f = 0n;
    for (const sel of [1, 0]) {
      this.#cw(C.device_feature_select, 4, sel);
      f = (f << 32n) | BigInt(this.#cr(C.device_feature, 4));
    }
    return f;
  }

  negotiate(features: bigint): boolean {
    if (this.legacy) {
      this.#lw(L.GUEST_FEATURES, 4, Number(features & 0xffff_ffffn));
      return true;
    }
    for (const sel of [0, 1]) {
      this.#cw(C.driver_feature_select, 4, sel);
      this.#cw(C.driver_feature, 4, Number((features >> BigInt(32 * sel)) & 0xffff_ffffn));
    }
    this.#setStatus(ACKNOWLEDGE | DRIVER | FEATURES_OK);
    return (this.status() & FEATURES_OK) !== 0;
  }

  readConfig(offset: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    const d = this.#s?.device;
    for (let i = 0; i < length; i++)
      out[i] = this.legacy
        ? this.#lr(VIRTIO_PCI_LEGACY_CONFIG_OFF + offset + i, 1)
        : this.#port.read(d!.bar, d!.offset + offset + i, 1);
    return out;
  }

  queueMaxSize(index: number): number {
    if (this.legacy) {
      this.#lw(L.QUEUE_SEL, 2, index);
      return this.#lr(L.QUEUE_NUM, 2);
    }
    this.#cw(C.queue_select, 2, index);
    return this.#cr(C.queue_size, 2);
  }

  setupQueue(index: number, ring: RingAddresses): void {
    if (this.legacy) return this.#setupLegacy(index, ring);
    this.#cw(C.queue_select, 2, index);
    this.#cw(C.queue_size, 2, ring.size);
    const regs: [number, number][] = [
      [C.queue_desc, ring.descAddr],
      [C.queue_driver, ring.availAddr],
      [C.queue_device, ring.usedAddr],
    ];
    for (const [off, addr] of regs) {
      const [lo, hi] = halves(addr);
      this.#cw(off, 4, lo);
      this.#cw(off + 4, 4, hi);
    }
    this.#cw(C.queue_enable, 2, 1);
  }

  #setupLegacy(index: number, ring: RingAddresses): void {
    const want = legacyRingParts(ring.descAddr, ring.size, this.legacyAlign);
    if (
      want.availAddr !== ring.availAddr ||
      want.usedAddr !== ring.usedAddr ||
      ring.descAddr % 4096
    )
      throw new Error("a legacy ring must be in the §2.7.2 layout on a page boundary");
    this.#lw(L.QUEUE_SEL, 2, index);
    if (this.#lr(L.QUEUE_NUM, 2) !== ring.size) throw new Error("legacy queue size is fixed");
    this.#lw(L.QUEUE_PFN, 4, ring.descAddr / 4096);
  }

  driverOk(): void {
    const s = this.legacy ? ACKNOWLEDGE | DRIVER : ACKNOWLEDGE | DRIVER | FEATURES_OK;
    this.#setStatus(s | DRIVER_OK);
  }

  kick(index: number): void {
    if (this.legacy) return this.#lw(L.QUEUE_NOTIFY, 2, index);
    const n = this.#s!.notify;
    this.#cw(C.queue_select, 2, index);
    const off = this.#cr(C.queue_notify_off, 2);
    this.#port.write(n.bar, n.offset + off * n.multiplier, 2, index);
  }

  interrupt(): number {
    if (this.legacy) return this.#lr(L.ISR, 1);
    const isr = this.#s!.isr;
    return this.#port.read(isr.bar, isr.offset, 1);
  }
}

/**
 * The PCI configuration space of a virtio-pci function: the 256-byte image
 * (type 0 header, the virtio structure capabilities) and what a write to
 * it may change. VIRTIO 1.2 §4.1.2 (identity), §4.1.4 (the capability list
 * of `struct virtio_pci_cap`: "The driver MUST NOT write into any field of
 * the capability structure, with the exception of those with cap_type
 * VIRTIO_PCI_CAP_PCI_CFG"), §4.1.4.4 (`notify_off_multiplier`), §4.1.4.5
 * (the status register's Interrupt Status bit follows the ISR), §4.1.4.9
 * (the VIRTIO_PCI_CAP_PCI_CFG window: `cap.bar`, `cap.offset`,
 * `cap.length` and `pci_cfg_data` are read-write; a data access is a BAR
 * access of `cap.length` bytes at `cap.offset`).
 *
 * Writable: the command register (I/O, memory, bus master, Interrupt
 * Disable), the BARs (the usual sizing: the address bits below the BAR
 * size read 0), the interrupt line, and the PCI_CFG window's fields.
 * Everything else ignores writes, as PCI read-only registers do. INTx pin
 * is A (no MSI-X capability: v86 and many small emulators have none).
 *
 * @module
 */
import {
  PCI_BASE_ADDRESS_SPACE_IO,
  PCI_CAP_ID_VNDR,
  PCI_COMMAND_INTX_DISABLE,
  PCI_COMMAND_IO,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_CONFIG_SPACE_SIZE,
  PCI_STATUS_CAP_LIST,
  PCI_STATUS_INTERRUPT,
  PciHeader,
  VIRTIO_PCI_CAP_COMMON_CFG,
  VIRTIO_PCI_CAP_DEVICE_CFG,
  VIRTIO_PCI_CAP_ISR_CFG,
  VIRTIO_PCI_CAP_NOTIFY_CFG,
  VIRTIO_PCI_CAP_PCI_CFG,
  VIRTIO_PCI_CFG_CAP_DATA,
  VIRTIO_PCI_CFG_CAP_SIZE,
  VIRTIO_PCI_CAP_SIZE,
  VIRTIO_PCI_NOTIFY_CAP_MULT,
  VIRTIO_PCI_NOTIFY_CAP_SIZE,
  VirtioPciCap,
} from "../../spec/virtio-pci.ts";
import type { ModernLayout, PciBar, PciIdentity, PciRegion } from "./layout.ts";

/** Where the first capability sits. */
const CAP_START = 0x40;
const COMMAND_WRITABLE =
  PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE;

/** The BAR access a PCI_CFG window data access stands for. */
export interface WindowAccess {
  readonly bar: number;
  readonly offset: number;
  readonly width: 1 | 2 | 4;
}

/** A function's configuration space image and its writable parts. */
export class PciConfigSpace {
  /** The live image (little-endian): an adapter may hand it to the emulator's PCI bus. */
  readonly bytes = new Uint8Array(PCI_CONFIG_SPACE_SIZE);
  readonly #dv = new DataView(this.bytes.buffer);
  readonly #bars: readonly PciBar[];
  /** Offset of the PCI_CFG capability (0: none). */
  readonly #cfgCap: number;
  /** Byte mask of what the driver may write. */
  readonly #writable = new Uint8Array(PCI_CONFIG_SPACE_SIZE);

  constructor(id: PciIdentity, bars: readonly PciBar[], modern: ModernLayout | null) {
    this.#bars = bars;
    this.#header(id);
    for (const b of bars) this.#dv.setUint32(PciHeader.BAR0 + 4 * b.index, barFlags(b), true);
    this.#cfgCap = modern === null ? 0 : this.#capabilities(modern);
    this.#setWritable(PciHeader.COMMAND, 2);
    for (const b of bars) this.#setWritable(PciHeader.BAR0 + 4 * b.index, 4);
    this.#setWritable(PciHeader.INTERRUPT_LINE, 1);
    if (this.#cfgCap !== 0) {
      this.#setWritable(this.#cfgCap + VirtioPciCap.bar, 1);
      this.#setWritable(this.#cfgCap + VirtioPciCap.offset, 8);
      this.#setWritable(this.#cfgCap + VIRTIO_PCI_CFG_CAP_DATA, 4);
    }
  }

  #header(id: PciIdentity): void {
    const dv = this.#dv;
    dv.setUint16(PciHeader.VENDOR_ID, id.vendorId, true);
    dv.setUint16(PciHeader.DEVICE_ID, id.deviceId, true);
    dv.setUint8(PciHeader.REVISION_ID, id.revision);
    dv.setUint8(PciHeader.CLASS_PROG, id.classCode & 0xff);
    dv.setUint8(PciHeader.CLASS_SUBCLASS, (id.classCode >> 8) & 0xff);
    dv.setUint8(PciHeader.CLASS_BASE, (id.classCode >> 16) & 0xff);
    dv.setUint16(PciHeader.SUBSYSTEM_VENDOR_ID, id.subsystemVendorId, true);
    dv.setUint16(PciHeader.SUBSYSTEM_ID, id.subsystemId, true);
    dv.setUint8(PciHeader.INTERRUPT_PIN, 1); // INTA#
  }

  /** Writes the capability list; returns the PCI_CFG capability's offset. */
  #capabilities(l: ModernLayout): number {
    const caps: [number, PciRegion, number][] = [
      [VIRTIO_PCI_CAP_COMMON_CFG, l.common, VIRTIO_PCI_CAP_SIZE],
      [VIRTIO_PCI_CAP_NOTIFY_CFG, l.notify, VIRTIO_PCI_NOTIFY_CAP_SIZE],
      [VIRTIO_PCI_CAP_ISR_CFG, l.isr, VIRTIO_PCI_CAP_SIZE],
      ...(l.device === null
        ? []
        : [
            [VIRTIO_PCI_CAP_DEVICE_CFG, l.device, VIRTIO_PCI_CAP_SIZE] as [
              number,
              PciRegion,
              number,
            ],
          ]),
      [VIRTIO_PCI_CAP_PCI_CFG, { offset: 0, length: 0 }, VIRTIO_PCI_CFG_CAP_SIZE],
    ];
    const dv = this.#dv;
    dv.setUint16(PciHeader.STATUS, PCI_STATUS_CAP_LIST, true);
    dv.setUint8(PciHeader.CAPABILITIES_PTR, CAP_START);
    let at = CAP_START;
    let cfgCap = 0;
    caps.forEach(([type, region, len], i) => {
      const next = i === caps.length - 1 ? 0 : at + len;
      dv.setUint8(at + VirtioPciCap.cap_vndr, PCI_CAP_ID_VNDR);
      dv.setUint8(at + VirtioPciCap.cap_next, next);
      dv.setUint8(at + VirtioPciCap.cap_len, len);
      dv.setUint8(at + VirtioPciCap.cfg_type, type);
      dv.setUint8(at + VirtioPciCap.bar, type === VIRTIO_PCI_CAP_PCI_CFG ? 0 : l.bar);
      dv.setUint32(at + VirtioPciCap.offset, region.offset, true);
      dv.setUint32(at + VirtioPciCap.length, region.length, true);
      if (type === VIRTIO_PCI_CAP_NOTIFY_CFG)
        dv.setUint32(at + VIRTIO_PCI_NOTIFY_CAP_MULT, l.notifyOffMultiplier, true);
      if (type === VIRTIO_PCI_CAP_PCI_CFG) cfgCap = at;
      at = next;
    });
    return cfgCap;
  }

  #setWritable(offset: number, len: number): void {
    this.#writable.fill(1, offset, offset + len);
  }

  /** The command register's Interrupt Disable bit. */
  get intxDisabled(): boolean {
    return (this.#dv.getUint16(PciHeader.COMMAND, true) & PCI_COMMAND_INTX_DISABLE) !== 0;
  }

  /** §4.1.4.5: the status register's Interrupt Status bit is the OR of the ISR bits. */
  setInterruptStatus(pending: boolean): void {
    const s = this.#dv.getUint16(PciHeader.STATUS, true);
    const next = pending ? s | PCI_STATUS_INTERRUPT : s & ~PCI_STATUS_INTERRUPT;
    this.#dv.setUint16(PciHeader.STATUS, next, true);
  }

  /** Little-endian read of `width` bytes (the caller checked the bounds). */
  get(offset: number, width: 1 | 2 | 4): number {
    let v = 0;
    for (let i = width - 1; i >= 0; i--) v = v * 256 + this.bytes[offset + i]!;
    return v;
  }

  /**
   * Merges a write into the writable bytes and applies the BAR size masks
   * and the command register's mask. Returns true if it touched the
   * command register.
   */
  put(offset: number, width: 1 | 2 | 4, value: number): boolean {
    let v = value >>> 0;
    for (let i = 0; i < width; i++) {
      if (this.#writable[offset + i] === 1) this.bytes[offset + i] = v & 0xff;
      v >>>= 8;
    }
    const dv = this.#dv;
    dv.setUint16(PciHeader.COMMAND, dv.getUint16(PciHeader.COMMAND, true) & COMMAND_WRITABLE, true);
    for (const b of this.#bars) {
      const at = PciHeader.BAR0 + 4 * b.index;
      const flagBits = b.kind === "io" ? 0x3 : 0xf;
      const addr = dv.getUint32(at, true) & ~(b.size - 1) & ~flagBits;
      dv.setUint32(at, (addr | barFlags(b)) >>> 0, true);
    }
    return offset < PciHeader.COMMAND + 2 && offset + width > PciHeader.COMMAND;
  }

  /** True if an access at `offset` of `width` bytes touches the PCI_CFG window's data. */
  touchesWindowData(offset: number, width: number): boolean {
    const data = this.#cfgCap + VIRTIO_PCI_CFG_CAP_DATA;
    return this.#cfgCap !== 0 && offset < data + 4 && offset + width > data;
  }

  /** The BAR access the PCI_CFG window names, or null when its `cap.length` is not 1, 2 or 4. */
  windowAccess(): WindowAccess | null {
    const at = this.#cfgCap;
    const width = this.#dv.getUint32(at + VirtioPciCap.length, true);
    if (width !== 1 && width !== 2 && width !== 4) return null;
    return {
      bar: this.#dv.getUint8(at + VirtioPciCap.bar),
      offset: this.#dv.getUint32(at + VirtioPciCap.offset, true),
      width,
    };
  }

  /** The window's `pci_cfg_data` as a little-endian 32-bit value. */
  get windowData(): number {
    return this.#dv.getUint32(this.#cfgCap + VIRTIO_PCI_CFG_CAP_DATA, true);
  }

  set windowData(v: number) {
    this.#dv.setUint32(this.#cfgCap + VIRTIO_PCI_CFG_CAP_DATA, v >>> 0, true);
  }
}

function barFlags(b: PciBar): number {
  return b.kind === "io" ? PCI_BASE_ADDRESS_SPACE_IO : 0;
}

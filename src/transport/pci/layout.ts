/**
 * Where a virtio-pci function keeps its registers: the BARs (the legacy
 * block in an I/O BAR0, §4.1.4.10; one BAR with the four modern
 * structures, §4.1.4) and the identity it shows in PCI configuration space
 * (§4.1.2: vendor 0x1af4, modern device id 0x1040 + virtio id, or a
 * transitional id with revision 0 and the virtio id as subsystem id).
 * VIRTIO 1.2 §4.1.2, §4.1.4, §4.1.4.3, §4.1.4.4 (notify `cap.offset` 2-byte
 * aligned, `notify_off_multiplier` 0 or an even power of two, `cap.length ≥
 * queue_notify_off × notify_off_multiplier + 2`), §4.1.4.5, §4.1.4.6
 * (offsets 4-byte aligned), §4.1.4.10.
 *
 * The modern BAR is laid out compactly so that it also fits an I/O BAR
 * (at most 256 bytes): common configuration at 0x00 (0x3c bytes), ISR
 * at 0x40 (4 bytes), device-specific configuration at 0x44, the
 * notification area after it.
 *
 * @module
 */
import {
  PCI_CONFIG_SPACE_SIZE,
  VIRTIO_PCI_COMMON_CFG_SIZE,
  VIRTIO_PCI_LEGACY_CONFIG_OFF,
  VIRTIO_PCI_MODERN_DEVICE_ID_BASE,
  VIRTIO_PCI_MODERN_REVISION,
  VIRTIO_PCI_TRANSITIONAL_DEVICE_IDS,
  VIRTIO_PCI_TRANSITIONAL_REVISION,
  VIRTIO_PCI_VENDOR_ID,
} from "../../spec/virtio-pci.ts";

/** Which interfaces the function offers. */
export type PciInterface = "modern" | "transitional" | "legacy";

/** One BAR of the function. */
export interface PciBar {
  /** BAR number (0..5). */
  readonly index: number;
  /** Bytes (a power of two). */
  readonly size: number;
  /** The space the BAR decodes: "io" (port I/O) or "memory" (32-bit, not prefetchable). */
  readonly kind: "io" | "memory";
  /** What is in it. */
  readonly contents: "legacy" | "modern";
  /** True if the registers fit an I/O BAR (at most 256 bytes): the BAR may live in port I/O space. */
  readonly ioCapable: boolean;
}

/** A structure inside the modern BAR. */
export interface PciRegion {
  readonly offset: number;
  readonly length: number;
}

/** The modern BAR's structures. */
export interface ModernLayout {
  readonly bar: number;
  readonly common: PciRegion;
  readonly isr: PciRegion;
  /** null when the device has no configuration space. */
  readonly device: PciRegion | null;
  readonly notify: PciRegion;
  readonly notifyOffMultiplier: number;
}

/** Identity fields of the configuration header. */
export interface PciIdentity {
  readonly vendorId: number;
  readonly deviceId: number;
  readonly revision: number;
  readonly subsystemVendorId: number;
  readonly subsystemId: number;
  /** base class << 16 | subclass << 8 | programming interface. */
  readonly classCode: number;
}

/** Largest I/O BAR (PCI: an I/O BAR decodes at most 256 bytes). */
export const PCI_IO_BAR_MAX = 256;

/** A class code per virtio device type (others: 0xff0000, "unassigned"). */
const CLASS_CODES: ReadonlyMap<number, number> = new Map([
  [1, 0x020000], // network controller
  [2, 0x010000], // mass storage (SCSI, as virtio-blk has always shown)
  [3, 0x078000], // simple communication controller, other
  [8, 0x010000], // mass storage
]);

/** Options that shape the identity. */
export interface PciIdentityOptions {
  readonly subsystemVendorId?: number;
  readonly subsystemId?: number;
  readonly classCode?: number;
}

/**
 * The identity for virtio device type `virtioId` (§4.1.2).
 *
 * @throws {RangeError} for a transitional or legacy function of a type with
 *   no transitional device id, or a virtio id past the modern range.
 */
export function pciIdentity(
  virtioId: number,
  iface: PciInterface,
  o: PciIdentityOptions = {},
): PciIdentity {
  const base = {
    vendorId: VIRTIO_PCI_VENDOR_ID,
    subsystemVendorId: o.subsystemVendorId ?? VIRTIO_PCI_VENDOR_ID,
    classCode: o.classCode ?? CLASS_CODES.get(virtioId) ?? 0xff0000,
  };
  if (iface === "modern") {
    if (virtioId < 1 || virtioId > 0x3f) throw new RangeError(`virtio device id ${virtioId}`);
    // §4.1.2: "Non-transitional devices SHOULD have a PCI Subsystem Device ID of 0x40 or higher."
    return {
      ...base,
      deviceId: VIRTIO_PCI_MODERN_DEVICE_ID_BASE + virtioId,
      revision: VIRTIO_PCI_MODERN_REVISION,
      subsystemId: o.subsystemId ?? 0x40 + virtioId,
    };
  }
  const deviceId = VIRTIO_PCI_TRANSITIONAL_DEVICE_IDS.get(virtioId);
  if (deviceId === undefined)
    throw new RangeError(`virtio device type ${virtioId} has no transitional PCI device id`);
  // §4.1.2.3: "Transitional devices MUST have a PCI Revision ID of 0" and "MUST have the PCI
  // Subsystem Device ID matching the Virtio Device ID".
  return { ...base, deviceId, revision: VIRTIO_PCI_TRANSITIONAL_REVISION, subsystemId: virtioId };
}

const align4 = (n: number): number => Math.ceil(n / 4) * 4;

function pow2AtLeast(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/**
 * The modern BAR's layout for `numQueues` queues and `configSize` bytes of
 * device configuration.
 *
 * @throws {RangeError} for a multiplier the spec does not allow, or an I/O
 *   BAR that would exceed 256 bytes.
 */
export function modernLayout(
  bar: number,
  numQueues: number,
  configSize: number,
  multiplier: number,
): ModernLayout {
  if (multiplier !== 0 && !(isPow2(multiplier) && multiplier % 2 === 0))
    throw new RangeError(`notify_off_multiplier ${multiplier} is not 0 or an even power of two`);
  const common = { offset: 0, length: VIRTIO_PCI_COMMON_CFG_SIZE };
  const isr = { offset: 0x40, length: 4 };
  const device = configSize > 0 ? { offset: 0x44, length: configSize } : null;
  const notifyAt = 0x44 + align4(configSize);
  const notify = { offset: notifyAt, length: align4((numQueues - 1) * multiplier + 2) };
  return { bar, common, isr, device, notify, notifyOffMultiplier: multiplier };
}

/** True if the modern registers fit an I/O BAR. */
export function modernFitsIo(layout: ModernLayout): boolean {
  return pow2AtLeast(layout.notify.offset + layout.notify.length) <= PCI_IO_BAR_MAX;
}

/** Bytes of the modern BAR holding `layout` in `kind` space. */
export function modernBarSize(layout: ModernLayout, kind: "io" | "memory"): number {
  const end = layout.notify.offset + layout.notify.length;
  const size = Math.max(pow2AtLeast(end), kind === "memory" ? 4096 : 16);
  if (kind === "io" && size > PCI_IO_BAR_MAX)
    throw new RangeError(`the modern registers need ${size} bytes: too many for an I/O BAR`);
  return size;
}

/** Bytes of the legacy I/O BAR0 (§4.1.4.10: 20 bytes of registers, then the configuration). */
export function legacyBarSize(configSize: number): number {
  const size = Math.max(32, pow2AtLeast(VIRTIO_PCI_LEGACY_CONFIG_OFF + configSize));
  if (size > PCI_IO_BAR_MAX)
    throw new RangeError(`the legacy registers need ${size} bytes: too many for an I/O BAR`);
  return size;
}

function isPow2(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

/** Sanity bound: the configuration image is one conventional PCI function's. */
export const CONFIG_SPACE_SIZE = PCI_CONFIG_SPACE_SIZE;

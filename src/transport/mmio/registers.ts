/**
 * virtio-mmio register names and directions, for the register model's
 * dispatch and its log lines. VIRTIO 1.2 §4.2.2 (register layout of
 * version 2: direction R, W or RW per register), §4.2.4 (legacy version 1:
 * GuestPageSize, QueueAlign, QueuePFN instead of QueueReady and the
 * 64-bit queue addresses).
 *
 * @module
 */
import * as m from "../../spec/virtio-mmio.ts";

/** How the driver may access a register. */
export type MmioDirection = "R" | "W" | "RW";

interface RegisterInfo {
  readonly name: string;
  readonly dir: MmioDirection;
  /** Only in this version (undefined: both). */
  readonly version?: 1 | 2;
}

const TABLE: ReadonlyMap<number, RegisterInfo> = new Map<number, RegisterInfo>([
  [m.VIRTIO_MMIO_MAGIC_VALUE, { name: "MagicValue", dir: "R" }],
  [m.VIRTIO_MMIO_VERSION_REG, { name: "Version", dir: "R" }],
  [m.VIRTIO_MMIO_DEVICE_ID, { name: "DeviceID", dir: "R" }],
  [m.VIRTIO_MMIO_VENDOR_ID, { name: "VendorID", dir: "R" }],
  [m.VIRTIO_MMIO_DEVICE_FEATURES, { name: "DeviceFeatures", dir: "R" }],
  [m.VIRTIO_MMIO_DEVICE_FEATURES_SEL, { name: "DeviceFeaturesSel", dir: "W" }],
  [m.VIRTIO_MMIO_DRIVER_FEATURES, { name: "DriverFeatures", dir: "W" }],
  [m.VIRTIO_MMIO_DRIVER_FEATURES_SEL, { name: "DriverFeaturesSel", dir: "W" }],
  [m.VIRTIO_MMIO_GUEST_PAGE_SIZE, { name: "GuestPageSize", dir: "W", version: 1 }],
  [m.VIRTIO_MMIO_QUEUE_SEL, { name: "QueueSel", dir: "W" }],
  [m.VIRTIO_MMIO_QUEUE_NUM_MAX, { name: "QueueNumMax", dir: "R" }],
  [m.VIRTIO_MMIO_QUEUE_NUM, { name: "QueueNum", dir: "W" }],
  [m.VIRTIO_MMIO_QUEUE_ALIGN, { name: "QueueAlign", dir: "W", version: 1 }],
  [m.VIRTIO_MMIO_QUEUE_PFN, { name: "QueuePFN", dir: "RW", version: 1 }],
  [m.VIRTIO_MMIO_QUEUE_READY, { name: "QueueReady", dir: "RW", version: 2 }],
  [m.VIRTIO_MMIO_QUEUE_NOTIFY, { name: "QueueNotify", dir: "W" }],
  [m.VIRTIO_MMIO_INTERRUPT_STATUS, { name: "InterruptStatus", dir: "R" }],
  [m.VIRTIO_MMIO_INTERRUPT_ACK, { name: "InterruptACK", dir: "W" }],
  [m.VIRTIO_MMIO_STATUS, { name: "Status", dir: "RW" }],
  [m.VIRTIO_MMIO_QUEUE_DESC_LOW, { name: "QueueDescLow", dir: "W", version: 2 }],
  [m.VIRTIO_MMIO_QUEUE_DESC_HIGH, { name: "QueueDescHigh", dir: "W", version: 2 }],
  [m.VIRTIO_MMIO_QUEUE_AVAIL_LOW, { name: "QueueDriverLow", dir: "W", version: 2 }],
  [m.VIRTIO_MMIO_QUEUE_AVAIL_HIGH, { name: "QueueDriverHigh", dir: "W", version: 2 }],
  [m.VIRTIO_MMIO_QUEUE_USED_LOW, { name: "QueueDeviceLow", dir: "W", version: 2 }],
  [m.VIRTIO_MMIO_QUEUE_USED_HIGH, { name: "QueueDeviceHigh", dir: "W", version: 2 }],
  [m.VIRTIO_MMIO_SHM_SEL, { name: "SHMSel", dir: "W", version: 2 }],
  [m.VIRTIO_MMIO_SHM_LEN_LOW, { name: "SHMLenLow", dir: "R", version: 2 }],
  [m.VIRTIO_MMIO_SHM_LEN_HIGH, { name: "SHMLenHigh", dir: "R", version: 2 }],
  [m.VIRTIO_MMIO_SHM_BASE_LOW, { name: "SHMBaseLow", dir: "R", version: 2 }],
  [m.VIRTIO_MMIO_SHM_BASE_HIGH, { name: "SHMBaseHigh", dir: "R", version: 2 }],
  [m.VIRTIO_MMIO_QUEUE_RESET, { name: "QueueReset", dir: "RW", version: 2 }],
  [m.VIRTIO_MMIO_CONFIG_GENERATION, { name: "ConfigGeneration", dir: "R", version: 2 }],
]);

/** The register at `offset` in `version`'s layout, or null (reserved). */
export function mmioRegister(offset: number, version: 1 | 2): RegisterInfo | null {
  const r = TABLE.get(offset);
  if (r === undefined || (r.version !== undefined && r.version !== version)) return null;
  return r;
}

/** A name for log lines: the register's, or `reserved 0x..`. */
export function mmioRegisterName(offset: number, version: 1 | 2): string {
  return mmioRegister(offset, version)?.name ?? `reserved register 0x${offset.toString(16)}`;
}

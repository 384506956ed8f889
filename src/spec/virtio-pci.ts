/**
 * Virtio over PCI: identifiers, the virtio structure capabilities, the
 * common configuration layout, the ISR bits and the legacy register block.
 * VIRTIO 1.2 §4.1.2 (PCI device discovery: vendor and device ids), §4.1.4
 * (virtio structure PCI capabilities: `struct virtio_pci_cap`), §4.1.4.3
 * (common configuration structure layout), §4.1.4.4 (notification
 * structure), §4.1.4.5 (ISR status), §4.1.4.9 (PCI configuration access
 * capability), §4.1.4.10 (legacy interfaces: the BAR0 register block),
 * §4.1.5.1 (no MSI-X vector: VIRTIO_MSI_NO_VECTOR). Offsets are byte
 * offsets, every multi-byte field little-endian.
 *
 * @module
 */

/** §4.1.2: every virtio PCI function has this vendor id. */
export const VIRTIO_PCI_VENDOR_ID = 0x1af4;
/** §4.1.2: a modern (non-transitional) device id is this plus the virtio device id. */
export const VIRTIO_PCI_MODERN_DEVICE_ID_BASE = 0x1040;
/** §4.1.2: transitional devices have a revision id of 0, modern ones 1 or more. */
export const VIRTIO_PCI_TRANSITIONAL_REVISION = 0;
export const VIRTIO_PCI_MODERN_REVISION = 1;

/** §4.1.2 table: transitional PCI device id by virtio device id (only these types have one). */
export const VIRTIO_PCI_TRANSITIONAL_DEVICE_IDS: ReadonlyMap<number, number> = new Map([
  [1, 0x1000], // network card
  [2, 0x1001], // block device
  [5, 0x1002], // memory ballooning (traditional)
  [3, 0x1003], // console
  [8, 0x1004], // SCSI host
  [4, 0x1005], // entropy source
  [9, 0x1009], // 9P transport
]);

/** §4.1.4: `cap_vndr` of a virtio structure capability (PCI_CAP_ID_VNDR). */
export const PCI_CAP_ID_VNDR = 0x09;

/** §4.1.4: `cfg_type` values. */
export const VIRTIO_PCI_CAP_COMMON_CFG = 1;
export const VIRTIO_PCI_CAP_NOTIFY_CFG = 2;
export const VIRTIO_PCI_CAP_ISR_CFG = 3;
export const VIRTIO_PCI_CAP_DEVICE_CFG = 4;
export const VIRTIO_PCI_CAP_PCI_CFG = 5;
export const VIRTIO_PCI_CAP_SHARED_MEMORY_CFG = 8;
export const VIRTIO_PCI_CAP_VENDOR_CFG = 9;

/** §4.1.4: `struct virtio_pci_cap` field offsets and size. */
export const VirtioPciCap = {
  cap_vndr: 0,
  cap_next: 1,
  cap_len: 2,
  cfg_type: 3,
  bar: 4,
  id: 5,
  offset: 8,
  length: 12,
} as const;
export const VIRTIO_PCI_CAP_SIZE = 16;
/** §4.1.4.4: `struct virtio_pci_notify_cap`: the cap, then `notify_off_multiplier`. */
export const VIRTIO_PCI_NOTIFY_CAP_MULT = 16;
export const VIRTIO_PCI_NOTIFY_CAP_SIZE = 20;
/** §4.1.4.9: `struct virtio_pci_cfg_cap`: the cap, then `pci_cfg_data[4]`. */
export const VIRTIO_PCI_CFG_CAP_DATA = 16;
export const VIRTIO_PCI_CFG_CAP_SIZE = 20;

/** §4.1.4.3: `struct virtio_pci_common_cfg` field offsets. */
export const VirtioPciCommonCfg = {
  device_feature_select: 0x00,
  device_feature: 0x04,
  driver_feature_select: 0x08,
  driver_feature: 0x0c,
  config_msix_vector: 0x10,
  num_queues: 0x12,
  device_status: 0x14,
  config_generation: 0x15,
  queue_select: 0x16,
  queue_size: 0x18,
  queue_msix_vector: 0x1a,
  queue_enable: 0x1c,
  queue_notify_off: 0x1e,
  queue_desc: 0x20,
  queue_driver: 0x28,
  queue_device: 0x30,
  queue_notify_data: 0x38,
  queue_reset: 0x3a,
} as const;
/** Size of `struct virtio_pci_common_cfg` (through `queue_reset`). */
export const VIRTIO_PCI_COMMON_CFG_SIZE = 0x3c;

/** §4.1.4.5: ISR status bits. */
export const VIRTIO_PCI_ISR_QUEUE = 0x1;
export const VIRTIO_PCI_ISR_CONFIG = 0x2;

/** §4.1.5.1: the vector value meaning "no MSI-X vector". */
export const VIRTIO_MSI_NO_VECTOR = 0xffff;

/** §4.1.4.10: the legacy register block in BAR0 (I/O space). */
export const VirtioPciLegacy = {
  /** Device features bits 0:31 (R, 32 bits). */
  HOST_FEATURES: 0,
  /** Driver features bits 0:31 (RW, 32 bits). */
  GUEST_FEATURES: 4,
  /** Queue address: guest-physical page number, 4096-byte pages (RW, 32 bits). */
  QUEUE_PFN: 8,
  /** queue_size (R, 16 bits). */
  QUEUE_NUM: 12,
  /** queue_select (RW, 16 bits). */
  QUEUE_SEL: 14,
  /** Queue Notify (RW, 16 bits). */
  QUEUE_NOTIFY: 16,
  /** Device Status (RW, 8 bits). */
  STATUS: 18,
  /** ISR Status (R, 8 bits, read-to-clear). */
  ISR: 19,
} as const;
/** §4.1.4.10: device-specific configuration offset in the legacy block without MSI-X (24 with it). */
export const VIRTIO_PCI_LEGACY_CONFIG_OFF = 20;
/** §4.1.5.1 (legacy note): the queue address unit and the legacy ring's alignment. */
export const VIRTIO_PCI_LEGACY_QUEUE_ALIGN = 4096;
export const VIRTIO_PCI_LEGACY_PFN_SHIFT = 12;

/** PCI configuration header (type 0) offsets used by a virtio function. */
export const PciHeader = {
  VENDOR_ID: 0x00,
  DEVICE_ID: 0x02,
  COMMAND: 0x04,
  STATUS: 0x06,
  REVISION_ID: 0x08,
  CLASS_PROG: 0x09,
  CLASS_SUBCLASS: 0x0a,
  CLASS_BASE: 0x0b,
  HEADER_TYPE: 0x0e,
  BAR0: 0x10,
  SUBSYSTEM_VENDOR_ID: 0x2c,
  SUBSYSTEM_ID: 0x2e,
  CAPABILITIES_PTR: 0x34,
  INTERRUPT_LINE: 0x3c,
  INTERRUPT_PIN: 0x3d,
} as const;
/** Size of a conventional PCI function's configuration space. */
export const PCI_CONFIG_SPACE_SIZE = 256;
/** PCI command register bits. */
export const PCI_COMMAND_IO = 0x1;
export const PCI_COMMAND_MEMORY = 0x2;
export const PCI_COMMAND_MASTER = 0x4;
export const PCI_COMMAND_INTX_DISABLE = 0x400;
/** PCI status register bits: Interrupt Status (§4.1.4.5: the OR of the ISR bits), Capabilities List. */
export const PCI_STATUS_INTERRUPT = 0x8;
export const PCI_STATUS_CAP_LIST = 0x10;
/** BAR low bits: I/O space indicator. */
export const PCI_BASE_ADDRESS_SPACE_IO = 0x1;

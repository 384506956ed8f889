/**
 * Virtio over MMIO: the register layout of version 2 and of the legacy
 * version 1. VIRTIO 1.2 §4.2.2 (MMIO device register layout), §4.2.3.4
 * (notifications from the device: InterruptStatus bits), §4.2.4 (legacy
 * interface: GuestPageSize, QueueAlign, QueuePFN). Offsets are byte offsets
 * from the register window's base; every register is 32 bits,
 * little-endian.
 *
 * @module
 */

/** §4.2.2: MagicValue, "virt" read as a little-endian 32-bit value. */
export const VIRTIO_MMIO_MAGIC = 0x74726976;
/** §4.2.2: Version of the current interface; §4.2.4: the legacy one. */
export const VIRTIO_MMIO_VERSION = 2;
export const VIRTIO_MMIO_VERSION_LEGACY = 1;

/** §4.2.2 register offsets (names as in Linux's `virtio_mmio.h`, values from the spec's table). */
export const VIRTIO_MMIO_MAGIC_VALUE = 0x000;
export const VIRTIO_MMIO_VERSION_REG = 0x004;
export const VIRTIO_MMIO_DEVICE_ID = 0x008;
export const VIRTIO_MMIO_VENDOR_ID = 0x00c;
export const VIRTIO_MMIO_DEVICE_FEATURES = 0x010;
export const VIRTIO_MMIO_DEVICE_FEATURES_SEL = 0x014;
export const VIRTIO_MMIO_DRIVER_FEATURES = 0x020;
export const VIRTIO_MMIO_DRIVER_FEATURES_SEL = 0x024;
/** §4.2.4: legacy only. */
export const VIRTIO_MMIO_GUEST_PAGE_SIZE = 0x028;
export const VIRTIO_MMIO_QUEUE_SEL = 0x030;
export const VIRTIO_MMIO_QUEUE_NUM_MAX = 0x034;
export const VIRTIO_MMIO_QUEUE_NUM = 0x038;
/** §4.2.4: legacy only. */
export const VIRTIO_MMIO_QUEUE_ALIGN = 0x03c;
/** §4.2.4: legacy only. */
export const VIRTIO_MMIO_QUEUE_PFN = 0x040;
export const VIRTIO_MMIO_QUEUE_READY = 0x044;
export const VIRTIO_MMIO_QUEUE_NOTIFY = 0x050;
export const VIRTIO_MMIO_INTERRUPT_STATUS = 0x060;
export const VIRTIO_MMIO_INTERRUPT_ACK = 0x064;
export const VIRTIO_MMIO_STATUS = 0x070;
export const VIRTIO_MMIO_QUEUE_DESC_LOW = 0x080;
export const VIRTIO_MMIO_QUEUE_DESC_HIGH = 0x084;
export const VIRTIO_MMIO_QUEUE_AVAIL_LOW = 0x090;
export const VIRTIO_MMIO_QUEUE_AVAIL_HIGH = 0x094;
export const VIRTIO_MMIO_QUEUE_USED_LOW = 0x0a0;
export const VIRTIO_MMIO_QUEUE_USED_HIGH = 0x0a4;
export const VIRTIO_MMIO_SHM_SEL = 0x0ac;
export const VIRTIO_MMIO_SHM_LEN_LOW = 0x0b0;
export const VIRTIO_MMIO_SHM_LEN_HIGH = 0x0b4;
export const VIRTIO_MMIO_SHM_BASE_LOW = 0x0b8;
export const VIRTIO_MMIO_SHM_BASE_HIGH = 0x0bc;
export const VIRTIO_MMIO_QUEUE_RESET = 0x0c0;
export const VIRTIO_MMIO_CONFIG_GENERATION = 0x0fc;
/** §4.2.2: the device-specific configuration space starts here. */
export const VIRTIO_MMIO_CONFIG = 0x100;

/** §4.2.2 InterruptStatus / InterruptACK bits. */
export const VIRTIO_MMIO_INT_VRING = 0x1;
export const VIRTIO_MMIO_INT_CONFIG = 0x2;

/**
 * Test helpers for virtio-ts and for users testing their own devices: mock
 * drivers that build any ring, valid or malformed, in a GuestMemory — a
 * split virtqueue (VIRTIO 1.2 §2.7) and a packed one (§2.8); driver-side
 * models of the emulated transports' registers (virtio-pci §4.1,
 * virtio-mmio §4.2) that initialize a device as a guest would.
 *
 * @module
 */
export {
  MockAllocator,
  MockSplitQueue,
  chainEntries,
  readDescAt,
  writeDescAt,
  type MockBuffer,
  type MockChainOptions,
  type MockDescriptor,
  type MockDescriptorRead,
  type MockRingAddresses,
  type MockSplitQueueOptions,
  type MockUsedElem,
} from "./mock-driver.ts";
export {
  MockPackedQueue,
  mockAvailBits,
  mockUsedBits,
  packedTableEntries,
  readEventAt,
  readPackedDescAt,
  writeEventAt,
  writePackedDescAt,
  type MockPackedChain,
  type MockPackedChainOptions,
  type MockPackedDescriptor,
  type MockPackedDescriptorRead,
  type MockPackedEvent,
  type MockPackedRingAddresses,
  type MockPackedUsed,
} from "./mock-packed-driver.ts";
export { splitOnly } from "./split-only.ts";
export { MmioDriverModel } from "./mmio-driver.ts";
export {
  PciDriverModel,
  findVirtioStructures,
  type ModernStructures,
  type PciStructure,
  type PciPort,
} from "./pci-driver.ts";
export { pollUntil, type RegisterDriver, type RegisterPort } from "./register-driver.ts";

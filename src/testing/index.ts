/**
 * Test helpers for virtio-ts and for users testing their own devices: a mock
 * split-virtqueue driver (VIRTIO 1.2 §2.7) that builds any ring, valid or
 * malformed, in a GuestMemory.
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

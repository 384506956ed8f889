/**
 * `virtio-ts/emulated`: register models that put a device of the framework
 * behind an emulated machine's bus — virtio-pci (VIRTIO 1.2 §4.1: modern,
 * transitional and legacy functions; configuration space image, BARs,
 * INTx) and virtio-mmio (§4.2: version 2 and the legacy version 1). An
 * emulator forwards register reads and writes and supplies an interrupt
 * line; see docs/emulators.md. Portable: no Node-only import.
 *
 * @module virtio-ts/emulated
 */
export {
  InterruptState,
  ISR_CONFIG,
  ISR_QUEUE,
  type InterruptLine,
} from "../transport/interrupt.ts";
export { REGISTER_LOG_LIMIT } from "../transport/register-log.ts";
export {
  VirtioPciTransport,
  type PciBar,
  type PciInterface,
  type PciTransportOptions,
} from "../transport/pci/pci-transport.ts";
export type { ModernLayout, PciIdentity, PciRegion } from "../transport/pci/layout.ts";
export {
  VirtioMmioTransport,
  type MmioTransportOptions,
} from "../transport/mmio/mmio-transport.ts";
export * from "../spec/virtio-pci.ts";
export * from "../spec/virtio-mmio.ts";

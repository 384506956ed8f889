/**
 * What the virtio-pci register blocks (the modern common configuration,
 * the legacy BAR0 block) share inside one function: the device, the
 * selector registers, the queue address registers, the interrupt state,
 * the bad-access log, and the status write that both interfaces make.
 * VIRTIO 1.2 §4.1.4.3 (common configuration), §4.1.4.10 (legacy block).
 *
 * @module
 */
import type { VirtioDevice } from "../../device/virtio-device.ts";
import type { InterruptState } from "../interrupt.ts";
import type { RegisterLog } from "../register-log.ts";
import type { QueueAddressRegisters } from "../register-device.ts";

/** Selector registers (one set per function; the legacy block has only queue_select). */
export interface PciSelectors {
  queue: number;
  deviceFeature: number;
  driverFeature: number;
}

/** The function's shared state, as the register blocks use it. */
export interface PciContext {
  readonly device: VirtioDevice;
  readonly log: RegisterLog;
  readonly interrupts: InterruptState;
  readonly addresses: QueueAddressRegisters;
  readonly sel: PciSelectors;
  /** A driver write to device_status (legacy: through the legacy block). */
  writeStatus(value: number, legacy: boolean): void;
  /** An available buffer notification naming queue `queue`. */
  notify(queue: number, register: string): void;
}

/**
 * What the emulated transports (virtio-pci, virtio-mmio) share on the device
 * side: device-specific configuration reads and writes of 1, 2 or 4 bytes
 * (little-endian, §2.5; any width and alignment: §4.1.4.10 "the driver MAY
 * access the device-specific configuration region using any width
 * accesses"), and the queue address registers the driver writes in 32-bit
 * halves before enabling a queue (§4.1.4.3 `queue_desc` / `queue_driver` /
 * `queue_device`, §4.2.2 QueueDescLow ... QueueDeviceHigh). VIRTIO 1.2 §2.5,
 * §4.1.4.3, §4.2.2, §4.2.3.2.
 *
 * Addresses are kept by the transport until the driver enables the queue,
 * then handed to the device with the ready bit (the device checks them
 * then). §4.1.4.3.2 "The driver MUST configure the other virtqueue fields
 * before enabling the virtqueue": a write while the queue is enabled is
 * ignored and logged.
 *
 * @module
 */
import type { VirtioDevice } from "../device/virtio-device.ts";

/** Reads `width` bytes of device-specific configuration at `offset` (out of range: 0xff bytes). */
export function readDeviceConfig(device: VirtioDevice, offset: number, width: 1 | 2 | 4): number {
  const bytes = new Uint8Array(width);
  device.readConfig(offset, bytes);
  let v = 0;
  for (let i = width - 1; i >= 0; i--) v = v * 256 + bytes[i]!;
  return v;
}

/** Writes the low `width` bytes of `value` (little-endian) at `offset`; the device decides what it takes. */
export function writeDeviceConfig(
  device: VirtioDevice,
  offset: number,
  width: 1 | 2 | 4,
  value: number,
): void {
  const bytes = new Uint8Array(width);
  let v = value >>> 0;
  for (let i = 0; i < width; i++) {
    bytes[i] = v & 0xff;
    v >>>= 8;
  }
  device.writeConfig(offset, bytes);
}

/** The three ring parts a driver names for a queue. */
export type QueuePart = "desc" | "driver" | "device";

const PARTS: readonly QueuePart[] = ["desc", "driver", "device"];

/**
 * Per-queue address registers as the driver wrote them (32-bit halves),
 * for the queues that exist. Cleared at reset.
 */
export class QueueAddressRegisters {
  readonly #words: Uint32Array;

  constructor(numQueues: number) {
    this.#words = new Uint32Array(numQueues * 6);
  }

  #at(queue: number, part: QueuePart, high: boolean): number {
    return queue * 6 + PARTS.indexOf(part) * 2 + (high ? 1 : 0);
  }

  /** One 32-bit half (0 for a queue that does not exist). */
  read(queue: number, part: QueuePart, high: boolean): number {
    if (!this.#has(queue)) return 0;
    return this.#words[this.#at(queue, part, high)]!;
  }

  /** Sets one 32-bit half; false for a queue that does not exist. */
  write(queue: number, part: QueuePart, high: boolean, value: number): boolean {
    if (!this.#has(queue)) return false;
    this.#words[this.#at(queue, part, high)] = value >>> 0;
    return true;
  }

  /** The full address of one part (may exceed 2^53: the device refuses such a ring). */
  address(queue: number, part: QueuePart): number {
    return this.read(queue, part, true) * 0x1_0000_0000 + this.read(queue, part, false);
  }

  /**
   * Enables `queue`: hands the addresses to the device, then sets it ready.
   * Returns the resulting ready state.
   */
  enable(device: VirtioDevice, queue: number): boolean {
    if (device.queueReady(queue)) return true;
    const ok = device.setQueueAddresses(
      queue,
      this.address(queue, "desc"),
      this.address(queue, "driver"),
      this.address(queue, "device"),
    );
    return ok && device.setQueueReady(queue, true);
  }

  /** Device reset: every register back to 0. */
  clear(): void {
    this.#words.fill(0);
  }

  #has(queue: number): boolean {
    return Number.isInteger(queue) && queue >= 0 && queue * 6 < this.#words.length;
  }
}

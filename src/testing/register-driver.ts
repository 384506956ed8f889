/**
 * Driver-side models of the emulated transports' register interfaces, for
 * tests: they perform the driver's initialization sequence of VIRTIO 1.2
 * §3.1.1 (reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK, queue setup,
 * DRIVER_OK) through register reads and writes only, as a guest driver
 * would: over virtio-mmio (§4.2.3, legacy §4.2.4) in ./mmio-driver.ts and
 * over virtio-pci (§4.1.5, legacy §4.1.4.10) in ./pci-driver.ts. This
 * module has what they share.
 *
 * @module
 */
import type { RingAddresses } from "../ring/ring-layout.ts";

/** A register window as a guest sees it: 1, 2 or 4-byte reads and writes at byte offsets. */
export interface RegisterPort {
  read(offset: number, width: number): number;
  write(offset: number, width: number, value: number): void;
}

/** What a test drives a device with, whatever the transport. */
export interface RegisterDriver {
  /** True for a legacy interface (no FEATURES_OK, rings in the §2.7.2 layout, bits 0–31 only). */
  readonly legacy: boolean;
  /** Queue Align of the legacy ring layout (4096 for PCI). */
  readonly legacyAlign: number;
  /** Writes 0 to the status and waits (bounded) until it reads 0 (§2.4.2). */
  reset(): Promise<void>;
  /** ACKNOWLEDGE, then DRIVER. */
  acknowledge(): void;
  /** The offered features (a legacy interface: bits 0–31). */
  deviceFeatures(): bigint;
  /** Writes the accepted features; modern: sets FEATURES_OK and returns whether it stuck. */
  negotiate(features: bigint): boolean;
  /** `length` bytes of the device-specific configuration from `offset`. */
  readConfig(offset: number, length: number): Uint8Array;
  /** The queue's maximum (legacy: its only) size; 0 if it does not exist. */
  queueMaxSize(index: number): number;
  /** Sets a queue up and enables it (legacy: `ring` must be in the §2.7.2 layout). */
  setupQueue(index: number, ring: RingAddresses): void;
  /** Sets DRIVER_OK. */
  driverOk(): void;
  /** The status byte. */
  status(): number;
  /** An available buffer notification for queue `index`. */
  kick(index: number): void;
  /** Handles an interrupt: reads (and clears / acknowledges) the ISR bits and returns them. */
  interrupt(): number;
}

/** Status bits of §2.1 (repeated here so the models read like a driver). */
export const ACKNOWLEDGE = 1;
export const DRIVER = 2;
export const DRIVER_OK = 4;
export const FEATURES_OK = 8;

/** Polls `done` every millisecond until it is true; rejects after `ms`. */
export async function pollUntil(done: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`${what}: not done within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

/** Splits a 64-bit address into its low and high 32-bit words. */
export function halves(addr: number): [number, number] {
  return [addr % 0x1_0000_0000, Math.floor(addr / 0x1_0000_0000)];
}

/**
 * The interrupt side of an emulated transport: an ISR status byte and one
 * level-triggered interrupt line. VIRTIO 1.2 §4.1.4.5 (ISR status: bit 0
 * used buffer, bit 1 configuration change; a read returns the bits, resets
 * them to 0 and de-asserts the interrupt), §4.1.5.3 / §4.1.5.4 (INTx: set the
 * bit, then send the interrupt), §4.2.2 (virtio-mmio InterruptStatus and
 * InterruptACK), §4.2.3.4 (one interrupt, asserted while a bit is set).
 *
 * The line is asserted while any bit is set and not masked (PCI command
 * register "Interrupt Disable"); {@link InterruptLine.raise} and
 * {@link InterruptLine.lower} are called on changes only. Notifications that
 * arrive while the device resets (in-flight requests completed during
 * quiesce) are dropped: the driver asked for a reset and reads 0 bits after
 * it.
 *
 * @module
 */
import type { DeviceNotifier } from "../device/lifecycle.ts";

/** The emulator's interrupt line for one device (INTx, or the mmio device's interrupt). */
export interface InterruptLine {
  /** Assert the line (level-triggered: it stays asserted until {@link lower}). */
  raise(): void;
  /** De-assert the line. */
  lower(): void;
}

/** ISR status bit: a used buffer notification (§4.1.4.5 bit 0, virtio-mmio InterruptStatus bit 0). */
export const ISR_QUEUE = 0x1;
/** ISR status bit: a configuration change notification (bit 1). */
export const ISR_CONFIG = 0x2;

/** The ISR bits of one device and the line they drive. */
export class InterruptState implements DeviceNotifier {
  readonly #line: InterruptLine;
  readonly #resetting: () => boolean;
  readonly #log: (line: string) => void;
  /** Told the pending bits after every change (PCI: the status register's Interrupt Status bit). */
  onBits: ((bits: number) => void) | null = null;
  #bits = 0;
  #masked = false;
  #asserted = false;

  /**
   * @param resetting true while the device resets (notifications are dropped then).
   * @param log where a failing line callback is reported.
   */
  constructor(line: InterruptLine, resetting: () => boolean, log: (line: string) => void) {
    this.#line = line;
    this.#resetting = resetting;
    this.#log = log;
  }

  /** The pending bits. */
  get bits(): number {
    return this.#bits;
  }

  /** True while the line is asserted. */
  get asserted(): boolean {
    return this.#asserted;
  }

  notifyQueue(): void {
    if (!this.#resetting()) this.#update(this.#bits | ISR_QUEUE);
  }

  notifyConfig(): void {
    if (!this.#resetting()) this.#update(this.#bits | ISR_CONFIG);
  }

  /** PCI ISR read: the bits, then 0 and the line lowered. */
  readAndClear(): number {
    const bits = this.#bits;
    this.#update(0);
    return bits;
  }

  /** virtio-mmio InterruptACK: clears the bits given (undefined bits are ignored). */
  acknowledge(bits: number): void {
    this.#update(this.#bits & ~bits);
  }

  /** Device reset: no bits, line lowered. */
  clear(): void {
    this.#update(0);
  }

  /** PCI "Interrupt Disable": while masked the line stays low, the bits stay. */
  setMasked(masked: boolean): void {
    this.#masked = masked;
    this.#update(this.#bits);
  }

  #update(bits: number): void {
    this.#bits = bits & (ISR_QUEUE | ISR_CONFIG);
    this.onBits?.(this.#bits);
    const want = this.#bits !== 0 && !this.#masked;
    if (want === this.#asserted) return;
    this.#asserted = want;
    try {
      if (want) this.#line.raise();
      else this.#line.lower();
    } catch (e) {
      this.#log(`interrupt line ${want ? "raise" : "lower"} failed: ${String(e)}`);
    }
  }
}

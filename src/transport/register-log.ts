/**
 * Bad register accesses of an emulated transport, reported one line each
 * (the register named), at most {@link REGISTER_LOG_LIMIT} lines per device:
 * a guest that hammers a bad register cannot flood the log. VIRTIO 1.2
 * §4.1.3 (PCI: natural-width accesses), §4.2.2.2 (virtio-mmio: "The driver
 * MUST only use 32 bit wide and aligned reads and writes to access the
 * control registers"): what a driver must not do, the device survives.
 *
 * @module
 */

/** Lines per device before the rest are counted only. */
export const REGISTER_LOG_LIMIT = 64;

/** One device's bad-access log. */
export class RegisterLog {
  readonly #sink: (line: string) => void;
  readonly #prefix: string;
  #lines = 0;
  /** Bad accesses seen (logged or not). */
  count = 0;

  constructor(prefix: string, sink: (line: string) => void) {
    this.#prefix = prefix;
    this.#sink = sink;
  }

  /** Reports one bad access. */
  bad(line: string): void {
    this.count++;
    if (this.#lines > REGISTER_LOG_LIMIT) return;
    this.#lines++;
    this.#sink(
      this.#lines > REGISTER_LOG_LIMIT
        ? `${this.#prefix}: more bad register accesses, no longer logged`
        : `${this.#prefix}: ${line}`,
    );
  }

  /** A line that is not about a bad access (passed through). */
  info(line: string): void {
    this.#sink(`${this.#prefix}: ${line}`);
  }
}

/** True for an access width the models take: 1, 2 or 4 bytes. */
export function isAccessWidth(width: number): width is 1 | 2 | 4 {
  return width === 1 || width === 2 || width === 4;
}

/** The all-ones value of an access width (what PCI returns for nothing there). */
export function allOnes(width: number): number {
  return width === 1 ? 0xff : width === 2 ? 0xffff : 0xffff_ffff;
}

/** Masks `value` to `width` bytes (unsigned). */
export function maskWidth(value: number, width: 1 | 2 | 4): number {
  const v = Number.isFinite(value) ? value : 0;
  return width === 4 ? v >>> 0 : v & (width === 1 ? 0xff : 0xffff);
}

/** `0x1f` style hex for log lines. */
export function hex(v: number): string {
  return `0x${(v >>> 0).toString(16)}`;
}

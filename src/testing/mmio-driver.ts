/**
 * A driver-side model of virtio-mmio for tests: the §3.1.1 initialization
 * and the notifications over the register window only. VIRTIO 1.2 §4.2.2
 * (registers), §4.2.3.1 (device initialization: MagicValue, Version,
 * DeviceID first), §4.2.3.2 (virtqueue configuration), §4.2.3.4
 * (InterruptStatus, then InterruptACK), §4.2.4 (legacy: GuestPageSize,
 * QueueNum, QueueAlign, QueuePFN).
 *
 * @module
 */
import type { RingAddresses } from "../ring/ring-layout.ts";
import * as m from "../spec/virtio-mmio.ts";
import { legacyRingParts } from "../spec/virtqueue.ts";
import {
  ACKNOWLEDGE,
  DRIVER,
  DRIVER_OK,
  FEATURES_OK,
  halves,
  pollUntil,
  type RegisterDriver,
  type RegisterPort,
} from "./register-driver.ts";

/** A virtio-mmio driver model over a register window. */
export class MmioDriverModel implements RegisterDriver {
  readonly legacy: boolean;
  readonly legacyAlign: number;
  readonly #port: RegisterPort;

  /**
   * Checks MagicValue and Version (§4.2.3.1) and, for version 1, writes
   * GuestPageSize.
   *
   * @throws {Error} for a window that is not a virtio-mmio device.
   */
  constructor(port: RegisterPort, legacyAlign = 4096) {
    this.#port = port;
    if (this.#r(m.VIRTIO_MMIO_MAGIC_VALUE) !== m.VIRTIO_MMIO_MAGIC)
      throw new Error("not a virtio-mmio device (MagicValue)");
    const version = this.#r(m.VIRTIO_MMIO_VERSION_REG);
    if (version !== 1 && version !== 2) throw new Error(`virtio-mmio version ${version}`);
    if (this.#r(m.VIRTIO_MMIO_DEVICE_ID) === 0) throw new Error("placeholder device (DeviceID 0)");
    this.legacy = version === 1;
    this.legacyAlign = legacyAlign;
    if (this.legacy) this.#w(m.VIRTIO_MMIO_GUEST_PAGE_SIZE, 4096);
  }

  #r(offset: number): number {
    return this.#port.read(offset, 4);
  }
  #w(offset: number, value: number): void {
    this.#port.write(offset, 4, value);
  }

  async reset(): Promise<void> {
    this.#w(m.VIRTIO_MMIO_STATUS, 0);
    await pollUntil(() => this.status() === 0, 10_000, "virtio-mmio reset");
  }

  acknowledge(): void {
    this.#w(m.VIRTIO_MMIO_STATUS, ACKNOWLEDGE);
    this.#w(m.VIRTIO_MMIO_STATUS, ACKNOWLEDGE | DRIVER);
  }

  deviceFeatures(): bigint {
    let f = 0n;
    for (const sel of [1, 0]) {
      this.#w(m.VIRTIO_MMIO_DEVICE_FEATURES_SEL, sel);
      f = (f << 32n) | BigInt(this.#r(m.VIRTIO_MMIO_DEVICE_FEATURES));
    }
    return f;
  }

  negotiate(features: bigint): boolean {
    for (const sel of [0, 1]) {
      this.#w(m.VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
      this.#w(m.VIRTIO_MMIO_DRIVER_FEATURES, Number((features >> BigInt(32 * sel)) & 0xffff_ffffn));
    }
    if (this.legacy) return true;
    this.#w(m.VIRTIO_MMIO_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    return (this.status() & FEATURES_OK) !== 0;
  }

  readConfig(offset: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    for (let i = 0; i < length; i++) out[i] = this.#port.read(m.VIRTIO_MMIO_CONFIG + offset + i, 1);
    return out;
  }

  queueMaxSize(index: number): number {
    this.#w(m.VIRTIO_MMIO_QUEUE_SEL, index);
    return this.#r(m.VIRTIO_MMIO_QUEUE_NUM_MAX);
  }

  setupQueue(index: number, ring: RingAddresses): void {
    this.#w(m.VIRTIO_MMIO_QUEUE_SEL, index);
    if (this.#r(this.legacy ? m.VIRTIO_MMIO_QUEUE_PFN : m.VIRTIO_MMIO_QUEUE_READY) !== 0)
      throw new Error(`queue ${index} is already in use`);
    this.#w(m.VIRTIO_MMIO_QUEUE_NUM, ring.size);
    if (this.legacy) return this.#setupLegacy(ring);
    const regs: [number, number][] = [
      [m.VIRTIO_MMIO_QUEUE_DESC_LOW, ring.descAddr],
      [m.VIRTIO_MMIO_QUEUE_AVAIL_LOW, ring.availAddr],
      [m.VIRTIO_MMIO_QUEUE_USED_LOW, ring.usedAddr],
    ];
    for (const [low, addr] of regs) {
      const [lo, hi] = halves(addr);
      this.#w(low, lo);
      this.#w(low + 4, hi);
    }
    this.#w(m.VIRTIO_MMIO_QUEUE_READY, 1);
  }

  #setupLegacy(ring: RingAddresses): void {
    const want = legacyRingParts(ring.descAddr, ring.size, this.legacyAlign);
    if (
      want.availAddr !== ring.availAddr ||
      want.usedAddr !== ring.usedAddr ||
      ring.descAddr % 4096
    )
      throw new Error("a legacy ring must be in the §2.7.2 layout on a page boundary");
    this.#w(m.VIRTIO_MMIO_QUEUE_ALIGN, this.legacyAlign);
    this.#w(m.VIRTIO_MMIO_QUEUE_PFN, ring.descAddr / 4096);
  }

  driverOk(): void {
    const s = this.legacy ? ACKNOWLEDGE | DRIVER : ACKNOWLEDGE | DRIVER | FEATURES_OK;
    this.#w(m.VIRTIO_MMIO_STATUS, s | DRIVER_OK);
  }

  status(): number {
    return this.#r(m.VIRTIO_MMIO_STATUS);
  }

  kick(index: number): void {
    this.#w(m.VIRTIO_MMIO_QUEUE_NOTIFY, index);
  }

  interrupt(): number {
    const bits = this.#r(m.VIRTIO_MMIO_INTERRUPT_STATUS);
    if (bits !== 0) this.#w(m.VIRTIO_MMIO_INTERRUPT_ACK, bits);
    return bits;
  }
}

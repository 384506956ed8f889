/**
 * The legacy virtio-pci register block in BAR0 (I/O space) of a
 * transitional function. VIRTIO 1.2 §4.1.4.10 (the layout: device features
 * bits 0:31, driver features bits 0:31, queue address, queue_size,
 * queue_select, queue notify, device status, ISR status, then — without
 * MSI-X — the device-specific configuration at byte 20; "only Feature Bits
 * 0 to 31 are accessible through the Legacy Interface"; the configuration
 * may be accessed with any width), §4.1.5.1 legacy note (the queue address
 * is the guest-physical address divided by 4096, the ring in the §2.7.2
 * layout with an alignment of 4096; no way to change the queue size),
 * §4.1.4.5 (the ISR read clears it and lowers the interrupt).
 *
 * Every write that drives the device first makes it a legacy session
 * ({@link VirtioDevice.beginLegacy}); a function a modern driver already
 * took (FEATURES_OK) ignores the legacy writes. Register accesses other
 * than the register's width read 0 / are ignored and logged.
 *
 * @module
 */
import {
  VIRTIO_PCI_LEGACY_CONFIG_OFF,
  VIRTIO_PCI_LEGACY_PFN_SHIFT,
  VIRTIO_PCI_LEGACY_QUEUE_ALIGN,
  VirtioPciLegacy as L,
} from "../../spec/virtio-pci.ts";
import { legacyRingParts } from "../../spec/virtqueue.ts";
import { hex } from "../register-log.ts";
import { readDeviceConfig, writeDeviceConfig } from "../register-device.ts";
import type { PciContext } from "./context.ts";

const REGISTERS: ReadonlyMap<number, { name: string; width: 1 | 2 | 4; readOnly: boolean }> =
  new Map([
    [L.HOST_FEATURES, { name: "device features", width: 4, readOnly: true }],
    [L.GUEST_FEATURES, { name: "driver features", width: 4, readOnly: false }],
    [L.QUEUE_PFN, { name: "queue address", width: 4, readOnly: false }],
    [L.QUEUE_NUM, { name: "queue_size", width: 2, readOnly: true }],
    [L.QUEUE_SEL, { name: "queue_select", width: 2, readOnly: false }],
    [L.QUEUE_NOTIFY, { name: "queue notify", width: 2, readOnly: false }],
    [L.STATUS, { name: "device status", width: 1, readOnly: false }],
    [L.ISR, { name: "ISR status", width: 1, readOnly: true }],
  ]);

/** Per-function legacy state: the queue addresses taken and the last notify value. */
export class LegacyRegisters {
  readonly #ctx: PciContext;
  readonly #pfn: Uint32Array;
  #lastNotify = 0;

  constructor(ctx: PciContext) {
    this.#ctx = ctx;
    this.#pfn = new Uint32Array(ctx.device.numQueues);
  }

  #register(offset: number, width: number, kind: "read" | "write") {
    const r = REGISTERS.get(offset);
    if (r !== undefined && r.width === width && (kind === "read" || !r.readOnly)) return r;
    const name = r?.name ?? `offset ${hex(offset)} (no register starts there)`;
    const why = r !== undefined && r.width === width ? "read-only" : `${width}-byte access`;
    this.#ctx.log.bad(`legacy ${name}: ${kind} ignored (${why})`);
    return null;
  }

  read(offset: number, width: 1 | 2 | 4): number {
    const ctx = this.#ctx;
    if (offset >= VIRTIO_PCI_LEGACY_CONFIG_OFF)
      return readDeviceConfig(ctx.device, offset - VIRTIO_PCI_LEGACY_CONFIG_OFF, width);
    if (this.#register(offset, width, "read") === null) return 0;
    const dev = ctx.device;
    const q = ctx.sel.queue;
    switch (offset) {
      case L.HOST_FEATURES:
        return dev.readDeviceFeaturesWord(0); // bit 32 (VIRTIO_F_VERSION_1) is not in word 0
      case L.GUEST_FEATURES:
        return Number(dev.readDriverFeatures() & 0xffff_ffffn);
      case L.QUEUE_PFN:
        return dev.queueReady(q) ? this.#pfn[q]! : 0;
      case L.QUEUE_NUM:
        return dev.queueSize(q);
      case L.QUEUE_SEL:
        return q;
      case L.QUEUE_NOTIFY:
        return this.#lastNotify;
      case L.STATUS:
        return dev.readStatus();
      default:
        return ctx.interrupts.readAndClear();
    }
  }

  write(offset: number, width: 1 | 2 | 4, v: number): void {
    const ctx = this.#ctx;
    if (offset >= VIRTIO_PCI_LEGACY_CONFIG_OFF) {
      writeDeviceConfig(ctx.device, offset - VIRTIO_PCI_LEGACY_CONFIG_OFF, width, v);
      return;
    }
    if (this.#register(offset, width, "write") === null) return;
    switch (offset) {
      case L.GUEST_FEATURES:
        if (ctx.device.beginLegacy()) ctx.device.writeDriverFeaturesWord(0, v);
        return;
      case L.QUEUE_PFN:
        return this.#writePfn(v);
      case L.QUEUE_SEL:
        ctx.sel.queue = v;
        return;
      case L.QUEUE_NOTIFY:
        this.#lastNotify = v;
        return ctx.notify(v, "legacy queue notify");
      default:
        return ctx.writeStatus(v, true);
    }
  }

  /** Queue address: 0 stops the queue, otherwise the ring is at `pfn` × 4096 (§2.7.2 layout). */
  #writePfn(pfn: number): void {
    const dev = this.#ctx.device;
    const q = this.#ctx.sel.queue;
    if (!dev.beginLegacy()) return;
    if (pfn === 0) {
      if (dev.queueReady(q)) dev.setQueueReady(q, false);
      return;
    }
    if (q >= dev.numQueues || dev.queueReady(q)) {
      const why = q >= dev.numQueues ? "no such queue" : "queue in use (write 0 first)";
      this.#ctx.log.bad(`legacy queue address ${hex(pfn)} for queue ${q} ignored: ${why}`);
      return;
    }
    const base = pfn * 2 ** VIRTIO_PCI_LEGACY_PFN_SHIFT;
    const parts = legacyRingParts(base, dev.queueSize(q), VIRTIO_PCI_LEGACY_QUEUE_ALIGN);
    if (!dev.setQueueAddresses(q, parts.descAddr, parts.availAddr, parts.usedAddr)) return;
    if (dev.setQueueReady(q, true)) this.#pfn[q] = pfn;
  }
}

/**
 * The virtio-pci register model: a device of the framework
 * ({@link VirtioDevice}) as a PCI function — its configuration space image,
 * its BARs, register reads and writes in; device operations and the INTx
 * line out. Pure TypeScript: a bus adapter places the BARs (port I/O or
 * memory) and forwards accesses. VIRTIO 1.2 §4.1.2 (identity), §4.1.3
 * (access widths), §4.1.4 (capabilities), §4.1.4.3 (common configuration),
 * §4.1.4.4 (notification: the value written is the queue index), §4.1.4.5
 * (ISR: read-to-clear, lowers the interrupt), §4.1.4.6 (device-specific
 * configuration), §4.1.4.9 (PCI configuration access capability),
 * §4.1.4.10 (legacy block in BAR0), §4.1.5.3 / §4.1.5.4 (INTx
 * notifications; no MSI-X).
 *
 * Interfaces: "modern" (device id 0x1040 + id, revision 1, one BAR with the
 * modern structures), "transitional" (a transitional device id, revision 0,
 * the legacy block in I/O BAR0 and the modern BAR as BAR1), "legacy" (the
 * same identity, the legacy block only, no capabilities). The modern BAR
 * may be placed in memory (default) or I/O space.
 *
 * Bad accesses (docs/conformance.md "Emulated transports"): a BAR that does
 * not exist or an offset past its end reads all ones (as PCI does for
 * nothing there); a gap inside a BAR, a wrong width, a read-only field
 * written, a bad value read 0 / are ignored; each is logged once (one line
 * naming the register, at most 64 lines per function). Nothing throws out
 * of `read`, `write`, `readConfigSpace` or `writeConfigSpace`.
 *
 * Status 0 starts the device's reset (asynchronous: device_status reads the
 * old value until in-flight requests are completed, §2.4) and clears the ISR
 * at once; notifications during the reset are dropped.
 *
 * @module
 */
import type { VirtioDevice } from "../../device/virtio-device.ts";
import { PCI_CONFIG_SPACE_SIZE } from "../../spec/virtio-pci.ts";
import { InterruptState, type InterruptLine } from "../interrupt.ts";
import { RegisterLog, allOnes, hex, isAccessWidth, maskWidth } from "../register-log.ts";
import { QueueAddressRegisters, readDeviceConfig, writeDeviceConfig } from "../register-device.ts";
import { readCommonCfg, writeCommonCfg } from "./common-cfg.ts";
import { PciConfigSpace } from "./config-space.ts";
import type { PciContext, PciSelectors } from "./context.ts";
import {
  legacyBarSize,
  modernBarSize,
  modernFitsIo,
  modernLayout,
  pciIdentity,
  type ModernLayout,
  type PciBar,
  type PciIdentityOptions,
  type PciInterface,
  type PciRegion,
} from "./layout.ts";
import { LegacyRegisters } from "./legacy-regs.ts";

export type { PciBar, PciInterface } from "./layout.ts";

/** Options of {@link VirtioPciTransport}. */
export interface PciTransportOptions extends PciIdentityOptions {
  /** The function's INTx line (pin A). */
  readonly interrupt: InterruptLine;
  /** "modern" (default), "transitional" or "legacy". */
  readonly interface?: PciInterface;
  /** The space of the modern BAR: "memory" (default) or "io" (at most 256 bytes). */
  readonly modernBar?: "memory" | "io";
  /** notify_off_multiplier: 0 or an even power of two (default 4). */
  readonly notifyOffMultiplier?: number;
  /** Where log lines go (default console.warn). */
  readonly log?: (line: string) => void;
}

const inRegion = (r: PciRegion | null, offset: number, width: number): r is PciRegion =>
  r !== null && offset >= r.offset && offset + width <= r.offset + r.length;

/**
 * One virtio PCI function.
 *
 * @example
 * ```ts
 * const pci = new VirtioPciTransport(device, { interrupt: { raise, lower } });
 * bus.register(pci.configSpace, pci.bars); // the adapter's part
 * pci.read(0, offset, 2); pci.write(0, offset, 2, value);
 * ```
 */
export class VirtioPciTransport {
  readonly device: VirtioDevice;
  readonly interface: PciInterface;
  /** The BARs the function decodes. */
  readonly bars: readonly PciBar[];
  /** The modern structures (null for a legacy-only function). */
  readonly modern: ModernLayout | null;
  readonly interrupts: InterruptState;
  readonly #config: PciConfigSpace;
  readonly #log: RegisterLog;
  readonly #ctx: PciContext;
  readonly #legacy: LegacyRegisters | null;
  #pending: Promise<void> = Promise.resolve();

  /**
   * @throws {RangeError} for a configuration that cannot be built: a
   *   transitional / legacy function of a device type without a
   *   transitional id, registers too large for an I/O BAR, a bad multiplier.
   */
  constructor(device: VirtioDevice, options: PciTransportOptions) {
    this.device = device;
    const iface = options.interface ?? "modern";
    this.interface = iface;
    const sink = options.log ?? ((line: string) => console.warn(line));
    this.#log = new RegisterLog(`${device.backend.name} (virtio-pci ${iface})`, sink);
    const { bars, modern } = planBars(device, iface, options);
    this.bars = bars;
    this.modern = modern;
    this.#config = new PciConfigSpace(pciIdentity(device.deviceId, iface, options), bars, modern);
    this.interrupts = new InterruptState(options.interrupt, () => device.resetting, sink);
    this.interrupts.onBits = (bits) => this.#config.setInterruptStatus(bits !== 0);
    device.setNotifier(this.interrupts);
    this.#ctx = this.#context();
    this.#legacy = iface === "modern" ? null : new LegacyRegisters(this.#ctx);
  }

  #context(): PciContext {
    const sel: PciSelectors = { queue: 0, deviceFeature: 0, driverFeature: 0 };
    const addresses = new QueueAddressRegisters(this.device.numQueues);
    return {
      device: this.device,
      log: this.#log,
      interrupts: this.interrupts,
      addresses,
      sel,
      writeStatus: (v, legacy) => this.#writeStatus(v, legacy),
      notify: (q, register) => this.#notify(q, register),
    };
  }

  /** The 256-byte configuration space image (live: the Interrupt Status bit follows the ISR). */
  get configSpace(): Uint8Array {
    return this.#config.bytes;
  }

  /** Bad accesses seen so far. */
  get badAccesses(): number {
    return this.#log.count;
  }

  /** Resolves when the last device_status write took effect (a reset done, DRIVER_OK activated). */
  settled(): Promise<void> {
    return this.#pending;
  }

  /** A driver read of `width` (1, 2, 4) bytes at `offset` of BAR `bar`. Never throws. */
  read(bar: number, offset: number, width: number): number {
    const b = this.#bar(bar, offset, width, "read");
    if (b === null) return isAccessWidth(width) ? allOnes(width) : 0;
    if (b.contents === "legacy") return this.#legacy!.read(offset, width as 1 | 2 | 4) >>> 0;
    return this.#readModern(offset, width as 1 | 2 | 4) >>> 0;
  }

  /** A driver write of `width` (1, 2, 4) bytes at `offset` of BAR `bar`. Never throws. */
  write(bar: number, offset: number, width: number, value: number): void {
    const b = this.#bar(bar, offset, width, "write");
    if (b === null) return;
    const v = maskWidth(value, width as 1 | 2 | 4);
    if (b.contents === "legacy") this.#legacy!.write(offset, width as 1 | 2 | 4, v);
    else this.#writeModern(offset, width as 1 | 2 | 4, v);
  }

  #bar(bar: number, offset: number, width: number, kind: string): PciBar | null {
    const b = this.bars.find((x) => x.index === bar);
    const ok =
      b !== undefined &&
      isAccessWidth(width) &&
      Number.isSafeInteger(offset) &&
      offset >= 0 &&
      offset + width <= b.size;
    if (ok) return b;
    this.#log.bad(
      `${kind} of ${String(width)} bytes at BAR ${String(bar)} offset ${String(offset)}: nothing there`,
    );
    return null;
  }

  #readModern(offset: number, width: 1 | 2 | 4): number {
    const l = this.modern!;
    if (inRegion(l.common, offset, width)) return readCommonCfg(this.#ctx, offset, width);
    if (inRegion(l.device, offset, width))
      return readDeviceConfig(this.device, offset - l.device.offset, width);
    if (offset === l.isr.offset) return this.interrupts.readAndClear();
    this.#log.bad(`read of ${width} bytes at modern BAR offset ${hex(offset)}: no register`);
    return 0;
  }

  #writeModern(offset: number, width: 1 | 2 | 4, v: number): void {
    const l = this.modern!;
    if (inRegion(l.common, offset, width)) return writeCommonCfg(this.#ctx, offset, width, v);
    if (inRegion(l.device, offset, width))
      return writeDeviceConfig(this.device, offset - l.device.offset, width, v);
    if (inRegion(l.notify, offset, width) && width !== 1) return this.#notify(v & 0xffff, "notify");
    this.#log.bad(
      `write of ${width} bytes (${hex(v)}) at modern BAR offset ${hex(offset)} ignored`,
    );
  }

  /** §4.1.4.4: the driver writes the queue's index to its Queue Notify address. */
  #notify(q: number, register: string): void {
    if (q >= this.device.numQueues) {
      this.#log.bad(`${register} for queue ${q}: no such queue (ignored)`);
      return;
    }
    this.device.queueNotify(q);
  }

  #writeStatus(v: number, legacy: boolean): void {
    if (v === 0) {
      this.interrupts.clear();
      this.#ctx.addresses.clear();
    } else if (legacy && !this.device.beginLegacy()) {
      return;
    }
    this.#pending = this.device.writeStatus(v);
  }

  /** A read of the configuration space (a PCI_CFG window data read performs the BAR read first). */
  readConfigSpace(offset: number, width: number): number {
    if (!this.#configAccessOk(offset, width, "read"))
      return isAccessWidth(width) ? allOnes(width) : 0;
    const cfg = this.#config;
    if (cfg.touchesWindowData(offset, width)) {
      const a = cfg.windowAccess();
      if (a !== null) cfg.windowData = this.read(a.bar, a.offset, a.width);
    }
    return cfg.get(offset, width as 1 | 2 | 4);
  }

  /** A write to the configuration space (only its writable registers change). */
  writeConfigSpace(offset: number, width: number, value: number): void {
    if (!this.#configAccessOk(offset, width, "write")) return;
    const cfg = this.#config;
    if (cfg.put(offset, width as 1 | 2 | 4, maskWidth(value, width as 1 | 2 | 4)))
      this.interrupts.setMasked(cfg.intxDisabled);
    if (cfg.touchesWindowData(offset, width)) {
      const a = cfg.windowAccess();
      if (a === null) this.#log.bad(`PCI_CFG window: cap.length is not 1, 2 or 4 (ignored)`);
      else this.write(a.bar, a.offset, a.width, cfg.windowData);
    }
  }

  #configAccessOk(offset: number, width: number, kind: string): boolean {
    const ok =
      isAccessWidth(width) &&
      Number.isSafeInteger(offset) &&
      offset >= 0 &&
      offset + width <= PCI_CONFIG_SPACE_SIZE &&
      offset % width === 0;
    if (!ok)
      this.#log.bad(
        `configuration space ${kind} of ${String(width)} bytes at ${String(offset)} ignored`,
      );
    return ok;
  }
}

/** The BARs of a function with interface `iface`. */
function planBars(
  device: VirtioDevice,
  iface: PciInterface,
  o: PciTransportOptions,
): { bars: PciBar[]; modern: ModernLayout | null } {
  const bars: PciBar[] = [];
  if (iface !== "modern")
    bars.push({
      index: 0,
      size: legacyBarSize(device.configSize),
      kind: "io",
      contents: "legacy",
      ioCapable: true,
    });
  if (iface === "legacy") return { bars, modern: null };
  const kind = o.modernBar ?? "memory";
  const index = iface === "modern" ? 0 : 1;
  const modern = modernLayout(
    index,
    device.numQueues,
    device.configSize,
    o.notifyOffMultiplier ?? 4,
  );
  const size = modernBarSize(modern, kind);
  bars.push({ index, size, kind, contents: "modern", ioCapable: modernFitsIo(modern) });
  return { bars, modern };
}

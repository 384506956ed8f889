/**
 * Fuzz target: the emulated transports' register models
 * (src/transport/pci/pci-transport.ts, src/transport/mmio/mmio-transport.ts)
 * over a small device of the framework, as a hostile guest drives them.
 *
 * Feeds: a header byte choosing the function (virtio-pci modern in memory
 * space, modern in I/O space with notify_off_multiplier 0, transitional,
 * legacy; virtio-mmio version 2 or 1), then a program of up to 400 steps:
 * BAR / window reads and writes at any offset (half of them at a register's
 * offset) with widths 1, 2, 3, 4, 8 and any value; PCI configuration space
 * reads and writes (the PCI_CFG window, the command register); device-side
 * events (used buffer and configuration change notifications, a
 * configuration update); a wait for the last status write to settle.
 *
 * Failure: any exception out of `read`, `write`, `readConfigSpace`,
 * `writeConfigSpace` or the device; a read that is not an integer in
 * 0..2^32 − 1; the interrupt line not asserted exactly while ISR bits are
 * pending and INTx is not disabled; FEATURES_OK set for a modern driver
 * without VIRTIO_F_VERSION_1 negotiated, or VIRTIO_F_VERSION_1 negotiated by
 * a legacy driver; a step that does not terminate (the fuzzer's timeout).
 *
 * @module
 */
import { VIRTIO_F_VERSION_1, featureBit } from "../../src/spec/virtio.ts";
import * as mm from "../../src/spec/virtio-mmio.ts";
import { VirtioPciCommonCfg, VirtioPciLegacy } from "../../src/spec/virtio-pci.ts";
import { VirtioMmioTransport } from "../../src/transport/mmio/mmio-transport.ts";
import { VirtioPciTransport } from "../../src/transport/pci/pci-transport.ts";
import { recordingLine, registerTestDevice } from "../../src/transport/register-test-support.ts";
import { expect } from "../lib/check.ts";
import { FuzzInput } from "../lib/input.ts";

const MAX_STEPS = 400;
const WIDTHS = [1, 2, 4, 3, 8];
const PCI_OFFSETS = [
  ...Object.values(VirtioPciCommonCfg),
  VirtioPciCommonCfg.queue_desc + 4,
  0x40,
  0x44,
  0x48,
  0x4c,
  ...Object.values(VirtioPciLegacy),
  20,
  24,
];
const MMIO_OFFSETS = Object.entries(mm)
  .filter(([k, v]) => k.startsWith("VIRTIO_MMIO_") && typeof v === "number" && v < 0x200)
  .map(([, v]) => v as number);
const VERSION_1 = featureBit(VIRTIO_F_VERSION_1);

/** The register window under test, whichever transport it is. */
interface Window {
  read(bar: number, offset: number, width: number): number;
  write(bar: number, offset: number, width: number, value: number): void;
  config(write: boolean, offset: number, width: number, value: number): number;
  settled(): Promise<void>;
  masked(): boolean;
}

function open(kind: number) {
  const { device } = registerTestDevice(16 << 10);
  const line = recordingLine();
  const log = (): void => {};
  if (kind >= 4) {
    const mmio = new VirtioMmioTransport(device, {
      interrupt: line,
      version: kind === 4 ? 2 : 1,
      log,
    });
    const w: Window = {
      read: (_b, o, wd) => mmio.read(o, wd),
      write: (_b, o, wd, v) => mmio.write(o, wd, v),
      config: () => 0,
      settled: () => mmio.settled(),
      masked: () => false,
    };
    return { device, line, w, isr: () => mmio.interrupts.bits, notifier: mmio.interrupts };
  }
  const iface = (["modern", "modern", "transitional", "legacy"] as const)[kind]!;
  const pci = new VirtioPciTransport(device, {
    interface: iface,
    interrupt: line,
    log,
    ...(kind === 1 ? { modernBar: "io" as const, notifyOffMultiplier: 0 } : {}),
  });
  const w: Window = {
    read: (b, o, wd) => pci.read(b, o, wd),
    write: (b, o, wd, v) => pci.write(b, o, wd, v),
    config: (write, o, wd, v) =>
      write ? (pci.writeConfigSpace(o, wd, v), 0) : pci.readConfigSpace(o, wd),
    settled: () => pci.settled(),
    masked: () => (pci.configSpace[5]! & 0x4) !== 0,
  };
  return { device, line, w, isr: () => pci.interrupts.bits, notifier: pci.interrupts };
}

/** Runs one input. */
export async function fuzz(data: Uint8Array): Promise<void> {
  const input = new FuzzInput(data);
  const kind = input.below(6);
  const t = open(kind);
  const offsets = kind >= 4 ? MMIO_OFFSETS : PCI_OFFSETS;
  for (let step = 0; step < MAX_STEPS && !input.done; step++) {
    const op = input.u8();
    const bar = input.below(4) - (op & 0x80 ? 1 : 0);
    const offset = (op & 0x40) !== 0 ? offsets[input.below(offsets.length)]! : input.u16() % 0x220;
    const width = WIDTHS[input.below(WIDTHS.length)]!;
    switch (op & 7) {
      case 0:
      case 1:
      case 2: {
        const v = t.w.read(bar, offset, width);
        expect(Number.isInteger(v) && v >= 0 && v <= 0xffff_ffff, `read gave ${v}`);
        break;
      }
      case 3:
      case 4:
      case 5:
        t.w.write(bar, offset, width, input.u32());
        break;
      case 6: {
        const v = t.w.config((op & 8) !== 0, input.u8(), width, input.u32());
        expect(Number.isInteger(v) && v >= 0 && v <= 0xffff_ffff, `config read gave ${v}`);
        break;
      }
      default:
        await deviceEvent(t, op >> 3);
    }
    check(t);
  }
  await t.w.settled();
  check(t);
}

async function deviceEvent(t: ReturnType<typeof open>, what: number): Promise<void> {
  switch (what & 3) {
    case 0:
      t.notifier.notifyQueue();
      return;
    case 1:
      t.notifier.notifyConfig();
      return;
    case 2:
      t.device.config.update((dv) => dv.setUint8(what & 7, what));
      return;
    default:
      await t.w.settled();
  }
}

function check(t: ReturnType<typeof open>): void {
  const pending = t.isr() !== 0 && !t.w.masked();
  expect(t.line.up === pending, `line ${t.line.up ? "up" : "down"} with ISR ${t.isr()}`);
  const dev = t.device;
  if (dev.legacy) expect((dev.features & VERSION_1) === 0n, "a legacy driver negotiated VERSION_1");
  else if ((dev.readStatus() & 8) !== 0)
    expect((dev.features & VERSION_1) !== 0n, "FEATURES_OK without VERSION_1");
}

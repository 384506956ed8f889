/**
 * Seed inputs of the emulated-registers target: for each function, a
 * driver's initialization (status steps, features, a queue set up) and a
 * few notifications, in the target's program encoding.
 *
 * @module
 */
import * as mm from "../../src/spec/virtio-mmio.ts";
import { VirtioPciCommonCfg as C, VirtioPciLegacy as L } from "../../src/spec/virtio-pci.ts";

/** One write step at an explicit offset: op 3 (write), bar, offset, width index, value. */
function w(bar: number, offset: number, width: 1 | 2 | 4, value: number): number[] {
  const wi = [1, 2, 4].indexOf(width);
  return [
    3,
    bar,
    offset & 0xff,
    offset >> 8,
    wi,
    value & 0xff,
    (value >> 8) & 0xff,
    (value >> 16) & 0xff,
    value >>> 24,
  ];
}

/** One read step. */
function r(bar: number, offset: number, width: 1 | 2 | 4): number[] {
  return [0, bar, offset & 0xff, offset >> 8, [1, 2, 4].indexOf(width)];
}

const EVENTS = [7, 0, 0, 0, 0, 15, 0, 0, 0, 0, 31, 0, 0, 0, 0];

function modernPci(bar: number): number[] {
  const c = (o: number, wd: 1 | 2 | 4, v: number) => w(bar, o, wd, v);
  return [
    ...c(C.device_status, 1, 1),
    ...c(C.device_status, 1, 3),
    ...c(C.driver_feature_select, 4, 1),
    ...c(C.driver_feature, 4, 1),
    ...c(C.device_status, 1, 11),
    ...c(C.queue_select, 2, 0),
    ...c(C.queue_size, 2, 8),
    ...c(C.queue_desc, 4, 0x1000),
    ...c(C.queue_driver, 4, 0x1100),
    ...c(C.queue_device, 4, 0x2000),
    ...c(C.queue_enable, 2, 1),
    ...c(C.device_status, 1, 15),
    ...EVENTS,
    ...r(bar, 0x40, 1),
    ...c(C.device_status, 1, 0),
  ];
}

function legacyPci(): number[] {
  return [
    ...w(0, L.STATUS, 1, 3),
    ...w(0, L.GUEST_FEATURES, 4, 8),
    ...w(0, L.QUEUE_SEL, 2, 0),
    ...w(0, L.QUEUE_PFN, 4, 1),
    ...w(0, L.STATUS, 1, 7),
    ...w(0, L.QUEUE_NOTIFY, 2, 0),
    ...EVENTS,
    ...r(0, L.ISR, 1),
    ...w(0, L.STATUS, 1, 0),
  ];
}

function mmio(version: 1 | 2): number[] {
  const m = (o: number, v: number) => w(0, o, 4, v);
  const queue =
    version === 2
      ? [
          ...m(mm.VIRTIO_MMIO_QUEUE_NUM, 8),
          ...m(mm.VIRTIO_MMIO_QUEUE_DESC_LOW, 0x1000),
          ...m(mm.VIRTIO_MMIO_QUEUE_AVAIL_LOW, 0x1100),
          ...m(mm.VIRTIO_MMIO_QUEUE_USED_LOW, 0x2000),
          ...m(mm.VIRTIO_MMIO_QUEUE_READY, 1),
        ]
      : [...m(mm.VIRTIO_MMIO_GUEST_PAGE_SIZE, 4096), ...m(mm.VIRTIO_MMIO_QUEUE_PFN, 1)];
  return [
    ...m(mm.VIRTIO_MMIO_STATUS, 3),
    ...m(mm.VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1),
    ...m(mm.VIRTIO_MMIO_DRIVER_FEATURES, version === 2 ? 1 : 0),
    ...(version === 2 ? m(mm.VIRTIO_MMIO_STATUS, 11) : []),
    ...queue,
    ...m(mm.VIRTIO_MMIO_STATUS, version === 2 ? 15 : 7),
    ...EVENTS,
    ...r(0, mm.VIRTIO_MMIO_INTERRUPT_STATUS, 4),
    ...m(mm.VIRTIO_MMIO_INTERRUPT_ACK, 3),
    ...m(mm.VIRTIO_MMIO_STATUS, 0),
  ];
}

export function emulatedRegistersSeeds(): Uint8Array[] {
  return [
    [0, ...modernPci(0)],
    [1, ...modernPci(0)],
    [2, ...modernPci(1)],
    [2, ...legacyPci()],
    [3, ...legacyPci()],
    [4, ...mmio(2)],
    [5, ...mmio(1)],
  ].map((s) => new Uint8Array(s));
}

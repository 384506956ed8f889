/**
 * The device status state machine: what a driver write to the status field
 * does. VIRTIO 1.2 §2.1 (Device Status Field), §2.1.1 (driver requirements),
 * §3.1.1 (driver initialization order), §2.4 (reset).
 *
 * Policy (virtio-ts decision; rust-vmm's virtio-device and Firecracker's MMIO transport use similar transition tables):
 *
 * | write | effect |
 * |---|---|
 * | `0` | reset (§2.4): asynchronous, status reads 0 once it is done |
 * | any value with FAILED while not FAILED | `status | FAILED`, the other written bits are ignored |
 * | anything but `0` while FAILED | ignored (§2.1.1: after FAILED the driver "MUST reset the device before attempting to re-initialize") |
 * | DEVICE_NEEDS_RESET bit | device-owned: ignored in the write, kept in the status |
 * | bits 16 and 32 (undefined) | ignored |
 * | a write that clears ACKNOWLEDGE, DRIVER, FEATURES_OK or DRIVER_OK | ignored (§2.1.1 "The driver MUST NOT clear a device status bit") |
 * | a result that is not a prefix of ACKNOWLEDGE → DRIVER → FEATURES_OK → DRIVER_OK (a skipped step, e.g. DRIVER_OK without FEATURES_OK) | ignored (§3.1.1 order; a modern driver needs FEATURES_OK; a legacy one: below) |
 * | several steps at once (e.g. ACKNOWLEDGE \| DRIVER) | accepted, each step's check applies |
 * | adding FEATURES_OK | accepted only if the written features are acceptable; otherwise the write is applied without FEATURES_OK and without DRIVER_OK (§2.2.2) |
 * | adding DRIVER_OK | activates the device; an activation failure makes the device broken (DEVICE_NEEDS_RESET) |
 * | the same value again | no-op |
 *
 * Legacy interface (a transitional device driven through a legacy register
 * block, §4.1.4.10 / §4.2.4): there is no FEATURES_OK step, so the order is
 * ACKNOWLEDGE → DRIVER → DRIVER_OK, and a write with FEATURES_OK is ignored
 * (the bit does not exist for a legacy driver).
 *
 * An ignored write leaves the status unchanged and is logged once; it never
 * throws (the driver is untrusted).
 *
 * @module
 */
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FAILED,
  VIRTIO_CONFIG_S_FEATURES_OK,
} from "../spec/virtio.ts";

/** The four initialization steps, in §3.1.1 order. */
const STEPS =
  VIRTIO_CONFIG_S_ACKNOWLEDGE |
  VIRTIO_CONFIG_S_DRIVER |
  VIRTIO_CONFIG_S_FEATURES_OK |
  VIRTIO_CONFIG_S_DRIVER_OK;

/** Valid cumulative step sets of a legacy driver: no FEATURES_OK step. */
const LEGACY_PREFIXES: readonly number[] = [
  0,
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_DRIVER_OK,
];

/** Valid cumulative step sets: each is a prefix of the §3.1.1 order. */
const PREFIXES: readonly number[] = [
  0,
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK,
  STEPS,
];

/** What a status write should do; {@link planStatusWrite} computes it. */
export type StatusPlan =
  | { readonly kind: "reset" }
  | { readonly kind: "fail"; readonly status: number }
  | { readonly kind: "ignore"; readonly reason: string }
  | {
      readonly kind: "advance";
      /** The step bits after the write (DEVICE_NEEDS_RESET not included). */
      readonly steps: number;
      /** FEATURES_OK is being added: validate the features first. */
      readonly addsFeaturesOk: boolean;
      /** DRIVER_OK is being added: activate the device. */
      readonly addsDriverOk: boolean;
    };

/**
 * Decides what writing `written` to a status currently `current` does (pure;
 * see the policy table in this module's header). Only the low 8 bits of
 * `written` count; `legacy` selects the legacy driver's order.
 */
export function planStatusWrite(current: number, written: number, legacy = false): StatusPlan {
  const w = (written >>> 0) & 0xff;
  if (w === 0) return { kind: "reset" };
  if ((current & VIRTIO_CONFIG_S_FAILED) !== 0)
    return { kind: "ignore", reason: "status is FAILED: only a reset (0) is accepted" };
  if ((w & VIRTIO_CONFIG_S_FAILED) !== 0)
    return { kind: "fail", status: current | VIRTIO_CONFIG_S_FAILED };
  const cur = current & STEPS;
  const next = w & STEPS;
  // §2.1.1 "The driver MUST NOT clear a device status bit."
  if ((next & cur) !== cur)
    return { kind: "ignore", reason: `write 0x${hex(w)} clears bits of 0x${hex(cur)}` };
  if (legacy && (next & VIRTIO_CONFIG_S_FEATURES_OK) !== 0)
    return { kind: "ignore", reason: `write 0x${hex(w)}: no FEATURES_OK for a legacy driver` };
  if (!(legacy ? LEGACY_PREFIXES : PREFIXES).includes(next))
    return { kind: "ignore", reason: `write 0x${hex(w)} skips an initialization step (§3.1.1)` };
  const added = next & ~cur;
  return {
    kind: "advance",
    steps: next,
    addsFeaturesOk: (added & VIRTIO_CONFIG_S_FEATURES_OK) !== 0,
    addsDriverOk: (added & VIRTIO_CONFIG_S_DRIVER_OK) !== 0,
  };
}

/** True if every step bit in `bits` is set in `status`. */
export function hasStatus(status: number, bits: number): boolean {
  return (status & bits) === bits;
}

function hex(v: number): string {
  return v.toString(16).padStart(2, "0");
}

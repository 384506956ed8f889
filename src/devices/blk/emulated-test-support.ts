/**
 * Test support: the project's virtio-blk device behind an emulated
 * transport's register model (virtio-mmio, virtio-pci), driven by a
 * register-level driver model ({@link RegisterDriver}) and the project's
 * {@link BlkDriver}, all in one thread over one guest memory. The driver
 * model performs VIRTIO 1.2 §3.1.1 through register accesses; the
 * interrupt line calls the driver's handler (ISR read, then `processUsed`).
 * Legacy interfaces (§4.1.4.10, §4.2.4) get their ring in the §2.7.2
 * layout and the features without VIRTIO_F_VERSION_1 (§5.2.3).
 *
 * @module
 */
import { VirtioDevice } from "../../device/virtio-device.ts";
import { silentLogger } from "../../log.ts";
import { GuestMemory } from "../../memory/guest-memory.ts";
import type { DriverRing } from "../../ring/driver-ring.ts";
import { openDriverRing } from "../../ring/open-driver-ring.ts";
import { ringLayoutOf, type RingAddresses, type RingLayoutKind } from "../../ring/ring-layout.ts";
import { VIRTIO_BLK_CONFIG_SIZE } from "../../spec/blk.ts";
import {
  VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_F_VERSION_1,
  featureBit,
} from "../../spec/virtio.ts";
import { legacyRingParts } from "../../spec/virtqueue.ts";
import { pollUntil, type RegisterDriver } from "../../testing/register-driver.ts";
import type { InterruptLine } from "../../transport/interrupt.ts";
import { MemoryBacking } from "./backing.ts";
import { BlkDevice } from "./device.ts";
import { BlkDriver } from "./driver.ts";
import { parseBlkConfig, selectBlkFeatures } from "./driver-config.ts";
import { planBlkDriverMemory, type BlkDriverMemoryPlan } from "./driver-memory.ts";
import { ControlledBacking } from "./driver-test-support.ts";

export const QUEUE_SIZE = 64;
/** Packed rings' size: not a power of two, below the device's maximum. */
const PACKED_SIZE = 60;
const LEGACY_RING_BASE = 0x1000;

/** A blk device, its framework device, guest memory and an interrupt line that calls the handler. */
export interface EmulatedBlk {
  readonly memory: GuestMemory;
  readonly backing: ControlledBacking;
  readonly blk: BlkDevice;
  readonly device: VirtioDevice;
  readonly plan: BlkDriverMemoryPlan;
  /** Log lines of the device and the transport. */
  readonly logs: string[];
  /** The line's state and counts. */
  readonly line: InterruptLine & { up: boolean; raises: number };
  /** The rings modern drivers set up: split, or packed (§2.8, a size that is not a power of two). */
  readonly layout: RingLayoutKind;
  /** What the line calls (set by {@link bringUp}). */
  onInterrupt: () => void;
}

/** Builds the device side; the test wraps `device` in a transport with `line`. */
export function emulatedBlk(diskBytes = 2 << 20, layout: RingLayoutKind = "split"): EmulatedBlk {
  const plan = planBlkDriverMemory({
    base: 0x10000,
    numQueues: 1,
    queueSize: layout === "packed" ? PACKED_SIZE : QUEUE_SIZE,
    layout,
    bounceBytes: 256 << 10,
  });
  const memory = GuestMemory.createShared([{ guestPhysAddr: 0, size: plan.end + (1 << 20) }]);
  const backing = new ControlledBacking(new MemoryBacking(diskBytes));
  const blk = new BlkDevice({
    backing,
    serial: "emulated",
    queueSize: QUEUE_SIZE,
    logger: silentLogger,
  });
  const logs: string[] = [];
  const device = new VirtioDevice(blk, { memory, log: (l) => logs.push(l) });
  const rig: EmulatedBlk = {
    memory,
    backing,
    blk,
    device,
    plan,
    logs,
    layout,
    onInterrupt: () => {},
    line: {
      up: false,
      raises: 0,
      raise() {
        this.up = true;
        this.raises++;
        queueMicrotask(() => rig.onInterrupt());
      },
      lower() {
        this.up = false;
      },
    },
  };
  return rig;
}

/** A live session: the BlkDriver and its ring. */
export interface BlkSession {
  readonly driver: BlkDriver;
  readonly ring: DriverRing<number>;
  readonly features: bigint;
}

/**
 * §3.1.1 through `drv` (reset first), then a BlkDriver over one queue.
 * Split rings, or packed ones for a modern driver when the rig says so
 * (legacy interfaces have split rings only).
 */
export async function bringUp(rig: EmulatedBlk, drv: RegisterDriver): Promise<BlkSession> {
  await drv.reset();
  drv.acknowledge();
  const offered = drv.deviceFeatures();
  const version1 = featureBit(VIRTIO_F_VERSION_1);
  const features = drv.legacy
    ? selectBlkFeatures(offered | version1, { exclude: ["RING_PACKED"] }) & ~version1
    : selectBlkFeatures(offered, { exclude: rig.layout === "packed" ? [] : ["RING_PACKED"] });
  if (!drv.negotiate(features)) throw new Error("FEATURES_OK refused");
  if (!drv.legacy && ringLayoutOf(features) !== rig.layout)
    throw new Error(`negotiated ${ringLayoutOf(features)} rings, wanted ${rig.layout}`);
  const config = parseBlkConfig(drv.readConfig(0, VIRTIO_BLK_CONFIG_SIZE), features);
  const ring = ringFor(rig, drv);
  const dq = openDriverRing<number>(rig.memory, features, ring, {
    indirectArena: rig.plan.indirectArenas[0]!,
  });
  drv.setupQueue(0, ring);
  drv.driverOk();
  await pollUntil(() => (drv.status() & VIRTIO_CONFIG_S_DRIVER_OK) !== 0, 5000, "DRIVER_OK");
  const driver = new BlkDriver({
    memory: rig.memory,
    queues: [dq],
    config,
    arena: rig.plan.arena,
    indirectEntries: rig.plan.indirectEntries,
    transport: { notify: (i) => drv.kick(i) },
  });
  rig.onInterrupt = () => {
    const bits = drv.interrupt();
    if ((bits & 1) !== 0) driver.processUsed(0);
    if ((bits & 2) !== 0 && (drv.status() & VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET) !== 0)
      driver.markDeviceBroken();
  };
  return { driver, ring: dq, features };
}

function ringFor(rig: EmulatedBlk, drv: RegisterDriver): RingAddresses {
  if (!drv.legacy) return rig.plan.rings[0]!;
  const size = drv.queueMaxSize(0);
  return { size, ...legacyRingParts(LEGACY_RING_BASE, size, drv.legacyAlign) };
}

/** Resolves with `p`, or rejects after `ms` (a test never hangs). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Deterministic bytes. */
export function pattern(len: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: len }, (_, i) => (i * 31 + seed * 7 + (i >> 9)) & 0xff);
}

/** What {@link runScenario} observed, for the test's assertions. */
export interface ScenarioResult {
  /** Outcomes of the requests in flight at the reset: "ok" or an error code. */
  readonly inFlightOutcomes: string[];
  /** Data read back in the second session. */
  readonly readBack: Uint8Array;
  /** Disk bytes at the end. */
  readonly disk: Uint8Array;
}

/**
 * The end-to-end scenario: bring up, write / read / flush with data
 * checked, a reset (status 0) with requests in flight, re-initialization
 * and more I/O. Throws on a data mismatch.
 */
export async function runScenario(rig: EmulatedBlk, drv: RegisterDriver): Promise<ScenarioResult> {
  const s1 = await bringUp(rig, drv);
  const data = pattern(64 << 10, 1);
  await within(s1.driver.write(0, data), 5000, "write");
  const back = new Uint8Array(data.length);
  await within(s1.driver.read(0, back), 5000, "read");
  if (!back.every((b, i) => b === data[i])) throw new Error("read back differs from written");
  await within(s1.driver.flush(), 5000, "flush");
  // Reset with I/O in flight: the backing store holds every request until released.
  rig.backing.hold = true;
  const outcomes: string[] = [];
  const ps = Array.from({ length: 24 }, (_, i) =>
    s1.driver.write((1 << 20) + i * 4096, pattern(4096, 100 + i)).then(
      () => outcomes.push("ok"),
      (e: unknown) => outcomes.push((e as { code?: string }).code ?? String(e)),
    ),
  );
  await pollUntil(() => rig.backing.heldCount > 0, 5000, "requests reach the backing store");
  const reset = drv.reset();
  // The device completes what it holds before the reset is done: status is not 0 yet.
  if (drv.status() === 0) throw new Error("the reset finished with requests in flight");
  setTimeout(() => rig.backing.release(), 5);
  await within(reset, 10_000, "reset with I/O in flight");
  s1.driver.reset();
  await within(Promise.all(ps), 10_000, "in-flight requests settle");
  // Re-initialization and more I/O.
  const s2 = await bringUp(rig, drv);
  const more = pattern(32 << 10, 2);
  await within(s2.driver.write(8192, more), 5000, "write after reset");
  const readBack = new Uint8Array(more.length);
  await within(s2.driver.read(8192, readBack), 5000, "read after reset");
  await within(s2.driver.flush(), 5000, "flush after reset");
  const disk = new Uint8Array(rig.backing.size);
  await rig.backing.readv(0, [disk]);
  return { inFlightOutcomes: outcomes, readBack, disk };
}

/** True if `a` and `b` hold the same bytes. */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

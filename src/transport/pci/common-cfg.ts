/**
 * The modern `struct virtio_pci_common_cfg` as registers. VIRTIO 1.2
 * §4.1.4.3 (layout, device and driver requirements), §4.1.3 ("the driver
 * MUST use 8-bit wide accesses for 8-bit wide fields, 16-bit wide and
 * aligned accesses for 16-bit wide fields and 32-bit wide and aligned
 * accesses for 32-bit and 64-bit wide fields"; a 64-bit field is two
 * 32-bit halves the device MUST allow to be accessed independently),
 * §4.1.5.1 (no MSI-X: vectors read VIRTIO_MSI_NO_VECTOR).
 *
 * An access of another width or at an offset inside a field reads 0 / is
 * ignored and logged. Read-only fields ignore writes ("The driver MUST NOT
 * write to device_feature, num_queues, config_generation,
 * queue_notify_off or queue_notify_data"). queue_select of a queue that
 * does not exist reads queue_size 0 ("The device MUST present a 0 in
 * queue_size if the virtqueue corresponding to the current queue_select is
 * unavailable"). queue_enable 0 is ignored ("The driver MUST NOT write a 0
 * to queue_enable"); the queue's size and addresses are not written while it
 * is enabled. queue_reset reads 0: VIRTIO_F_RING_RESET is not offered.
 *
 * @module
 */
import { VIRTIO_MSI_NO_VECTOR, VirtioPciCommonCfg as C } from "../../spec/virtio-pci.ts";
import { hex } from "../register-log.ts";
import type { QueuePart } from "../register-device.ts";
import type { PciContext } from "./context.ts";

interface Field {
  readonly name: string;
  readonly width: 1 | 2 | 4;
  /** A 32-bit half of a 64-bit queue address. */
  readonly part?: QueuePart;
  readonly high?: boolean;
}

const FIELDS: ReadonlyMap<number, Field> = new Map<number, Field>([
  [C.device_feature_select, { name: "device_feature_select", width: 4 }],
  [C.device_feature, { name: "device_feature", width: 4 }],
  [C.driver_feature_select, { name: "driver_feature_select", width: 4 }],
  [C.driver_feature, { name: "driver_feature", width: 4 }],
  [C.config_msix_vector, { name: "config_msix_vector", width: 2 }],
  [C.num_queues, { name: "num_queues", width: 2 }],
  [C.device_status, { name: "device_status", width: 1 }],
  [C.config_generation, { name: "config_generation", width: 1 }],
  [C.queue_select, { name: "queue_select", width: 2 }],
  [C.queue_size, { name: "queue_size", width: 2 }],
  [C.queue_msix_vector, { name: "queue_msix_vector", width: 2 }],
  [C.queue_enable, { name: "queue_enable", width: 2 }],
  [C.queue_notify_off, { name: "queue_notify_off", width: 2 }],
  [C.queue_desc, { name: "queue_desc (low)", width: 4, part: "desc", high: false }],
  [C.queue_desc + 4, { name: "queue_desc (high)", width: 4, part: "desc", high: true }],
  [C.queue_driver, { name: "queue_driver (low)", width: 4, part: "driver", high: false }],
  [C.queue_driver + 4, { name: "queue_driver (high)", width: 4, part: "driver", high: true }],
  [C.queue_device, { name: "queue_device (low)", width: 4, part: "device", high: false }],
  [C.queue_device + 4, { name: "queue_device (high)", width: 4, part: "device", high: true }],
  [C.queue_notify_data, { name: "queue_notify_data", width: 2 }],
  [C.queue_reset, { name: "queue_reset", width: 2 }],
]);

/** The field at `offset` if `width` is its natural width; logs and returns null otherwise. */
function field(ctx: PciContext, offset: number, width: number, kind: string): Field | null {
  const f = FIELDS.get(offset);
  if (f !== undefined && f.width === width) return f;
  const what = f === undefined ? `offset ${hex(offset)} (no field starts there)` : f.name;
  ctx.log.bad(`common cfg ${kind} of ${width} bytes at ${what}: ignored`);
  return null;
}

/** A driver read of the common configuration. */
export function readCommonCfg(ctx: PciContext, offset: number, width: number): number {
  const f = field(ctx, offset, width, "read");
  if (f === null) return 0;
  const dev = ctx.device;
  const q = ctx.sel.queue;
  if (f.part !== undefined) return ctx.addresses.read(q, f.part, f.high === true);
  switch (offset) {
    case C.device_feature_select:
      return ctx.sel.deviceFeature;
    case C.device_feature:
      return dev.readDeviceFeaturesWord(ctx.sel.deviceFeature);
    case C.driver_feature_select:
      return ctx.sel.driverFeature;
    case C.driver_feature:
      return driverFeatureWord(dev.readDriverFeatures(), ctx.sel.driverFeature);
    case C.num_queues:
      return dev.numQueues;
    case C.device_status:
      return dev.readStatus();
    case C.config_generation:
      return dev.configGeneration & 0xff;
    case C.queue_select:
      return q;
    case C.queue_size:
      return dev.queueSize(q);
    case C.queue_enable:
      return dev.queueReady(q) ? 1 : 0;
    case C.queue_notify_off:
    case C.queue_notify_data:
      return q < dev.numQueues ? q : 0;
    case C.queue_reset:
      return 0;
    default:
      return VIRTIO_MSI_NO_VECTOR; // config_msix_vector, queue_msix_vector: no MSI-X
  }
}

function driverFeatureWord(features: bigint, select: number): number {
  if (select !== 0 && select !== 1) return 0;
  return Number((features >> BigInt(32 * select)) & 0xffff_ffffn);
}

/** A driver write to the common configuration. */
export function writeCommonCfg(ctx: PciContext, offset: number, width: number, v: number): void {
  const f = field(ctx, offset, width, "write");
  if (f === null) return;
  const q = ctx.sel.queue;
  if (f.part !== undefined) return writeAddress(ctx, f, v);
  switch (offset) {
    case C.device_feature_select:
      ctx.sel.deviceFeature = v;
      return;
    case C.driver_feature_select:
      ctx.sel.driverFeature = v;
      return;
    case C.driver_feature:
      if (ctx.sel.driverFeature > 1) {
        if (v !== 0)
          ctx.log.bad(`driver_feature ${hex(v)} for word ${ctx.sel.driverFeature} ignored`);
      } else ctx.device.writeDriverFeaturesWord(ctx.sel.driverFeature, v);
      return;
    case C.device_status:
      return ctx.writeStatus(v, false);
    case C.queue_select:
      ctx.sel.queue = v;
      return;
    case C.queue_size:
      if (ctx.device.queueReady(q)) ctx.log.bad(`queue_size ignored: queue ${q} is enabled`);
      else ctx.device.setQueueSize(q, v);
      return;
    case C.queue_enable:
      return writeEnable(ctx, q, v);
    default:
      ctx.log.bad(`${f.name} write of ${hex(v)} ignored (${readOnlyReason(offset)})`);
  }
}

function readOnlyReason(offset: number): string {
  if (offset === C.config_msix_vector || offset === C.queue_msix_vector) return "no MSI-X";
  if (offset === C.queue_reset) return "VIRTIO_F_RING_RESET is not offered";
  return "read-only for the driver";
}

function writeEnable(ctx: PciContext, q: number, v: number): void {
  // §4.1.4.3.2: "The driver MUST NOT write a 0 to queue_enable."
  if (v !== 1) ctx.log.bad(`queue_enable ${hex(v)} ignored (only 1 enables a queue)`);
  else ctx.addresses.enable(ctx.device, q);
}

function writeAddress(ctx: PciContext, f: Field, v: number): void {
  const q = ctx.sel.queue;
  // §4.1.4.3.2: "The driver MUST configure the other virtqueue fields before enabling the virtqueue".
  if (ctx.device.queueReady(q)) ctx.log.bad(`${f.name} ignored: queue ${q} is enabled`);
  else if (!ctx.addresses.write(q, f.part!, f.high === true, v))
    ctx.log.bad(`${f.name} ignored: no queue ${q}`);
}

/**
 * How a {@link VhostUserBlk} is set up: its connect options checked, the
 * front-end connected with the driver's feature selection (VERSION_1
 * required) and the 60-byte `struct virtio_blk_config` read, the number of
 * request queues, where rings, indirect tables, request slots and the bounce
 * pool go in the shared region, and the driver over them. VIRTIO 1.2 §3.1.1
 * (driver initialization: features, then config, then queues — so the ring
 * layout is known before any ring is placed), §5.2.4 (`num_queues`), §2.7 /
 * §2.8 (split or packed rings: packed when the back-end offers
 * VIRTIO_F_RING_PACKED; the size of a split ring is a power of two);
 * qemu/qemu docs/interop/vhost-user.rst "Communication" (GET_QUEUE_NUM);
 * docs/vhost-user.md.
 *
 * With `reconnectMs` the disk keeps split rings: re-attaching to a restarted
 * back-end resumes each ring from its used index in memory and the back-end's
 * inflight log, and packed rings have neither here (a packed ring keeps its
 * positions nowhere in guest memory).
 *
 * Node-only.
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../../errors.ts";
import type { DriverRing } from "../../ring/driver-ring.ts";
import { openDriverRing } from "../../ring/open-driver-ring.ts";
import { ringLayoutOf, ringSizeProblem } from "../../ring/ring-layout.ts";
import { VIRTIO_BLK_CONFIG_SIZE } from "../../spec/blk.ts";
import { VIRTIO_F_VERSION_1, VIRTIO_RING_F_INDIRECT_DESC, hasFeature } from "../../spec/virtio.ts";
import type { BlkFeatureName } from "./config.ts";
import { BlkDriver } from "./driver.ts";
import { selectBlkFeatures, type BlkDriverConfig } from "./driver-config.ts";
import { planBlkDriverMemory, type BlkDriverMemoryPlan } from "./driver-memory.ts";
import { VhostUserFrontend } from "../../vhost-user/frontend.ts";
import { FRONTEND_MEMORY_BASE, type SharedGuestMemory } from "../../vhost-user/frontend-memory.ts";

/** Options of {@link VhostUserBlk.connect}. */
export interface VhostUserBlkConnectOptions {
  /**
   * Request queues to use. Default: every queue both the device
   * (`num_queues`) and the back-end (GET_QUEUE_NUM) have. Asking for more
   * than that fails with `VIRTIO_ERR_VHOST_USER_INCOMPATIBLE`.
   */
  readonly numQueues?: number;
  /**
   * Entries per queue, 4..32768 (default 256). Any size with packed rings;
   * with split rings (a back-end without VIRTIO_F_RING_PACKED, or
   * `exclude: ["RING_PACKED"]`) a power of two, else the connection fails
   * with `VIRTIO_ERR_VHOST_USER_INCOMPATIBLE`.
   */
  readonly queueSize?: number;
  /** Descriptors per indirect table (default min(queueSize, 128); 0 = no indirect descriptors). */
  readonly indirectEntries?: number;
  /** Bounce pool bytes shared by all queues for the copy path (default 4 MiB). */
  readonly bounceBytes?: number;
  /** Most data bytes per request (default 1 MiB, capped by the device's limits). */
  readonly maxRequestBytes?: number;
  /** Extra guest memory for zero-copy buffers handed out by {@link VhostUserBlk.allocBuffer} (default 0). */
  readonly bufferBytes?: number;
  /**
   * Features not to accept even if offered (e.g. `["RING_EVENT_IDX"]`;
   * `["RING_PACKED"]` keeps split rings with a back-end that offers packed ones).
   */
  readonly exclude?: readonly BlkFeatureName[];
  /** Milliseconds to wait for each control reply (default 30 000; 0 = forever). */
  readonly replyTimeoutMs?: number;
  /**
   * When the connection drops, keep trying to reach a restarted back-end at
   * the same path for this many milliseconds, then re-attach the disk:
   * requests in flight are resubmitted by the new back-end from the
   * inflight buffer (INFLIGHT_SHMFD), none lost or repeated, and the
   * caller's pending operations simply complete. Default 0: a dropped
   * connection fails what is pending. Set, it keeps split rings (RING_PACKED
   * is not accepted: see the module header).
   */
  readonly reconnectMs?: number;
}

const DEFAULT_QUEUE_SIZE = 256;
const DEFAULT_BOUNCE_BYTES = 4 << 20;

function incompatible(message: string, details: Record<string, number> = {}): VirtioError {
  return new VirtioError(ErrorCode.VHOST_USER_INCOMPATIBLE, message, details);
}

/** The checked queue size, buffer bytes and reconnect time of `options`. */
export function checkSizes(options: VhostUserBlkConnectOptions): {
  queueSize: number;
  bufferBytes: number;
  reconnectMs: number;
} {
  const queueSize = options.queueSize ?? DEFAULT_QUEUE_SIZE;
  if (!Number.isInteger(queueSize) || queueSize < 4 || queueSize > 32768)
    throw new RangeError(`queueSize ${queueSize} must be an integer in 4..32768`);
  const bufferBytes = options.bufferBytes ?? 0;
  if (!Number.isSafeInteger(bufferBytes) || bufferBytes < 0)
    throw new RangeError(`bufferBytes ${bufferBytes} must be a non-negative integer`);
  const reconnectMs = options.reconnectMs ?? 0;
  if (!Number.isSafeInteger(reconnectMs) || reconnectMs < 0)
    throw new RangeError(`reconnectMs ${reconnectMs} must be a non-negative integer`);
  return { queueSize, bufferBytes, reconnectMs };
}

/**
 * Connects and negotiates with the driver's feature selection (split rings
 * only with `reconnectMs`); reads `struct virtio_blk_config`.
 */
export function connectFrontend(
  path: string,
  options: VhostUserBlkConnectOptions,
): Promise<VhostUserFrontend> {
  const exclude: BlkFeatureName[] = [...(options.exclude ?? [])];
  if ((options.reconnectMs ?? 0) > 0) exclude.push("RING_PACKED");
  return VhostUserFrontend.connect(path, {
    features: (offered) => {
      // §3.1.1: the driver picks a subset of the offered features; this driver is modern only.
      if (!hasFeature(offered, VIRTIO_F_VERSION_1))
        throw incompatible("the back-end does not offer VIRTIO_F_VERSION_1");
      return selectBlkFeatures(offered, { exclude });
    },
    configSize: VIRTIO_BLK_CONFIG_SIZE,
    ...(options.replyTimeoutMs === undefined ? {} : { replyTimeoutMs: options.replyTimeoutMs }),
  });
}

/** Request queues to use: `options.numQueues`, by default every queue both the device and the back-end have. */
export function queueCount(
  options: VhostUserBlkConnectOptions,
  deviceQueues: number,
  backendQueues: number,
): number {
  const available = Math.min(deviceQueues, backendQueues);
  const numQueues = options.numQueues ?? available;
  if (!Number.isInteger(numQueues) || numQueues < 1)
    throw new RangeError(`numQueues ${numQueues} must be a positive integer`);
  if (numQueues > available)
    throw incompatible(`${numQueues} queues asked for, the device has ${available}`, {
      numQueues,
      available,
    });
  return numQueues;
}

/**
 * Where rings (in the negotiated layout), indirect tables, request slots and
 * the bounce pool go, from the shared memory's base.
 *
 * @throws {VirtioError} `VHOST_USER_INCOMPATIBLE` for a queue size the
 *   negotiated layout does not allow (not a power of two, split rings).
 */
export function planMemory(
  features: bigint,
  numQueues: number,
  queueSize: number,
  options: VhostUserBlkConnectOptions,
): BlkDriverMemoryPlan {
  const problem = ringSizeProblem(queueSize, features);
  if (problem !== null)
    throw incompatible(`${problem} (split rings: VIRTIO_F_RING_PACKED was not negotiated)`, {
      queueSize,
    });
  const indirect = hasFeature(features, VIRTIO_RING_F_INDIRECT_DESC);
  return planBlkDriverMemory({
    base: FRONTEND_MEMORY_BASE,
    numQueues,
    queueSize,
    layout: ringLayoutOf(features),
    indirectEntries: indirect ? (options.indirectEntries ?? Math.min(queueSize, 128)) : 0,
    bounceBytes: options.bounceBytes ?? DEFAULT_BOUNCE_BYTES,
  });
}

/** The driver over the planned memory; `notify` kicks ring `i`. */
export function newDriver(
  memory: SharedGuestMemory,
  plan: BlkDriverMemoryPlan,
  config: BlkDriverConfig,
  options: VhostUserBlkConnectOptions,
  notify: (i: number) => void,
): BlkDriver {
  return new BlkDriver({
    memory: memory.memory,
    queues: driverQueues(memory, plan, config.features),
    config,
    arena: plan.arena,
    indirectEntries: plan.indirectEntries,
    transport: { notify },
    ...(options.maxRequestBytes === undefined ? {} : { maxRequestBytes: options.maxRequestBytes }),
  });
}

/** One ring per planned ring, in the negotiated layout (each initialises its ring in the shared memory). */
function driverQueues(
  memory: SharedGuestMemory,
  plan: BlkDriverMemoryPlan,
  features: bigint,
): DriverRing<number>[] {
  return plan.rings.map((ring, i) =>
    openDriverRing<number>(
      memory.memory,
      features,
      ring,
      plan.indirectEntries > 0 ? { indirectArena: plan.indirectArenas[i]! } : {},
    ),
  );
}

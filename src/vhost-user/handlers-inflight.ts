/**
 * The inflight I/O tracking requests: GET_INFLIGHT_FD hands the front-end a
 * fresh shared buffer in the layout of the negotiated rings (one
 * QueueRegionSplit per queue, or one QueueRegionPacked when
 * VIRTIO_F_RING_PACKED was negotiated: the front-end sends SET_FEATURES
 * first), SET_INFLIGHT_FD gives one back (after a reconnect, the one the
 * crashed back-end was using), which the rings then keep their inflight
 * logs in (../ring/inflight-split.ts, ../ring/inflight-packed.ts).
 * qemu/qemu docs/interop/vhost-user.rst VHOST_USER_GET_INFLIGHT_FD,
 * VHOST_USER_SET_INFLIGHT_FD, "Inflight I/O tracking" ("the back-end need
 * to allocate an extra buffer to store this information of inflight
 * descriptors and share it with front-end for persistent").
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../errors.ts";
import { isPackedRing } from "../ring/ring-layout.ts";
import { inflightRegionSize, VhostUserProtocolFeature as PF } from "../spec/vhost-user.ts";
import { hasFeature } from "../spec/virtio.ts";
import { decodeInflight, encodeInflight, type InflightDescription } from "./codec.ts";
import { takeFd } from "./framing.ts";
import type { Handler } from "./handlers.ts";
import type { VhostUserSession } from "./session.ts";

function protocolError(
  message: string,
  details: Record<string, number | bigint> = {},
): VirtioError {
  return new VirtioError(ErrorCode.VHOST_USER_PROTOCOL, message, details);
}

/**
 * Checks the queue count and size of an inflight description; returns the
 * bytes it needs in the layout of the negotiated rings.
 */
function neededBytes(s: VhostUserSession, d: InflightDescription): number {
  if (!hasFeature(s.protocolFeatures, PF.INFLIGHT_SHMFD))
    throw protocolError("inflight request without VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD negotiated");
  const { numQueues, queueSize } = d;
  if (numQueues < 1 || numQueues > s.rings.length)
    throw protocolError(`inflight num_queues ${numQueues} is not in 1..${s.rings.length}`, {
      numQueues,
    });
  if (queueSize < 1 || queueSize > 32768)
    throw protocolError(`inflight queue_size ${queueSize} is not in 1..32768`, { queueSize });
  return numQueues * inflightRegionSize(queueSize, isPackedRing(s.features));
}

/** "Get shared buffer for inflight I/O": a zeroed buffer, sealed so it keeps its size. */
export const getInflightFd: Handler = (s, msg) => {
  const d = decodeInflight(msg.payload);
  const size = neededBytes(s, d);
  const fd = s.allocateInflight(size);
  const reply = {
    mmapSize: BigInt(size),
    mmapOffset: 0n,
    numQueues: d.numQueues,
    queueSize: d.queueSize,
  };
  return { payload: encodeInflight(reply), fds: [fd] };
};

/**
 * "Set shared buffer for inflight I/O": the rings stop, the buffer is
 * mapped (a buffer smaller than the description, or one that can shrink, is
 * refused), and they restart over it (a restart after a crash resubmits
 * what the log holds).
 */
export const setInflightFd: Handler = async (s, msg) => {
  const d = decodeInflight(msg.payload);
  const needed = neededBytes(s, d);
  if (d.mmapSize < BigInt(needed) || d.mmapSize + d.mmapOffset > 2n ** 53n)
    throw protocolError(`inflight mmap_size ${d.mmapSize} is not ${needed}..2^53 - offset`, {
      mmapSize: d.mmapSize,
      needed,
    });
  const fd = takeFd(msg);
  await s.stopAll();
  await s.setInflight({
    fd,
    size: Number(d.mmapSize),
    offset: Number(d.mmapOffset),
    numQueues: d.numQueues,
    queueSize: d.queueSize,
  });
  await s.reconcileAll();
};

/**
 * Attaching a {@link VhostUserBlk}'s memory and rings to a vhost-user
 * back-end — the first one, or one restarted after the first went away —
 * with the inflight buffer that lets the new back-end resubmit exactly what
 * the old one left unfinished. qemu/qemu docs/interop/vhost-user.rst
 * "Inflight I/O tracking" (the front-end gets the buffer with
 * GET_INFLIGHT_FD, keeps it, and hands it to the back-end with
 * SET_INFLIGHT_FD before the rings start), "Starting and stopping rings";
 * VIRTIO 1.2 §2.7.8 (the used ring, whose idx a resumed split ring starts
 * from), §2.8 (a packed ring starts fresh: its positions are nowhere in
 * guest memory, so a disk that may re-attach keeps split rings).
 *
 * Node-only.
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../../errors.ts";
import { close } from "../../native/index.ts";
import { VhostUserProtocolFeature as PF } from "../../spec/vhost-user.ts";
import type { RingLayout } from "../../ring/ring-layout.ts";
import { VIRTQ_USED_OFF_IDX } from "../../spec/virtqueue.ts";
import type {
  FrontendRing,
  InflightDescription,
  VhostUserFrontend,
} from "../../vhost-user/frontend.ts";
import type { SharedGuestMemory } from "../../vhost-user/frontend-memory.ts";

/** The inflight buffer a front-end keeps across back-ends. */
export interface KeptInflight {
  readonly description: InflightDescription;
  readonly fd: number;
}

/** One back-end's hold on the disk: its connection and the rings started on it. */
export interface BlkAttachment {
  readonly frontend: VhostUserFrontend;
  readonly rings: readonly FrontendRing[];
}

/**
 * Asks a back-end that offers INFLIGHT_SHMFD for its buffer (null
 * otherwise). The caller owns the fd and closes it with the disk.
 */
export async function getInflight(
  frontend: VhostUserFrontend,
  numQueues: number,
  queueSize: number,
): Promise<KeptInflight | null> {
  if (!frontend.hasProtocolFeature(PF.INFLIGHT_SHMFD)) return null;
  return frontend.getInflight(numQueues, queueSize);
}

/**
 * Hands the inflight buffer (if any) and the memory to `frontend`, then
 * starts every ring. `resume`: the rings were running on an earlier
 * back-end, so each (split) ring starts from the used ring's idx in memory
 * (what QEMU sends when GET_VRING_BASE failed; the back-end's log says the
 * rest). Without `resume` a ring starts fresh (the front-end sends the
 * layout's fresh base).
 *
 * @throws {VirtioError} `VHOST_USER_INCOMPATIBLE` for `resume` with packed
 *   rings (never built for a disk that may re-attach).
 */
export async function attach(
  frontend: VhostUserFrontend,
  memory: SharedGuestMemory,
  rings: readonly RingLayout[],
  inflight: KeptInflight | null,
  resume: boolean,
  onCall: (i: number) => void,
): Promise<BlkAttachment> {
  if (inflight !== null) await frontend.setInflight(inflight.description, inflight.fd);
  await frontend.addMemory(memory);
  const started: FrontendRing[] = [];
  for (const [i, ring] of rings.entries()) {
    const base = resume ? resumeBase(memory, ring) : undefined;
    started.push(
      await frontend.startRing(i, {
        ...ring,
        ...(base === undefined ? {} : { base }),
        onCall: () => onCall(i),
      }),
    );
  }
  return { frontend, rings: started };
}

/** Where a split ring resumes on a new back-end: the used index the earlier one last published. */
function resumeBase(memory: SharedGuestMemory, ring: RingLayout): number {
  if (ring.layout === "packed")
    throw new VirtioError(
      ErrorCode.VHOST_USER_INCOMPATIBLE,
      "a packed ring cannot be resumed on a new back-end: its positions are nowhere in guest memory",
    );
  // Atomics.load (SeqCst): the used index the earlier back-end last published.
  return memory.memory.atomicLoadU16(ring.usedAddr + VIRTQ_USED_OFF_IDX);
}

/**
 * Checks that a back-end reached after a restart can take the disk over:
 * the same features, and inflight tracking if the disk keeps a buffer
 * (without it, requests in flight would be lost or repeated).
 *
 * @throws {VirtioError} `VHOST_USER_INCOMPATIBLE` otherwise.
 */
export function checkSuccessor(
  frontend: VhostUserFrontend,
  features: bigint,
  inflight: KeptInflight | null,
): void {
  if (frontend.features !== features)
    throw new VirtioError(
      ErrorCode.VHOST_USER_INCOMPATIBLE,
      `the restarted back-end negotiated features 0x${frontend.features.toString(16)}, the disk runs with 0x${features.toString(16)}`,
    );
  if (inflight !== null && !frontend.hasProtocolFeature(PF.INFLIGHT_SHMFD))
    throw new VirtioError(
      ErrorCode.VHOST_USER_INCOMPATIBLE,
      "the restarted back-end does not offer INFLIGHT_SHMFD: requests in flight cannot be resubmitted",
    );
}

/** Closes the kept inflight buffer's fd (the disk is gone). */
export function dropInflight(inflight: KeptInflight | null): void {
  if (inflight === null) return;
  try {
    close(inflight.fd);
  } catch {
    // already closed
  }
}

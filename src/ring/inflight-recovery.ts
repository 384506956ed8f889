/**
 * What a queue start finds in its inflight log, whatever the ring's layout:
 * the requests an earlier back-end left in flight, to be handed out again
 * first, and where the ring resumes. qemu/qemu docs/interop/vhost-user.rst
 * "Inflight I/O tracking" ("When reconnecting": "Resubmit inflight
 * DescStateSplit entries in order of their counter value"; the same for
 * DescStatePacked entries). The split layout is kept by inflight-split.ts,
 * the packed one by inflight-packed.ts.
 *
 * @module
 */
import type { PackedRingState } from "./packed-ring-state.ts";

/** What a queue start finds in the log. */
export interface InflightRecovery {
  /**
   * What an earlier back-end took and did not complete, oldest first: head
   * descriptor indexes (split ring) or buffer IDs (packed ring).
   */
  readonly resubmit: readonly number[];
  /**
   * Split ring: the next available index to take (`used.idx` + the requests
   * in flight). Packed ring: the next avail position, `ring.availPos`.
   */
  readonly nextAvail: number;
  /**
   * Packed ring only: where both positions resume with their wrap counters
   * (the log's, not SET_VRING_BASE's, when the log was trusted).
   */
  readonly ring?: PackedRingState;
  /** Why the log was started afresh instead of trusted, if it was. */
  readonly discarded?: string;
  /** The log cannot cover the ring: it is not used at all (`discarded` says why). */
  readonly untracked?: boolean;
}

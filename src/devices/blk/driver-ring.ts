/**
 * What the virtio-blk driver needs from a driver-side virtqueue: the one
 * seam between the driver and the ring format. VIRTIO 1.2 §2.7.13
 * (supplying buffers), §2.7.14 (receiving used buffers), §2.7.10 / §2.7.7
 * (notification suppression).
 *
 * The split ring's {@link DriverQueue} fits it as it is; another ring
 * format plugs in by implementing these members and nothing else. The driver
 * touches a ring only through this interface.
 *
 * @module
 */
import type { VirtioError } from "../../errors.ts";
import type { Segment } from "../../ring/driver-queue.ts";

/** A driver-side virtqueue as the virtio-blk driver uses it (tokens are request slot indexes). */
export interface BlkDriverRing {
  /** Queue size. */
  readonly size: number;
  /** VIRTIO_F_INDIRECT_DESC is in use: a request that fits one indirect table takes one descriptor. */
  readonly indirect: boolean;
  /** Free descriptors in the ring's descriptor table. */
  readonly numFree: number;
  /** The device's protocol violation that broke the ring, or null. */
  readonly broken: VirtioError | null;
  /**
   * Places a chain (`readable` then `writable` buffers) without publishing
   * it; false if the descriptors do not fit. Throws the ring's error when
   * broken.
   */
  stage(readable: readonly Segment[], writable: readonly Segment[], token: number): boolean;
  /** Publishes what was staged; true if the device asked for a notification. */
  kickNeeded(): boolean;
  /** Takes the next used buffer into {@link usedToken} / {@link usedLen}; false if none (or broken). */
  nextUsed(): boolean;
  readonly usedToken: number;
  readonly usedLen: number;
  disableCallbacks(): void;
  /** Asks for used-buffer notifications again; false if more buffers were used meanwhile. */
  enableCallbacks(): boolean;
  /** Takes every chain back after a device reset; the ring returns to its initial state. */
  detachAll(): unknown;
}

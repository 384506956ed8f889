/**
 * What a dataplane runtime opens as a virtio-blk disk, described as plain
 * data (it crosses to worker threads), and the portable openers. VIRTIO 1.2
 * §5.2.6 (what each request does to the disk is the backing store's job).
 * The Node-only opener of image files is ./node-backing.ts.
 *
 * @module
 */
import type { Logger } from "../../log.ts";
import type { BlkBacking } from "./backing.ts";
import { type ModuleBackingSpec, openModuleBacking } from "./module-backing.ts";
import { SharedMemoryBacking } from "./shared-memory-backing.ts";

/** A raw image, a file or a block device, opened by each runtime itself (Node-only). */
export interface FileBackingSpec {
  readonly kind: "file";
  readonly path: string;
  /**
   * `"auto"` (default): refuse an image carrying another format's signature
   * (qcow2, VMDK, …); `"raw"`: serve its bytes as they are.
   */
  readonly format?: "raw" | "auto";
  /** Open O_RDONLY; the device then offers VIRTIO_BLK_F_RO (default false). */
  readonly readOnly?: boolean;
  /** O_DIRECT with an aligned bounce buffer for unaligned guest buffers (default false). */
  readonly direct?: boolean;
  /** Transfers that would block: Node's thread pool (default) or the runtime's io_uring. */
  readonly aio?: "threads" | "io_uring";
  /** Largest transfer per system call (FileBacking default when absent). */
  readonly maxIoBytes?: number;
  /**
   * Use the native fallocate (block devices: BLKDISCARD / BLKZEROOUT) for
   * DISCARD / WRITE_ZEROES (default true; false: write zeroes).
   */
  readonly fallocate?: boolean;
}

/**
 * An NBD export (Node-only: ./nbd-backing.ts), opened by each runtime itself
 * with its own connections. Without NBD_FLAG_CAN_MULTI_CONN the server is
 * only used safely from one runtime (see probeNbd).
 */
export interface NbdBackingSpec {
  readonly kind: "nbd";
  /** `nbd://HOST[:PORT]/EXPORT` or `nbd+unix:///EXPORT?socket=PATH`. */
  readonly uri: string;
  /** Connections per runtime (default 1; more only with NBD_FLAG_CAN_MULTI_CONN). */
  readonly connections?: number;
  /** Refuse writes even if the export takes them; the device then offers VIRTIO_BLK_F_RO. */
  readonly readOnly?: boolean;
  /** Writes carry NBD_CMD_FLAG_FUA where the export supports it (default false). */
  readonly fua?: boolean;
  /** Bound on connecting plus the handshake (default 10 s). */
  readonly connectTimeoutMs?: number;
  /** Bound on one request (default 30 s). */
  readonly requestTimeoutMs?: number;
}

/** A disk held in a SharedArrayBuffer, shared by every runtime (portable). */
export interface SharedMemoryBackingSpec {
  readonly kind: "shared-memory";
  readonly buffer: SharedArrayBuffer;
  readonly readOnly?: boolean;
}

/**
 * A backing store object (one written in JavaScript, say): only for a
 * runtime on the calling thread, where messages are not cloned.
 */
export interface ObjectBackingSpec {
  readonly kind: "object";
  readonly backing: BlkBacking;
}

/** What a runtime opens as the disk; other kinds need an opener that knows them. */
export type BackingSpec =
  | FileBackingSpec
  | NbdBackingSpec
  | SharedMemoryBackingSpec
  | ObjectBackingSpec
  | ModuleBackingSpec
  | { readonly kind: string; readonly [field: string]: unknown };

/** What an opener is given besides the spec. */
export interface BackingContext {
  /** The device's logical block size: the disk size must be a multiple of it. */
  readonly logicalBlockSize: number;
  /** Lines go to the device's logger on the control side. */
  readonly logger: Logger;
}

/** Opens the disk a spec names (runtime side). */
export type BackingOpener = (spec: BackingSpec, context: BackingContext) => Promise<BlkBacking>;

/**
 * Opens `"shared-memory"` specs as {@link SharedMemoryBacking}, `"object"`
 * specs as the object they carry and `"module"` specs by importing the
 * store's module (./module-backing.ts).
 *
 * @throws {TypeError} for an unknown kind, or an object spec that crossed a thread.
 * @throws {VirtioError} `BLK_IMAGE` for a store module that cannot be used.
 */
export function openPortableBacking(
  spec: BackingSpec,
  context: BackingContext,
): Promise<BlkBacking> {
  switch (spec.kind) {
    case "shared-memory": {
      const m = spec as SharedMemoryBackingSpec;
      return Promise.resolve(new SharedMemoryBacking(m.buffer, { readOnly: m.readOnly ?? false }));
    }
    case "object": {
      const b = (spec as ObjectBackingSpec).backing;
      if (typeof b?.readv !== "function")
        throw new TypeError("an object backing store must be opened on the calling thread");
      return Promise.resolve(b);
    }
    case "module":
      return openModuleBacking(spec as ModuleBackingSpec, context);
    default:
      throw new TypeError(`unknown backing kind ${spec.kind}`);
  }
}

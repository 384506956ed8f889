/**
 * The fuzz targets: name, module (under fuzz/targets/), largest input, and
 * a one-line description (what `npm run fuzz -- --help` lists). Each module
 * exports `fuzz(data: Uint8Array): void | Promise<void>`.
 *
 * @module
 */

/** One fuzz target. */
export interface FuzzTargetInfo {
  readonly name: string;
  readonly module: string;
  /** Largest input the engine generates. */
  readonly maxLen: number;
  readonly description: string;
}

export const FUZZ_TARGETS: readonly FuzzTargetInfo[] = [
  {
    name: "split-ring",
    module: "split-ring.ts",
    maxLen: 4096,
    description: "device side of a split virtqueue over fuzzed guest memory and driver writes",
  },
  {
    name: "packed-ring",
    module: "packed-ring.ts",
    maxLen: 4096,
    description: "device side of a packed virtqueue over fuzzed guest memory and driver writes",
  },
  {
    name: "inflight-log",
    module: "inflight-log.ts",
    maxLen: 4096,
    description: "inflight log recovery and a ring resumed over a log the front-end wrote",
  },
  {
    name: "vhost-user-reader",
    module: "vhost-user-reader.ts",
    maxLen: 16384,
    description: "vhost-user message reader and payload decoders over fragments with fds",
  },
  {
    name: "vhost-user-session",
    module: "vhost-user-session.ts",
    maxLen: 8192,
    description:
      "vhost-user message sequences with fds through a back-end connection and its rings",
  },
  {
    name: "emulated-registers",
    module: "emulated-registers.ts",
    maxLen: 4096,
    description: "virtio-pci and virtio-mmio register models under random guest accesses",
  },
  {
    name: "blk-request",
    module: "blk-request.ts",
    maxLen: 4096,
    description: "virtio-blk request parser over fuzzed chains and headers",
  },
];

/** The target called `name`, or undefined. */
export function findTarget(name: string): FuzzTargetInfo | undefined {
  return FUZZ_TARGETS.find((t) => t.name === name);
}

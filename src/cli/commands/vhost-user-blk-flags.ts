/**
 * The flags of `virtio-ts vhost-user-blk`, their help, and the validated
 * settings they give. Device limits follow VIRTIO 1.2 §5.2.4 (config
 * layout: num_queues, seg_max, blk_size) and §2.7 (queue size: a power of
 * two, at most 32768).
 *
 * @module
 */
import { type FlagSpec, type ParsedFlags, UsageError } from "../args.ts";

const isPowerOfTwo = (v: string | number): boolean =>
  typeof v === "number" && v > 0 && (v & (v - 1)) === 0;

/** The flags, in help order. */
export const FLAGS: readonly FlagSpec[] = [
  {
    name: "socket",
    kind: "string",
    metavar: "PATH",
    group: "Where",
    help: "Unix socket to create and listen on; the front-end\nconnects to it. A stale socket file is replaced; a\npath where a server answers is an error.",
  },
  {
    name: "fd",
    kind: "integer",
    metavar: "N",
    min: 3,
    max: 65535,
    group: "Where",
    help: "Serve on an inherited, already listening Unix socket\ninstead of --socket (the vhost-user back-end\nconvention, e.g. for libvirt).",
  },
  {
    name: "image",
    kind: "string",
    metavar: "FILE",
    required: true,
    group: "Where",
    help: "Raw disk image; its size must be a multiple of the\nlogical block size.",
  },
  {
    name: "num-queues",
    kind: "integer",
    metavar: "N",
    min: 1,
    max: 1024,
    group: "Device",
    help: "Request queues, 1..1024 (default 1). QEMU's\nvhost-user-blk-pci num-queues must not be larger;\nQEMU defaults to one queue per vCPU, so give it\nnum-queues=N explicitly.",
  },
  {
    name: "queue-size",
    kind: "integer",
    metavar: "N",
    min: 4,
    max: 32768,
    check: (v) => (isPowerOfTwo(v) ? undefined : "must be a power of two"),
    group: "Device",
    help: "Ring size the front-end uses (QEMU's queue-size):\na power of two, 4..32768 (default 128). The device\nreports seg_max = N - 2.",
  },
  {
    name: "read-only",
    kind: "boolean",
    group: "Device",
    help: "Export read-only (VIRTIO_BLK_F_RO): the image is\nopened O_RDONLY and every guest write fails.",
  },
  {
    name: "serial",
    kind: "string",
    metavar: "ID",
    check: (v) =>
      typeof v === "string" && v.length <= 20 && /^[\x20-\x7e]+$/.test(v)
        ? undefined
        : "must be 1..20 printable ASCII characters",
    group: "Device",
    help: "Device ID the guest reads (GET_ID), 1..20 printable\nASCII characters (Linux: /sys/block/vda/serial,\n/dev/disk/by-id/virtio-ID).",
  },
  {
    name: "logical-block-size",
    kind: "integer",
    metavar: "N",
    min: 512,
    max: 4096,
    check: (v) => (isPowerOfTwo(v) ? undefined : "must be 512, 1024, 2048 or 4096"),
    group: "Device",
    help: "Logical block size in bytes: 512 (default), 1024,\n2048 or 4096.",
  },
  {
    name: "writeback",
    kind: "boolean",
    group: "Device",
    help: "Report a writeback cache: a write completes once it\nis in the host page cache; the guest's FLUSH runs\nfdatasync. Default: write-through, every write is on\nstable storage before it completes. The guest may\nswitch (Linux: /sys/block/vda/queue/write_cache).",
  },
  {
    name: "direct",
    kind: "boolean",
    group: "I/O",
    help: "Open the image with O_DIRECT (bypass the host page\ncache).",
  },
  {
    name: "max-in-flight",
    kind: "integer",
    metavar: "N",
    min: 1,
    max: 32768,
    group: "I/O",
    help: "Requests each queue has in flight on the image,\n1..32768 (default 32).",
  },
  {
    name: "io-threads",
    kind: "integer",
    metavar: "N",
    min: 0,
    max: 64,
    group: "I/O",
    help: "Dataplane worker threads that run the queues (queue i\non thread i mod N; default 1). 0 runs the queues on\nthe thread that answers the VMM.",
  },
  {
    name: "shutdown-timeout",
    kind: "integer",
    metavar: "SECONDS",
    min: 0,
    max: 86400,
    group: "Operation",
    help: "On SIGINT / SIGTERM, wait at most this long for\nrequests in flight (default 30); then fail the rest\nwith an I/O error to the guest, flush the image and\nexit.",
  },
  {
    name: "allow-unsealed-memory",
    kind: "boolean",
    group: "Operation",
    help: "Map guest RAM from files that can shrink (hugetlbfs,\ntmpfs or disk files; not a memfd sealed against\nshrinking). Default: refused. A front-end that then\nshrinks the file loses its connection; this process\nlives on (docs/threat-model.md).",
  },
];

/** Help text after the flag list. */
export const EPILOG = `Example with QEMU (guest RAM must be shared memory):
  virtio-ts vhost-user-blk --socket /tmp/vhost-user-blk.sock --image disk.img --num-queues 2 &
  qemu-system-x86_64 -machine q35,accel=kvm -m 1G -smp 2 \\
    -object memory-backend-memfd,id=mem,size=1G,share=on -numa node,memdev=mem \\
    -chardev socket,id=vu0,path=/tmp/vhost-user-blk.sock,reconnect=1 \\
    -device vhost-user-blk-pci,chardev=vu0,num-queues=2 \\
    -kernel bzImage -append "console=ttyS0 root=/dev/vda" -nographic

One front-end at a time; after it disconnects the next one may connect
(reconnect=1 makes QEMU come back after a restart of this server).
SIGINT or SIGTERM stops cleanly: in-flight requests complete (those still
in flight after --shutdown-timeout fail with an I/O error), the image is
flushed, the socket file is removed, exit status 0. A second signal exits at
once with status 1.

Exit status: 0 clean stop; 1 runtime error (image, socket, I/O); 2 bad usage.
More: docs/cli.md (cloud-hypervisor, troubleshooting).`;

/** Validated settings of one run. */
export interface Settings {
  readonly socket: string | undefined;
  readonly fd: number | undefined;
  readonly image: string;
  readonly numQueues: number;
  readonly queueSize: number;
  readonly readOnly: boolean;
  readonly serial: string | undefined;
  readonly logicalBlockSize: number;
  readonly writeback: boolean;
  readonly direct: boolean;
  readonly maxInFlight: number | undefined;
  readonly ioThreads: number;
  readonly shutdownTimeoutSeconds: number;
  readonly allowUnsealedMemory: boolean;
}

/**
 * Settings from parsed flags.
 *
 * @throws {UsageError} unless exactly one of --socket and --fd is given.
 */
export function settings(f: ParsedFlags): Settings {
  if (f.has("socket") === f.has("fd"))
    throw new UsageError("give exactly one of --socket and --fd");
  return {
    socket: f.get("socket") as string | undefined,
    fd: f.get("fd") as number | undefined,
    image: f.get("image") as string,
    numQueues: (f.get("num-queues") as number | undefined) ?? 1,
    queueSize: (f.get("queue-size") as number | undefined) ?? 128,
    readOnly: f.has("read-only"),
    serial: f.get("serial") as string | undefined,
    logicalBlockSize: (f.get("logical-block-size") as number | undefined) ?? 512,
    writeback: f.has("writeback"),
    direct: f.has("direct"),
    maxInFlight: f.get("max-in-flight") as number | undefined,
    ioThreads: (f.get("io-threads") as number | undefined) ?? 1,
    shutdownTimeoutSeconds: (f.get("shutdown-timeout") as number | undefined) ?? 30,
    allowUnsealedMemory: f.has("allow-unsealed-memory"),
  };
}

/**
 * The flags of `virtio-ts vhost-user-blk`, their help, and the shape of the
 * settings they give (./vhost-user-blk-settings.ts validates them). Device limits follow VIRTIO 1.2 §5.2.4 (config
 * layout: num_queues, seg_max, blk_size) and §2.7 (queue size: a power of
 * two, at most 32768).
 *
 * @module
 */
import type { FlagSpec } from "../args.ts";

const isPowerOfTwo = (v: string | number): boolean =>
  typeof v === "number" && v > 0 && (v & (v - 1)) === 0;

/** The default of `--poll-max-us` (chosen by measurement: docs/benchmarks.md). */
export const DEFAULT_POLL_MAX_US = 0;

/** The `--aio` modes (QEMU's names). */
export const AIO_MODES = ["threads", "io_uring"] as const;
export type AioMode = (typeof AIO_MODES)[number];
/** The default `--aio`. */
export const DEFAULT_AIO: AioMode = "io_uring";

/** The flags, in help order. */
export const FLAGS: readonly FlagSpec[] = [
  {
    name: "socket-path",
    aliases: ["socket"],
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
    help: "Instead of --socket-path: serve on inherited fd N\n(the vhost-user back-end convention). A listening\nsocket is served like --socket-path; a connected one\n(one end of a socketpair, as crosvm and libvirt\npass it) is the one front-end: when it hangs up,\nthe process stops and exits 0.",
  },
  {
    name: "image",
    aliases: ["blk-file"],
    kind: "string",
    metavar: "FILE",
    group: "Where",
    help: "Raw disk image or block device (/dev/loop0, an LVM\nvolume, a partition); its size must be a multiple\nof the logical block size. A qcow2, vmdk, vhdx, …\nimage is refused (serve it through qemu-nbd and\n--nbd) unless --format raw.",
  },
  {
    name: "format",
    kind: "string",
    metavar: "FMT",
    check: (v) => (v === "auto" || v === "raw" ? undefined : "must be auto or raw"),
    group: "Where",
    help: "auto (default): refuse an --image whose header says\nit is qcow2, vmdk, vhdx, vdi, vpc, qed, LUKS, …;\nraw: serve its bytes as they are.",
  },
  {
    name: "nbd",
    kind: "string",
    metavar: "URI",
    group: "Where",
    help: "Instead of --image: the disk is an NBD export,\nnbd://HOST[:PORT]/EXPORT or\nnbd+unix:///EXPORT?socket=PATH (qemu-nbd, nbdkit,\n…). Several connections when the server allows it\n(CAN_MULTI_CONN), else every queue on one I/O thread.",
  },
  {
    name: "backing",
    kind: "string",
    metavar: "MODULE",
    group: "Where",
    help: "Instead of --image: the disk is a store written in\nJavaScript, an ES module exporting\nopenBacking(options, context) (docs/storage.md);\nevery queue runs on one I/O thread.",
  },
  {
    name: "backing-option",
    kind: "list",
    metavar: "KEY=VALUE,...",
    group: "Where",
    help: "Options handed to the --backing module's\nopenBacking as an object of strings; repeatable.",
  },
  {
    name: "export",
    kind: "list",
    metavar: "KEY=VALUE,...",
    group: "Where",
    help: "Serve one more image from this process, instead of\n--socket-path/--fd and --image; repeat for each.\nKeys: id=NAME (names its log lines), socket-path=PATH\n(or socket=PATH) or fd=N, image=FILE, and any Device flag or direct,\nmax-in-flight (read-only, writeback, direct take\n=on or =off). Device flags given outside --export\nare every export's defaults. All exports share the\nI/O threads. Write ,, for a comma in a value.",
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
    name: "aio",
    kind: "string",
    metavar: "MODE",
    check: (v) => (AIO_MODES.includes(v as AioMode) ? undefined : "must be threads or io_uring"),
    group: "I/O",
    help: `How reads and writes that would block run (QEMU's\naio): threads (Node's thread pool) or io_uring (one\nio_uring per I/O thread, one submission per ring\ndrain; the thread pool where the kernel refuses it).\nDefault ${DEFAULT_AIO}. Cached reads complete inline either way.`,
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
    name: "poll-max-us",
    kind: "integer",
    metavar: "US",
    min: 0,
    max: 1_000_000,
    group: "I/O",
    help: `When a queue runs dry, keep polling it for new\nrequests up to this many microseconds before\nsleeping until a kick (adaptive, like QEMU's\npoll-max-ns; 0 = never poll; default ${DEFAULT_POLL_MAX_US}).`,
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
    help: "On SIGTERM, SIGINT or SIGHUP, wait at most this\nlong for requests in flight (default 30); then fail\nthe rest with an I/O error to the guest, flush the\nimage and exit.",
  },
  {
    name: "allow-unsealed-memory",
    kind: "boolean",
    group: "Operation",
    help: "Map guest RAM from files that can shrink (hugetlbfs,\ntmpfs or disk files; not a memfd sealed against\nshrinking). Default: refused. A front-end that then\nshrinks the file loses its connection; this process\nlives on (docs/threat-model.md).",
  },
  {
    name: "pidfile",
    kind: "string",
    metavar: "PATH",
    group: "Service manager",
    help: "Write this process's id to PATH once every export\nserves (atomically); removed on exit. A PATH that\nnames a running process is an error; a stale one is\nreplaced.",
  },
  {
    name: "print-capabilities",
    kind: "boolean",
    group: "Service manager",
    help: "Print the back-end's capabilities as JSON (type\nblock, its features) and exit 0; every other flag\nis ignored (vhost-user back-end convention).",
  },
  {
    name: "print-description",
    kind: "boolean",
    group: "Service manager",
    help: "Print the JSON file that lets libvirt and other\nmanagers find this back-end (vhost-user.json\nschema) and exit 0; every other flag is ignored.",
  },
];

/** Help text after the flag list. */
export const EPILOG = `Example with QEMU (guest RAM must be shared memory):
  virtio-ts vhost-user-blk --socket-path /tmp/vhost-user-blk.sock --image disk.img --num-queues 2 &
  qemu-system-x86_64 -machine q35,accel=kvm -m 1G -smp 2 \\
    -object memory-backend-memfd,id=mem,size=1G,share=on -numa node,memdev=mem \\
    -chardev socket,id=vu0,path=/tmp/vhost-user-blk.sock,reconnect=1 \\
    -device vhost-user-blk-pci,chardev=vu0,num-queues=2 \\
    -kernel bzImage -append "console=ttyS0 root=/dev/vda" -nographic

Several disks from one process (each export its own socket and device;
they share the I/O threads; Device flags outside --export are defaults):
  virtio-ts vhost-user-blk --io-threads 2 --writeback \\
    --export id=vm1,socket-path=/run/vm1.sock,image=vm1.img \\
    --export id=vm2,socket-path=/run/vm2.sock,image=vm2.img,num-queues=2

One front-end per export at a time; after it disconnects the next one may
connect (reconnect=1 makes QEMU come back after a restart of this server).
SIGTERM, SIGINT or SIGHUP stops cleanly: in-flight requests complete (those
still in flight after --shutdown-timeout fail with an I/O error), the image
is flushed, the socket file is removed, exit status 0. A second signal exits
at once with status 1. With --fd on a connected socket, the front-end hanging
up stops the process the same way.

Under a service manager: $NOTIFY_SOCKET gets READY=1 once every export
serves and STOPPING=1 when stopping (systemd Type=notify); --pidfile;
--print-capabilities and --print-description for libvirt's discovery.

Exit status: 0 clean stop; 1 runtime error (image, socket, I/O); 2 bad usage.
More: docs/cli.md (cloud-hypervisor, troubleshooting).`;

/** One export: an image served as one virtio-blk device on one socket. */
export interface ExportSettings {
  /** The name its log lines carry when the process serves several exports. */
  readonly id: string;
  readonly socket: string | undefined;
  readonly fd: number | undefined;
  /** What serves as the disk: an image file or block device, an NBD export, a store module. */
  readonly source: "image" | "nbd" | "backing";
  /** The image path, the NBD URI or the module path (names the disk in lines). */
  readonly image: string;
  /** `--format`: detect and refuse non-raw images, or serve any bytes as raw. */
  readonly format: "auto" | "raw";
  /** `--backing-option` pairs for a store module. */
  readonly backingOptions: Readonly<Record<string, string>>;
  readonly numQueues: number;
  readonly queueSize: number;
  readonly readOnly: boolean;
  readonly serial: string | undefined;
  readonly logicalBlockSize: number;
  readonly writeback: boolean;
  readonly direct: boolean;
  /** How transfers that would block run. */
  readonly aio: AioMode;
  readonly maxInFlight: number | undefined;
  /** Longest adaptive poll window, µs (0: no polling). */
  readonly pollMaxUs: number;
}

/** Validated settings of one run: the exports, and what they share. */
export interface Settings {
  readonly exports: readonly ExportSettings[];
  readonly ioThreads: number;
  readonly shutdownTimeoutSeconds: number;
  readonly allowUnsealedMemory: boolean;
  /** Where to write the process id once serving. */
  readonly pidfile: string | undefined;
}

/** The flags that describe one export (the keys `--export` takes, besides `id`). */
export const EXPORT_FLAGS: readonly FlagSpec[] = FLAGS.filter(
  (f) =>
    (f.group === "Where" && f.name !== "backing-option") ||
    f.group === "Device" ||
    ["direct", "aio", "max-in-flight", "poll-max-us"].includes(f.name),
);

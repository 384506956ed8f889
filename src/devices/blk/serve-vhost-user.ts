/**
 * One call to serve a disk over vhost-user from a program: a dataplane pool
 * (worker threads, or the calling thread), the virtio-blk device (VIRTIO 1.2
 * §5.2) on it and a {@link VhostUserServer} on a socket
 * (qemu/qemu docs/interop/vhost-user.rst). The disk is any backing spec (an
 * image file, a store module, an NBD export, …) or a store object written in
 * the program. Closing drains the rings, flushes the disk and ends the
 * threads. Node-only.
 *
 * @module
 */
import type { DataplanePool } from "../../dataplane/pool.ts";
import type { Logger } from "../../log.ts";
import { VhostUserServer } from "../../vhost-user/server.ts";
import { nodeDataplanePool } from "../node-dataplane.ts";
import type { BlkBacking } from "./backing.ts";
import type { BackingSpec } from "./backing-spec.ts";
import type { BlkDataplaneConfig, BlkDeviceInfo, BlkEngineLimits } from "./runtime-device.ts";
import { type OpenedVhostUserBlk, openVhostUserBlk } from "./vhost-user.ts";

/** Options of {@link serveVhostUserBlk}. */
export interface ServeVhostUserBlkOptions extends Partial<BlkDataplaneConfig>, BlkEngineLimits {
  /** Socket path to create and listen on (a stale socket file is replaced). */
  readonly socket?: string;
  /** An inherited, listening socket fd instead of `socket`. */
  readonly fd?: number;
  /**
   * The disk: a backing spec (opened by every runtime that hosts a queue),
   * or a store object, which is then served on the calling thread.
   */
  readonly backing: BackingSpec | BlkBacking;
  /**
   * Worker threads for the queues (default 1); 0 runs them on the calling
   * thread. Ignored for a store object (always the calling thread).
   */
  readonly ioThreads?: number;
  /** Every queue on one runtime, so the disk is opened once (default false). */
  readonly oneRuntime?: boolean;
  /** Map guest memory that can shrink under the mapping (default false: refused). */
  readonly allowUnsealedMemory?: boolean;
  /** The device's and the server's lines (default: the console). */
  readonly logger?: Logger;
}

/** A disk being served. */
export interface ServedVhostUserBlk {
  readonly server: VhostUserServer;
  /** The disk as it was opened (size in bytes, read-only). */
  readonly info: BlkDeviceInfo;
  /**
   * Stops listening, lets the rings drain, flushes the disk (unless it is
   * read-only), closes it (a store object too) and ends the threads.
   * Idempotent.
   */
  close(): Promise<void>;
}

const isStore = (b: BackingSpec | BlkBacking): b is BlkBacking =>
  typeof (b as Partial<BlkBacking>).readv === "function";

/**
 * Serves a virtio-blk disk over vhost-user until closed.
 *
 * @example
 * ```ts
 * const served = await serveVhostUserBlk({
 *   socket: "/tmp/vhost-user-blk.sock",
 *   backing: { kind: "file", path: "disk.img" },
 *   numQueues: 2,
 * });
 * // … QEMU connects with -device vhost-user-blk-pci …
 * await served.close();
 * ```
 *
 * @throws {TypeError} unless exactly one of `socket` and `fd` is given.
 * @throws {VirtioError} `BLK_IMAGE` for a disk that cannot be served; a
 *   NativeError for a socket that cannot be created.
 */
export async function serveVhostUserBlk(o: ServeVhostUserBlkOptions): Promise<ServedVhostUserBlk> {
  if ((o.socket === undefined) === (o.fd === undefined))
    throw new TypeError("give exactly one of socket and fd");
  const { socket, fd, backing, ioThreads, oneRuntime, allowUnsealedMemory, logger, ...config } = o;
  const store = isStore(backing);
  const pool = await nodeDataplanePool({
    threads: store ? 0 : (ioThreads ?? 1),
    ...(logger === undefined ? {} : { logger }),
  });
  let blk: OpenedVhostUserBlk | undefined;
  try {
    blk = await openVhostUserBlk({
      ...config,
      numQueues: config.numQueues ?? 1,
      pool,
      backing: store ? { kind: "object", backing } : backing,
      oneRuntime: oneRuntime ?? false,
      ...(logger === undefined ? {} : { logger }),
    });
    const server = new VhostUserServer({
      backend: blk.backend,
      dataplane: blk.dataplane,
      allowUnsealedMemory: allowUnsealedMemory ?? false,
      ...(socket === undefined ? { listenFd: fd! } : { path: socket }),
      ...(logger === undefined ? {} : { log: (line: string) => logger.warn(line) }),
    });
    return served(server, blk, pool);
  } catch (e) {
    await blk?.dataplane.close().catch(() => {});
    await pool.close();
    throw e;
  }
}

function served(
  server: VhostUserServer,
  blk: OpenedVhostUserBlk,
  pool: DataplanePool,
): ServedVhostUserBlk {
  let closing: Promise<void> | undefined;
  const close = async (): Promise<void> => {
    try {
      await server.close();
      if (!blk.info.readOnly) await blk.dataplane.control("flush");
    } finally {
      await pool.close();
    }
  };
  return {
    server,
    info: blk.info,
    close: () => (closing ??= close()),
  };
}

/**
 * Loads the native addon and describes its raw interface. The binary is
 * `build/Release/virtio_ts_native.node` when built from `native/` by
 * node-gyp (`npm ci` in this repository, `npm rebuild virtio-ts`), else the
 * prebuilt `prebuilds/<platform>-<arch>/*.node` shipped in the package
 * (found by node-gyp-build, which the package's install script also runs:
 * it compiles only when no prebuilt binary fits).
 *
 * Loading never throws: if the addon is missing or broken, every native
 * function throws a {@link VirtioError} with code `VIRTIO_ERR_NATIVE` and the
 * reason, and {@link nativeAvailable} returns false. The rest of the library
 * (the portable core) works without the addon.
 *
 * The addon is context-aware: each thread (main or worker) that imports this
 * module loads its own instance with its own state.
 *
 * @module
 */
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { ErrorCode, VirtioError } from "../errors.ts";
import { NativeError } from "./native-error.ts";

/** What {@link recvmsg} returns. */
export interface ReceivedMessage {
  /** The bytes received (empty at end of stream). */
  readonly bytes: Buffer;
  /** Received fds, close-on-exec; the caller owns (and must close) them. */
  readonly fds: number[];
  /** True when the peer closed its sending side (`bytes` is empty). */
  readonly eof: boolean;
}

/** What {@link blockDeviceInfo} returns. */
export interface BlockDeviceInfo {
  /** Size in bytes (BLKGETSIZE64). */
  readonly size: number;
  /** Logical block size in bytes (BLKSSZGET). */
  readonly logicalBlockSize: number;
  /** Physical block size in bytes (BLKPBSZGET). */
  readonly physicalBlockSize: number;
}

/** What {@link directIoAlignment} returns (statx STATX_DIOALIGN). */
export interface DirectIoAlignment {
  /** Required alignment of user buffers for O_DIRECT, in bytes. */
  readonly memoryAlignment: number;
  /** Required alignment of file offsets and lengths for O_DIRECT, in bytes. */
  readonly offsetAlignment: number;
}

/** Builds the error the addon throws for a failed system call. */
export type ErrorFactory = (
  syscall: string,
  errno: number,
  path: string | undefined,
  errnoCode: string | undefined,
  message: string | undefined,
) => Error;

/** The raw addon. Argument checks live in C++; see the wrappers for docs. @internal */
export interface NativeAddon {
  readonly pageSize: number;
  readonly constants: Readonly<Record<string, number>>;
  setErrorFactory(factory: ErrorFactory): void;
  // sockets.cc
  listenUnix(path: string, backlog: number): number;
  acceptUnix(fd: number): number | null;
  connectUnix(path: string): number;
  socketPair(): [number, number];
  shutdown(fd: number, how: number): void;
  isListeningSocket(fd: number): boolean;
  sendUnixDatagram(address: string, bytes: Uint8Array): void;
  bindUnixDatagram(address: string): number;
  close(fd: number): void;
  recvmsg(fd: number, maxBytes: number, maxFds: number): ReceivedMessage | null;
  sendmsg(fd: number, bytes: Uint8Array, fds?: readonly number[]): number | null;
  // memory.cc
  mmap(fd: number, length: number, offset: number, writable: boolean, guard?: boolean): ArrayBuffer;
  munmap(buffer: ArrayBuffer): boolean;
  mapAlignment(fd: number): number;
  mappingCount(): number;
  mappingFaults(buffer: ArrayBuffer): number;
  // sigbus.cc
  guardFaultTotal(): number;
  guardSlotsInUse(): number;
  // files.cc
  eventfd(initval: number, flags: number): number;
  eventfdRead(fd: number): bigint | null;
  eventfdWrite(fd: number, value: bigint | number): boolean;
  memfdCreate(name: string, flags: number): number;
  ftruncate(fd: number, size: number): void;
  addSeals(fd: number, seals: number): void;
  getSeals(fd: number): number;
  fallocate(fd: number, mode: number, offset: number, length: number): void;
  ioNowait(
    fd: number,
    buffers: readonly Uint8Array[],
    position: number,
    write: boolean,
  ): number | null;
  blockDeviceInfo(fd: number): BlockDeviceInfo;
  blockDiscard(fd: number, offset: number, length: number): Promise<void>;
  blockZeroOut(fd: number, offset: number, length: number): Promise<void>;
  directIoAlignment(fd: number): DirectIoAlignment | null;
  // watch.cc
  watchStart(
    fd: number,
    events: number,
    callback: (error: NativeError | null, events: number) => void,
  ): number;
  watchSetEvents(id: number, events: number): void;
  watchRef(id: number, ref: boolean): void;
  watchStop(id: number): boolean;
  watchCount(): number;
  // uring.cc
  uringOpen(entries: number): UringRing;
  uringPrepare(
    ring: number,
    fd: number,
    buffers: readonly Uint8Array[],
    position: number,
    write: boolean,
  ): number;
  uringSubmit(ring: number): number;
  uringReap(ring: number, out: Int32Array): number;
  uringClose(ring: number): void;
}

/** An open io_uring (uring.cc): its id, the eventfd it signals completions on, and its slots. */
export interface UringRing {
  readonly ring: number;
  readonly eventFd: number;
  /** Requests that may be in flight at once. */
  readonly capacity: number;
}

/**
 * The package roots the addon is looked for under, relative to this file:
 * src/native/ and dist/native/ (tsconfig.build.json) sit two levels below
 * the package root, dist/src/native/ (tsconfig.json's outDir) three.
 */
const DEFAULT_ROOTS = [new URL("../../", import.meta.url), new URL("../../../", import.meta.url)];

/** The one line a user sees when no binary fits this machine. */
export const NOT_BUILT_MESSAGE =
  `native addon not available for ${process.platform}-${process.arch}: no prebuilt binary ` +
  "fits this machine and none was built; build it with `npm rebuild virtio-ts` " +
  "(needs g++, make and python3), and if your package manager skips install scripts " +
  "(npm --ignore-scripts, pnpm, yarn), allow them for virtio-ts";

/** node-gyp-build's resolver: build/Release, build/Debug, then prebuilds/<platform>-<arch>/. */
type FindBinary = (root: string) => string;

/**
 * Finds the addon under the first candidate package root (one holding
 * binding.gyp) with node-gyp-build — the source build first, then the
 * prebuilt binary for this platform, arch and libc — and loads it. Returns
 * the addon or the reason it is unavailable. @internal (exported for tests)
 */
export function loadAddon(
  roots: readonly URL[],
  find?: FindBinary,
): { readonly addon: NativeAddon } | { readonly error: string } {
  const require = createRequire(import.meta.url);
  for (const url of roots) {
    const root = fileURLToPath(url);
    if (!existsSync(join(root, "binding.gyp"))) continue;
    let path: string;
    try {
      path = (find ?? (require("node-gyp-build") as { path: FindBinary }).path)(root);
    } catch {
      return { error: NOT_BUILT_MESSAGE };
    }
    try {
      return { addon: require(path) as NativeAddon };
    } catch (e) {
      return {
        error: `native addon at ${path} failed to load (${e instanceof Error ? e.message : String(e)}); rebuild it: npm rebuild virtio-ts`,
      };
    }
  }
  return { error: NOT_BUILT_MESSAGE };
}

function unavailable(reason: string): NativeAddon {
  const fail = (): never => {
    throw new VirtioError(ErrorCode.NATIVE, reason);
  };
  return new Proxy({} as NativeAddon, { get: () => fail });
}

const loaded = loadAddon(DEFAULT_ROOTS);
const loadError = "error" in loaded ? loaded.error : undefined;

/** The addon, or a stand-in whose every function throws the load error. @internal */
export const native: NativeAddon = "addon" in loaded ? loaded.addon : unavailable(loaded.error);

if ("addon" in loaded) {
  native.setErrorFactory(
    (syscall, errno, path, errnoCode, message) =>
      new NativeError(syscall, errno, { path, errnoCode, message }),
  );
}

/** True if the native addon is loaded (Linux, built by `npm install`). */
export function nativeAvailable(): boolean {
  return loadError === undefined;
}

/** Why the native addon is unavailable, or undefined if it is loaded. */
export function nativeLoadError(): string | undefined {
  return loadError;
}

/**
 * An example backing store module: a copy-on-write overlay over a read-only
 * base image. The guest sees the base image; what it writes goes to an
 * overlay file, in 4 KiB blocks, and a block map says which blocks the
 * overlay holds. The base is never written, so many overlays can share it.
 * VIRTIO 1.2 §5.2.6 (the requests a store answers).
 *
 * Serve it (compiled to JavaScript, e.g. `npx tsc` or any bundler):
 *
 *   virtio-ts vhost-user-blk --socket-path /tmp/vub.sock \
 *     --backing ./cow-store.js --backing-option base=base.img,overlay=vm1.cow
 *
 * Files: `overlay` holds the written blocks at their own offsets (sparse);
 * `overlay.map` holds one bit per block, written at every flush after the
 * overlay's data is durable, so after a crash a block reads either its
 * flushed contents or (if it was written after the last flush) the base's.
 *
 * Every queue must reach the same store object: the module keeps the map in
 * memory, so the device is served from one thread (the command does that
 * for `--backing`).
 *
 * @module
 */
import { constants } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import type { BackingContext } from "../src/devices/blk/backing-spec.ts";
import type { BlkBacking } from "../src/devices/blk/backing.ts";

/** Options (`--backing-option KEY=VALUE,...`). */
interface CowOptions {
  readonly base: string;
  readonly overlay: string;
}

const BLOCK = 4096;

/** The sub-views of `iov` covering bytes [from, from + len). */
function sliceIov(iov: readonly Uint8Array[], from: number, len: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let skip = from;
  for (const v of iov) {
    if (len === 0) break;
    if (skip >= v.length) {
      skip -= v.length;
      continue;
    }
    const n = Math.min(v.length - skip, len);
    out.push(v.subarray(skip, skip + n));
    len -= n;
    skip = 0;
  }
  return out;
}

/** Runs one at a time the tasks given to it (copy-ups must not interleave). */
class Mutex {
  #tail: Promise<unknown> = Promise.resolve();
  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(task);
    this.#tail = result.catch(() => {});
    return result;
  }
}

class CowStore implements BlkBacking {
  readonly readOnly = false;
  readonly size: number;
  readonly #base: FileHandle;
  readonly #overlay: FileHandle;
  readonly #mapFile: FileHandle;
  readonly #map: Uint8Array;
  readonly #copyUps = new Mutex();

  constructor(
    size: number,
    base: FileHandle,
    overlay: FileHandle,
    mapFile: FileHandle,
    map: Uint8Array,
  ) {
    this.size = size;
    this.#base = base;
    this.#overlay = overlay;
    this.#mapFile = mapFile;
    this.#map = map;
  }

  #has(block: number): boolean {
    return (this.#map[block >> 3]! & (1 << (block & 7))) !== 0;
  }

  #mark(block: number): void {
    this.#map[block >> 3]! |= 1 << (block & 7);
  }

  /** Reads run by run: consecutive blocks from the same file in one call. */
  async readv(offset: number, iov: readonly Uint8Array[]): Promise<void> {
    const end = offset + iov.reduce((n, v) => n + v.length, 0);
    for (let at = offset; at < end;) {
      const inOverlay = this.#has(Math.floor(at / BLOCK));
      let runEnd = Math.min(end, (Math.floor(at / BLOCK) + 1) * BLOCK);
      while (runEnd < end && this.#has(runEnd / BLOCK) === inOverlay)
        runEnd = Math.min(end, runEnd + BLOCK);
      const file = inOverlay ? this.#overlay : this.#base;
      const views = sliceIov(iov, at - offset, runEnd - at);
      const { bytesRead } = await file.readv(views, at);
      if (bytesRead !== runEnd - at)
        throw new Error(`short read at ${at}: ${bytesRead} of ${runEnd - at} bytes`);
      at = runEnd;
    }
  }

  /** Writes to the overlay; blocks it does not hold yet are copied up first (one writer at a time). */
  async writev(offset: number, iov: readonly Uint8Array[]): Promise<void> {
    const len = iov.reduce((n, v) => n + v.length, 0);
    const first = Math.floor(offset / BLOCK);
    const last = Math.floor((offset + len - 1) / BLOCK);
    const write = async (): Promise<void> => {
      const { bytesWritten } = await this.#overlay.writev(iov as Uint8Array[], offset);
      if (bytesWritten !== len)
        throw new Error(`short write at ${offset}: ${bytesWritten} of ${len} bytes`);
    };
    let held = true;
    for (let b = first; b <= last; b++) held &&= this.#has(b);
    if (held) return write();
    return this.#copyUps.run(async () => {
      // A partly written block needs the base's bytes around the new ones.
      for (const b of new Set([first, last])) {
        const whole = offset <= b * BLOCK && offset + len >= (b + 1) * BLOCK;
        if (!this.#has(b) && !whole) await this.#copyUp(b);
      }
      await write();
      for (let b = first; b <= last; b++) this.#mark(b);
    });
  }

  async #copyUp(block: number): Promise<void> {
    const buf = new Uint8Array(BLOCK);
    await this.#base.read(buf, 0, BLOCK, block * BLOCK);
    await this.#overlay.write(buf, 0, BLOCK, block * BLOCK);
  }

  /** The overlay's data first, then the map that points at it. */
  async flush(): Promise<void> {
    await this.#overlay.datasync();
    await this.#mapFile.write(this.#map, 0, this.#map.length, 0);
    await this.#mapFile.datasync();
  }

  /** Nothing to give back: a discarded block keeps reading what it held. */
  async discard(): Promise<void> {}

  async writeZeroes(offset: number, length: number): Promise<void> {
    for (let at = offset; at < offset + length; at += 1 << 20) {
      const n = Math.min(1 << 20, offset + length - at);
      await this.writev(at, [new Uint8Array(n)]);
    }
  }

  async close(): Promise<void> {
    await Promise.allSettled([this.#base.close(), this.#overlay.close(), this.#mapFile.close()]);
  }
}

function options(raw: unknown): CowOptions {
  const o = (raw ?? {}) as Record<string, unknown>;
  if (typeof o.base !== "string" || typeof o.overlay !== "string")
    throw new Error("give base=FILE (the read-only image) and overlay=FILE (created if missing)");
  return { base: o.base, overlay: o.overlay };
}

/** The store module's entry: opens the base read-only and the overlay and its map read-write. */
export async function openBacking(raw: unknown, context: BackingContext): Promise<BlkBacking> {
  const o = options(raw);
  const base = await open(o.base, "r");
  const size = (await base.stat()).size;
  if (size % context.logicalBlockSize !== 0) {
    await base.close();
    throw new Error(`${o.base}: ${size} bytes is not a multiple of ${context.logicalBlockSize}`);
  }
  const readWrite = constants.O_RDWR | constants.O_CREAT;
  const overlay = await open(o.overlay, readWrite);
  await overlay.truncate(size);
  const mapFile = await open(`${o.overlay}.map`, readWrite);
  const map = new Uint8Array(Math.ceil(size / BLOCK / 8));
  await mapFile.read(map, 0, map.length, 0);
  return new CowStore(size, base, overlay, mapFile, map);
}

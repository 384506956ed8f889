/**
 * FileBacking's O_DIRECT fallback: an aligned bounce buffer for requests
 * whose guest buffers the kernel refuses. Node-only (fs). VIRTIO 1.2 §5.2.6
 * (IN / OUT requests move the same bytes whichever way they go).
 *
 * - Guest buffers are tried directly; when the kernel refuses them (EINVAL:
 *   misaligned), the whole request is redone through an aligned bounce slot.
 *   Redoing is safe: reads and writes of the same bytes at the same place
 *   are idempotent.
 * - JavaScript cannot see buffer addresses, so the aligned window inside the
 *   bounce allocation is found once, at open, by probing reads.
 * - A few fixed slots are handed out one request at a time; requests wait
 *   for a free slot in order.
 *
 * @module
 */
import type { FileHandle } from "node:fs/promises";
import { iovLength } from "./backing.ts";
import { errnoCode, imageError } from "./file-open.ts";
import type { FileTransfer } from "./file-transfer.ts";
import { errorText } from "../../log.ts";

const PROBE_BYTES = 8192;
const BOUNCE_SLOT_BYTES = 256 * 1024;
const BOUNCE_SLOTS = 4;

/** A position in a list of views: view index and bytes of it already used. */
interface IovCursor {
  idx: number;
  skip: number;
}

/** Aligned bounce buffers for O_DIRECT, handed out one request at a time per slot. */
export class DirectBounce {
  readonly #slots: Uint8Array[];
  readonly #waiters: ((slot: Uint8Array) => void)[] = [];
  /** Requests redone through the bounce buffer. */
  #count = 0;

  constructor(window: Uint8Array) {
    this.#slots = [];
    for (let i = 0; i < BOUNCE_SLOTS; i++)
      this.#slots.push(window.subarray(i * BOUNCE_SLOT_BYTES, (i + 1) * BOUNCE_SLOT_BYTES));
  }

  /** Requests that went through the bounce buffer. */
  get count(): number {
    return this.#count;
  }

  acquire(): Promise<Uint8Array> {
    const s = this.#slots.pop();
    if (s !== undefined) return Promise.resolve(s);
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  release(slot: Uint8Array): void {
    const w = this.#waiters.shift();
    if (w !== undefined) w(slot);
    else this.#slots.push(slot);
  }

  /** The whole request again through an aligned bounce slot. */
  async redo(
    xfer: FileTransfer,
    offset: number,
    iov: readonly Uint8Array[],
    write: boolean,
  ): Promise<void> {
    this.#count++;
    const slot = await this.acquire();
    try {
      const total = iovLength(iov);
      const cursor: IovCursor = { idx: 0, skip: 0 };
      for (let done = 0; done < total;) {
        const n = Math.min(slot.length, total - done);
        const chunk = slot.subarray(0, n);
        if (write) {
          gather(iov, cursor, chunk);
          await xfer.run(offset + done, [chunk], true);
        } else {
          await xfer.run(offset + done, [chunk], false);
          scatter(chunk, iov, cursor);
        }
        done += n;
      }
    } finally {
      this.release(slot);
    }
  }

  /** Writes `length` zero bytes at `offset` from an aligned slot. */
  async writeZeroes(xfer: FileTransfer, offset: number, length: number): Promise<void> {
    const slot = await this.acquire();
    try {
      slot.fill(0);
      await xfer.writeZeroes(slot, offset, length);
    } finally {
      this.release(slot);
    }
  }
}

/**
 * Finds, inside a fresh allocation, a window where O_DIRECT reads succeed
 * (probing 16-byte steps with page-crossing reads), and checks that the
 * device accepts transfers of the logical block size.
 *
 * @throws {VirtioError} `BLK_IMAGE` for an image too small to probe, a
 *   device that refuses `lbs`-byte blocks, or no aligned window.
 */
export async function probeDirectBounce(
  path: string,
  fh: FileHandle,
  size: number,
  lbs: number,
): Promise<DirectBounce> {
  if (size < PROBE_BYTES)
    throw imageError(path, `O_DIRECT needs an image of at least ${PROBE_BYTES} bytes`, { size });
  const bytes = BOUNCE_SLOTS * BOUNCE_SLOT_BYTES;
  const raw = new Uint8Array(new ArrayBuffer(bytes + 4096));
  for (let off = 0; off < 4096; off += 16) {
    try {
      await fh.read(raw.subarray(off, off + PROBE_BYTES), 0, PROBE_BYTES, 0);
    } catch (e) {
      if (errnoCode(e) === "EINVAL") continue;
      throw imageError(path, `O_DIRECT probe failed: ${errorText(e)}`);
    }
    try {
      await fh.read(raw.subarray(off, off + lbs), 0, lbs, lbs);
    } catch (e) {
      throw imageError(
        path,
        `O_DIRECT refuses ${lbs}-byte blocks; use a larger logical block size (${errorText(e)})`,
      );
    }
    return new DirectBounce(raw.subarray(off, off + bytes));
  }
  throw imageError(path, "O_DIRECT: found no aligned buffer");
}

/** Copies from the views at `cursor` into `dst` (dst.length bytes), advancing the cursor. */
function gather(iov: readonly Uint8Array[], cursor: IovCursor, dst: Uint8Array): void {
  let o = 0;
  while (o < dst.length && cursor.idx < iov.length) {
    const v = iov[cursor.idx]!;
    const n = Math.min(v.length - cursor.skip, dst.length - o);
    dst.set(v.subarray(cursor.skip, cursor.skip + n), o);
    o += n;
    cursor.skip += n;
    if (cursor.skip === v.length) {
      cursor.idx++;
      cursor.skip = 0;
    }
  }
}

/** Copies `src` into the views at `cursor`, advancing the cursor. */
function scatter(src: Uint8Array, iov: readonly Uint8Array[], cursor: IovCursor): void {
  let o = 0;
  while (o < src.length && cursor.idx < iov.length) {
    const v = iov[cursor.idx]!;
    const n = Math.min(v.length - cursor.skip, src.length - o);
    v.set(src.subarray(o, o + n), cursor.skip);
    o += n;
    cursor.skip += n;
    if (cursor.skip === v.length) {
      cursor.idx++;
      cursor.skip = 0;
    }
  }
}

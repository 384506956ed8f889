/**
 * A virtio-blk backing store on an NBD export: any NBD server (qemu-nbd,
 * nbdkit, nbd-server) becomes the disk. VIRTIO 1.2 §5.2.6 (what each request
 * does to the disk); NetworkBlockDevice/nbd doc/proto.md "Request types"
 * (the commands each one maps to), proto.md "Size constraints" (splitting),
 * proto.md "Transmission flags" (what may be sent).
 *
 * - IN → NBD_CMD_READ, OUT → NBD_CMD_WRITE, split into pieces of at most the
 *   server's maximum payload (capped at 2^25, the size every server should
 *   take) that are multiples of the logical block size (and of the preferred
 *   block size where a piece is that large). Pieces run concurrently; the
 *   call settles only after every piece settled, so the guest-memory views
 *   are never touched afterwards.
 * - The device's logical block size must be at least the server's minimum
 *   block size; then every request is aligned as the server requires ("the
 *   client MUST ensure that offset and length are integer multiples of any
 *   advertised minimum block size") and no read-modify-write is needed.
 * - FLUSH → NBD_CMD_FLUSH only with NBD_FLAG_SEND_FLUSH (otherwise a no-op);
 *   DISCARD → NBD_CMD_TRIM only with NBD_FLAG_SEND_TRIM (otherwise a no-op: a
 *   hint); WRITE_ZEROES → NBD_CMD_WRITE_ZEROES with NBD_FLAG_SEND_WRITE_ZEROES
 *   (NBD_CMD_FLAG_NO_HOLE unless unmap is allowed), otherwise writes of zeroes.
 * - `fua`: writes, trims and write-zeroes carry NBD_CMD_FLAG_FUA where the
 *   export has NBD_FLAG_SEND_FUA.
 * - Read-only when the export sets NBD_FLAG_READ_ONLY or the spec asks.
 *
 * An error from the server, a broken connection or a timeout rejects: the
 * device answers VIRTIO_BLK_S_IOERR and the client reconnects behind it.
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../../errors.ts";
import { NbdClient, probeNbdExport, type NbdClientOptions } from "../../nbd/client.ts";
import type { NbdExportInfo } from "../../nbd/handshake.ts";
import type { NbdTarget } from "../../nbd/uri.ts";
import * as nbd from "../../spec/nbd.ts";
import { checkBackingRange, iovLength, type BlkBacking } from "./backing.ts";

/** Options of {@link NbdBacking.open}. */
export interface NbdBackingOptions extends NbdClientOptions {
  /** The device's logical block size (default 512); must be ≥ the server's minimum block size. */
  readonly logicalBlockSize?: number;
  /** Refuse writes even if the export takes them (default false). */
  readonly readOnly?: boolean;
  /** Send writes with NBD_CMD_FLAG_FUA where the export supports it (default false). */
  readonly fua?: boolean;
}

/** Largest effect length of one TRIM or WRITE_ZEROES (no payload travels). */
const MAX_EFFECT_BYTES = 1 << 30;
/** Zeroes written per piece when the export has no NBD_CMD_WRITE_ZEROES. */
const ZERO_PIECE_BYTES = 1 << 20;

/** Views [at, at + length) of the concatenation of `iov`. */
function sliceIov(iov: readonly Uint8Array[], at: number, length: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let skip = at;
  let left = length;
  for (const v of iov) {
    if (left === 0) break;
    if (skip >= v.length) {
      skip -= v.length;
      continue;
    }
    const n = Math.min(v.length - skip, left);
    out.push(v.subarray(skip, skip + n));
    left -= n;
    skip = 0;
  }
  return out;
}

/** Runs `piece` on consecutive pieces of at most `max` bytes; rejects with the first error after all settled. */
async function split(
  offset: number,
  length: number,
  max: number,
  piece: (offset: number, length: number, at: number) => Promise<void>,
): Promise<void> {
  const runs: Promise<void>[] = [];
  for (let at = 0; at < length; at += max)
    runs.push(piece(offset + at, Math.min(max, length - at), at));
  const results = await Promise.allSettled(runs);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed)
    throw failed.reason instanceof Error ? failed.reason : new Error(String(failed.reason));
}

/** The largest piece: ≤ maximum payload (capped at 2^25), a multiple of the block size (and of `pref` when it fits). */
function pieceSize(info: NbdExportInfo, lbs: number): number {
  const max = Math.min(info.maxPayload, nbd.NBD_DEFAULT_MAX_PAYLOAD);
  const unit =
    info.preferredBlockSize > lbs && info.preferredBlockSize <= max ? info.preferredBlockSize : lbs;
  return Math.floor(max / unit) * unit;
}

function checkExport(info: NbdExportInfo, lbs: number, where: string): void {
  const why =
    info.minBlockSize > lbs
      ? `its minimum block size ${info.minBlockSize} is larger than the logical block size ${lbs}; use a logical block size of at least ${info.minBlockSize}`
      : info.size % lbs !== 0
        ? `its size ${info.size} is not a multiple of the logical block size ${lbs}`
        : Math.min(info.maxPayload, nbd.NBD_DEFAULT_MAX_PAYLOAD) < lbs
          ? `its maximum payload ${info.maxPayload} is smaller than the logical block size ${lbs}`
          : undefined;
  if (why)
    throw new VirtioError(ErrorCode.NBD_EXPORT, `NBD export ${where} cannot be served: ${why}`);
}

/**
 * A disk on an NBD export.
 *
 * @example
 * ```ts
 * const disk = await NbdBacking.open("nbd+unix:///?socket=/run/qemu-nbd.sock", { connections: 4 });
 * ```
 */
export class NbdBacking implements BlkBacking {
  readonly size: number;
  readonly readOnly: boolean;
  /** What the server's handshake said. */
  readonly info: NbdExportInfo;
  readonly #client: NbdClient;
  readonly #piece: number;
  readonly #effect: number;
  readonly #fua: number;
  #zeroes: Uint8Array | undefined;
  #closed = false;

  private constructor(client: NbdClient, lbs: number, o: NbdBackingOptions) {
    this.#client = client;
    this.info = client.info;
    this.size = client.info.size;
    this.readOnly = o.readOnly === true || this.#has(nbd.NBD_FLAG_READ_ONLY);
    this.#piece = pieceSize(client.info, lbs);
    this.#effect = Math.floor(MAX_EFFECT_BYTES / lbs) * lbs;
    this.#fua = o.fua === true && this.#has(nbd.NBD_FLAG_SEND_FUA) ? nbd.NBD_CMD_FLAG_FUA : 0;
  }

  /**
   * Connects to the export.
   *
   * @throws {VirtioError} `NBD_EXPORT` when the export cannot be this disk
   *   (size or block sizes); the connection errors of NbdClient.connect.
   */
  static async open(
    target: string | NbdTarget,
    options: NbdBackingOptions = {},
  ): Promise<NbdBacking> {
    const lbs = options.logicalBlockSize ?? 512;
    const client = await NbdClient.connect(target, options);
    try {
      checkExport(
        client.info,
        lbs,
        typeof target === "string" ? target : JSON.stringify(client.info.exportName),
      );
    } catch (e) {
      await client.close();
      throw e;
    }
    return new NbdBacking(client, lbs, options);
  }

  /** Connections in use (1 unless the server sets NBD_FLAG_CAN_MULTI_CONN). */
  get connections(): number {
    return this.#client.connections;
  }

  #has(flag: number): boolean {
    return (this.info.flags & flag) !== 0;
  }

  #check(offset: number, length: number, write: boolean): void {
    if (this.#closed) throw new VirtioError(ErrorCode.NBD_DISCONNECTED, "NBD disk is closed");
    if (write && this.readOnly)
      throw new VirtioError(ErrorCode.NBD_EXPORT, "NBD disk is read-only");
    checkBackingRange(offset, length, this.size);
  }

  async readv(offset: number, iov: readonly Uint8Array[]): Promise<void> {
    const length = iovLength(iov);
    this.#check(offset, length, false);
    await split(offset, length, this.#piece, (off, n, at) =>
      this.#client.request(nbd.NBD_CMD_READ, 0, off, n, { read: sliceIov(iov, at, n) }),
    );
  }

  async writev(offset: number, iov: readonly Uint8Array[]): Promise<void> {
    const length = iovLength(iov);
    this.#check(offset, length, true);
    await split(offset, length, this.#piece, (off, n, at) =>
      this.#client.request(nbd.NBD_CMD_WRITE, this.#fua, off, n, { write: sliceIov(iov, at, n) }),
    );
  }

  async flush(): Promise<void> {
    this.#check(0, 0, false);
    // proto.md "Request types": "A client MUST NOT send a flush request unless NBD_FLAG_SEND_FLUSH was set".
    if (this.#has(nbd.NBD_FLAG_SEND_FLUSH)) await this.#client.request(nbd.NBD_CMD_FLUSH, 0, 0, 0);
  }

  async discard(offset: number, length: number): Promise<void> {
    this.#check(offset, length, true);
    // "A client MUST NOT send a trim request unless NBD_FLAG_SEND_TRIM was set".
    if (!this.#has(nbd.NBD_FLAG_SEND_TRIM)) return;
    await split(offset, length, this.#effect, (off, n) =>
      this.#client.request(nbd.NBD_CMD_TRIM, this.#fua, off, n),
    );
  }

  async writeZeroes(offset: number, length: number, unmap: boolean): Promise<void> {
    this.#check(offset, length, true);
    if (!this.#has(nbd.NBD_FLAG_SEND_WRITE_ZEROES)) return this.#writeZeroBuffers(offset, length);
    const flags = this.#fua | (unmap ? 0 : nbd.NBD_CMD_FLAG_NO_HOLE);
    await split(offset, length, this.#effect, (off, n) =>
      this.#client.request(nbd.NBD_CMD_WRITE_ZEROES, flags, off, n),
    );
  }

  /** WRITE_ZEROES without the command: plain writes from one shared zero buffer. */
  async #writeZeroBuffers(offset: number, length: number): Promise<void> {
    const piece = Math.min(this.#piece, ZERO_PIECE_BYTES);
    this.#zeroes ??= new Uint8Array(piece);
    const zeroes = this.#zeroes;
    await split(offset, length, piece, (off, n) =>
      this.#client.request(nbd.NBD_CMD_WRITE, this.#fua, off, n, {
        write: [zeroes.subarray(0, n)],
      }),
    );
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#client.close();
  }
}

/** What {@link probeNbd} learns about an export. */
export interface NbdProbe {
  readonly size: number;
  /** Transmission flags as sent. */
  readonly flags: number;
  readonly readOnly: boolean;
  readonly canFlush: boolean;
  readonly canFua: boolean;
  readonly canTrim: boolean;
  readonly canWriteZeroes: boolean;
  /** NBD_FLAG_CAN_MULTI_CONN: without it, every queue must share one connection. */
  readonly canMultiConn: boolean;
  readonly minBlockSize: number;
  readonly preferredBlockSize: number;
  readonly maxPayload: number;
  readonly structuredReplies: boolean;
}

/**
 * Connects once, reads what the export offers, disconnects softly. A caller
 * placing queues uses `canMultiConn`: without it, all queues must share one
 * connection (one runtime opens the backing).
 */
export async function probeNbd(
  target: string | NbdTarget,
  options: NbdClientOptions = {},
): Promise<NbdProbe> {
  const i = await probeNbdExport(target, options);
  const has = (f: number): boolean => (i.flags & f) !== 0;
  return {
    size: i.size,
    flags: i.flags,
    readOnly: has(nbd.NBD_FLAG_READ_ONLY),
    canFlush: has(nbd.NBD_FLAG_SEND_FLUSH),
    canFua: has(nbd.NBD_FLAG_SEND_FUA),
    canTrim: has(nbd.NBD_FLAG_SEND_TRIM),
    canWriteZeroes: has(nbd.NBD_FLAG_SEND_WRITE_ZEROES),
    canMultiConn: has(nbd.NBD_FLAG_CAN_MULTI_CONN),
    minBlockSize: i.minBlockSize,
    preferredBlockSize: i.preferredBlockSize,
    maxPayload: i.maxPayload,
    structuredReplies: i.structuredReplies,
  };
}

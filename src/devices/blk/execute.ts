/**
 * Execute a parsed virtio-blk request on a backing store and write its
 * result into the chain. VIRTIO 1.2 §5.2.6 (Device Operation) and §5.2.6.2
 * (a write is stable …; the device MUST commit stable writes before
 * reporting completion).
 *
 * Guest memory is touched only through the request's chain cursors: IN data
 * goes straight from the store into views of the writable part, OUT data
 * straight from views of the readable part (no bounce copy).
 *
 * A transfer whose guest buffers are unreachable (EFAULT: the memory was
 * pulled away under its mapping, e.g. a vhost-user front-end shrank the
 * file) is not a disk error: `req.error` is then a `MEM_FAULT` VirtioError,
 * which breaks the queue instead of answering IOERR.
 *
 * Write-through (`writeThrough`): every write-type request (OUT,
 * WRITE_ZEROES, DISCARD) is followed by `backing.flush()` (fdatasync for a
 * file) before it completes. A per-write flush was chosen over O_DSYNC
 * because the cache mode can change at run time (CONFIG_WCE) without
 * reopening the file, and because concurrent writes share one fdatasync
 * (see FileBacking).
 *
 * @module
 */
import {
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
} from "../../spec/blk.ts";
import { ErrorCode, VirtioError } from "../../errors.ts";
import type { BlkBacking } from "./backing.ts";
import { blkTypeName } from "./log.ts";
import type { DescriptorChain } from "../../ring/chain.ts";
import {
  BLK_STATUS_PENDING,
  parseBlkRequest,
  type BlkRequest,
  type BlkRequestPolicy,
} from "./request.ts";

/** How requests are executed (read per request, at submission). */
export interface BlkExecPolicy {
  /** Make every write stable before it completes. */
  readonly writeThrough: boolean;
  /** WRITE_ZEROES with UNMAP may deallocate. */
  readonly writeZeroesMayUnmap: boolean;
}

type Exec = (req: BlkRequest, backing: BlkBacking, p: BlkExecPolicy) => Promise<void>;

const execIn: Exec = async (req, backing) => {
  if (req.length === 0) return;
  req.writer!.views(req.length, req.iov);
  await backing.readv(req.offset, req.iov);
  req.usedLen = req.length;
};

const execOut: Exec = async (req, backing, p) => {
  if (req.length > 0) {
    req.reader!.views(req.length, req.iov);
    await backing.writev(req.offset, req.iov);
  }
  // §5.2.6.2: "If the device is backed by persistent storage, the device MUST ensure that stable
  // writes are committed to it, before reporting completion of the write".
  if (p.writeThrough) await backing.flush();
};

// With a writeback cache this is what makes completed writes stable; never acknowledged before.
const execFlush: Exec = (_req, backing) => backing.flush();

const execDiscard: Exec = async (req, backing, p) => {
  for (let i = 0; i < req.segCount; i++) {
    if (req.segLength[i]! > 0) await backing.discard(req.segOffset[i]!, req.segLength[i]!);
  }
  if (p.writeThrough) await backing.flush();
};

const execWriteZeroes: Exec = async (req, backing, p) => {
  for (let i = 0; i < req.segCount; i++) {
    const unmap = req.segUnmap[i]! && p.writeZeroesMayUnmap;
    if (req.segLength[i]! > 0)
      await backing.writeZeroes(req.segOffset[i]!, req.segLength[i]!, unmap);
  }
  if (p.writeThrough) await backing.flush();
};

const EXEC: Readonly<Record<number, Exec>> = {
  [VIRTIO_BLK_T_IN]: execIn,
  [VIRTIO_BLK_T_OUT]: execOut,
  [VIRTIO_BLK_T_FLUSH]: execFlush,
  [VIRTIO_BLK_T_DISCARD]: execDiscard,
  [VIRTIO_BLK_T_WRITE_ZEROES]: execWriteZeroes,
};

/** True if the parsed request needs the backing store (IN, OUT, FLUSH, DISCARD, WRITE_ZEROES). */
export function needsBacking(req: BlkRequest): boolean {
  return EXEC[req.type] !== undefined;
}

/**
 * Runs a parsed, pending request on `backing`. Never rejects: on success
 * `req.status` is OK; a store error sets IOERR, keeps the error in
 * `req.error`, and claims no data bytes in `req.usedLen`.
 */
export async function executeBlkRequest(
  req: BlkRequest,
  backing: BlkBacking,
  policy: BlkExecPolicy,
): Promise<void> {
  const exec = EXEC[req.type];
  try {
    if (exec === undefined) throw new Error(`no executor for type ${req.type}`);
    await exec(req, backing, policy);
    req.status = VIRTIO_BLK_S_OK;
  } catch (e) {
    req.status = VIRTIO_BLK_S_IOERR;
    req.error = errnoOf(e) === "EFAULT" ? memoryGone(req) : e;
    req.usedLen = 0;
  }
}

function errnoOf(e: unknown): unknown {
  const { code, errnoCode } = (e ?? {}) as { code?: unknown; errnoCode?: unknown };
  return errnoCode ?? code;
}

function memoryGone(req: BlkRequest): VirtioError {
  return new VirtioError(
    ErrorCode.MEM_FAULT,
    `req ${req.chain?.head ?? "?"}: ${blkTypeName(req.type)} sector ${req.sector}: its guest buffers are unreachable (EFAULT): the memory was pulled away under the mapping`,
    { type: req.type, sector: req.sector },
  );
}

/**
 * Parses `chain` into `req` and answers at once what needs no backing
 * store (an invalid request gets its error status; GET_ID its ID). True if
 * the request still has to go to the backing store.
 *
 * @throws {VirtioError} `BLK_MISSING_HEADERS` (see parseBlkRequest).
 */
export function prepareBlkRequest(
  chain: DescriptorChain,
  policy: BlkRequestPolicy & BlkExecPolicy,
  req: BlkRequest,
): boolean {
  parseBlkRequest(chain, policy, req);
  if (req.status !== BLK_STATUS_PENDING) return false;
  if (req.type !== VIRTIO_BLK_T_GET_ID) return true;
  executeGetId(req, policy.id);
  return false;
}

/** GET_ID: writes min(buffer, 20) bytes of the NUL-padded ID; status OK. */
export function executeGetId(req: BlkRequest, id: Uint8Array): void {
  req.usedLen = req.writer!.write(id.subarray(0, req.length));
  req.status = VIRTIO_BLK_S_OK;
}

/**
 * Writes the status byte (the last writable byte) and sets `req.usedLen` to
 * the bytes written into the writable part, status included.
 */
export function writeStatus(req: BlkRequest): void {
  const writer = req.writer!;
  writer.skip(req.statusOffset - writer.position);
  writer.fill(1, req.status);
  req.usedLen += 1;
}

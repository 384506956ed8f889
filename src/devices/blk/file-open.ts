/**
 * Opening a raw disk image for FileBacking: open(2) flags, the checks on what
 * was opened, and one-line `BLK_IMAGE` errors. Node-only (fs). VIRTIO 1.2
 * §5.2.4 (`capacity` in 512-byte sectors and `blk_size`: the image size must
 * be a whole number of logical blocks); docs/conformance.md "Lifecycle"
 * (read-only images are opened O_RDONLY). An image is a regular file or a
 * block device (file-blockdev.ts); a writable block device is opened O_EXCL.
 *
 * @module
 */
import { constants as fsConstants, type Stats } from "node:fs";
import { stat } from "node:fs/promises";
import { ErrorCode, VirtioError } from "../../errors.ts";
import { errorText } from "../../log.ts";

/** A `BLK_IMAGE` error naming the image. */
export function imageError(
  path: string,
  what: string,
  details: Record<string, string | number> = {},
): VirtioError {
  return new VirtioError(ErrorCode.BLK_IMAGE, `disk image ${path}: ${what}`, { path, ...details });
}

/** The errno name of a Node error ("" if none). */
export function errnoCode(e: unknown): string {
  const c = (e as { code?: unknown } | null)?.code;
  return typeof c === "string" ? c : "";
}

/** Whether `path` names a block device now (false if it cannot be stat'ed: open says why). */
export async function isBlockDevicePath(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isBlockDevice();
  } catch {
    return false;
  }
}

/**
 * open(2) flags: O_RDONLY or O_RDWR, with O_DIRECT when asked and O_EXCL
 * when `exclusive` (a writable block device: EBUSY if mounted or claimed).
 *
 * @throws {VirtioError} `BLK_IMAGE` if O_DIRECT does not exist on this platform.
 */
export function imageOpenFlags(
  path: string,
  readOnly: boolean,
  direct: boolean,
  exclusive = false,
): number {
  let flags = readOnly ? fsConstants.O_RDONLY : fsConstants.O_RDWR;
  if (exclusive) flags |= fsConstants.O_EXCL;
  if (direct) {
    const O_DIRECT = (fsConstants as { O_DIRECT?: number }).O_DIRECT;
    if (O_DIRECT === undefined)
      throw imageError(path, "O_DIRECT is not available on this platform");
    flags |= O_DIRECT;
  }
  return flags;
}

/**
 * The size of an opened image file (block devices: file-blockdev.ts).
 *
 * @throws {VirtioError} `BLK_IMAGE` if it is not a regular file or its size
 *   is not a multiple of the logical block size `lbs`.
 */
export function imageSize(path: string, st: Stats, lbs: number): number {
  if (!st.isFile()) throw imageError(path, "not a regular file");
  if (st.size % lbs !== 0)
    throw imageError(
      path,
      `size ${st.size} is not a multiple of the ${lbs}-byte logical block size`,
      {
        size: st.size,
      },
    );
  return st.size;
}

/** The one-line error for a failed open(2). */
export function openError(
  path: string,
  e: unknown,
  readOnly: boolean,
  direct: boolean,
): VirtioError {
  const code = errnoCode(e);
  switch (code) {
    case "ENOENT":
      return imageError(path, "does not exist", { errno: code });
    case "EACCES":
    case "EPERM":
    case "EROFS":
      return imageError(
        path,
        readOnly ? `cannot be opened (${code})` : `is not writable (${code}); open it read-only`,
        { errno: code },
      );
    case "EISDIR":
      return imageError(path, "not a regular file", { errno: code });
    case "EBUSY":
      return imageError(
        path,
        "is a block device in use (mounted, or held by another program); unmount or release it first",
        { errno: code },
      );
    case "EINVAL":
      if (direct)
        return imageError(path, "the file system does not support O_DIRECT", { errno: code });
      break;
  }
  return imageError(path, `cannot be opened: ${errorText(e)}`, { errno: code });
}

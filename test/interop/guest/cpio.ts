/**
 * A writer for the cpio "newc" format (magic `070701`), the format the Linux
 * kernel unpacks as an initramfs (Documentation/driver-api/early-userspace/
 * buffer-format.rst): each entry is a 110-byte ASCII header of 13 eight-digit
 * hex fields, the NUL-terminated name padded to a multiple of 4, then the
 * data padded to a multiple of 4; the archive ends with `TRAILER!!!`.
 *
 * Parent directories are added automatically before their children, since
 * the kernel creates entries in archive order and does not create parents.
 *
 * @module
 */

/** File type bits of `st_mode`. */
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;

const MAGIC = "070701";
const HEADER_LEN = 110;
const TRAILER = "TRAILER!!!";

/** One header's numeric fields (all fit in 32 bits). */
interface Header {
  ino: number;
  mode: number;
  nlink: number;
  filesize: number;
  rdevmajor: number;
  rdevminor: number;
  namesize: number;
}

const pad4 = (n: number): number => (4 - (n % 4)) % 4;
const hex8 = (n: number): string => n.toString(16).padStart(8, "0");

/** Encode a newc header (uid, gid, mtime, devmajor/minor and check are 0). */
function encodeHeader(h: Header): string {
  const fields = [h.ino, h.mode, 0, 0, h.nlink, 0, h.filesize, 0, 0, h.rdevmajor, h.rdevminor];
  return MAGIC + fields.map(hex8).join("") + hex8(h.namesize) + hex8(0);
}

/** Normalise an archive path: no leading "/" or "./", no empty parts. */
function normalise(path: string): string {
  const parts = path.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.length === 0 || parts.includes("..")) {
    throw new RangeError(`invalid archive path: ${JSON.stringify(path)}`);
  }
  return parts.join("/");
}

/** Builds a newc archive in memory. */
export class CpioWriter {
  readonly #chunks: Uint8Array[] = [];
  readonly #seen = new Map<string, number>(); // path -> type bits
  #ino = 1;
  #finished = false;

  /** Add a directory (and its missing parents). */
  dir(path: string, perm = 0o755): this {
    const p = normalise(path);
    const type = this.#seen.get(p);
    if (type === S_IFDIR) return this;
    if (type !== undefined) throw new RangeError(`${p} already exists and is not a directory`);
    this.#parents(p);
    this.#entry(p, S_IFDIR | perm, new Uint8Array(0), 2);
    return this;
  }

  /** Add a regular file. */
  file(path: string, data: Uint8Array | string, perm = 0o644): this {
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    this.#leaf(normalise(path), S_IFREG | perm, bytes);
    return this;
  }

  /** Add a symbolic link whose content is `target`. */
  symlink(path: string, target: string): this {
    this.#leaf(normalise(path), S_IFLNK | 0o777, new TextEncoder().encode(target));
    return this;
  }

  /** Add a character device node. */
  charDevice(path: string, major: number, minor: number, perm = 0o600): this {
    this.#leaf(normalise(path), S_IFCHR | perm, new Uint8Array(0), major, minor);
    return this;
  }

  /** Whether an entry exists at `path`. */
  has(path: string): boolean {
    return this.#seen.has(normalise(path));
  }

  /** Append the trailer and return the archive. The writer is then closed. */
  finish(): Buffer {
    this.#check();
    this.#entry(TRAILER, 0, new Uint8Array(0), 1, 0, 0, true);
    this.#finished = true;
    return Buffer.concat(this.#chunks);
  }

  #check(): void {
    if (this.#finished) throw new TypeError("CpioWriter: archive already finished");
  }

  #parents(p: string): void {
    const slash = p.lastIndexOf("/");
    if (slash > 0) this.dir(p.slice(0, slash));
  }

  #leaf(p: string, mode: number, data: Uint8Array, major = 0, minor = 0): void {
    if (this.#seen.has(p)) throw new RangeError(`duplicate archive path: ${p}`);
    this.#parents(p);
    this.#entry(p, mode, data, 1, major, minor);
  }

  #entry(
    name: string,
    mode: number,
    data: Uint8Array,
    nlink: number,
    rdevmajor = 0,
    rdevminor = 0,
    trailer = false,
  ): void {
    this.#check();
    const nameBytes = Buffer.from(`${name}\0`, "utf8");
    const header = encodeHeader({
      ino: trailer ? 0 : this.#ino++,
      mode,
      nlink,
      filesize: data.length,
      rdevmajor,
      rdevminor,
      namesize: nameBytes.length,
    });
    this.#chunks.push(Buffer.from(header, "ascii"), nameBytes);
    this.#chunks.push(new Uint8Array(pad4(HEADER_LEN + nameBytes.length)));
    this.#chunks.push(data, new Uint8Array(pad4(data.length)));
    if (!trailer) this.#seen.set(name, mode & 0o170000);
  }
}

/** One entry read back by {@link readCpio} (used by tests). */
export interface CpioEntry {
  readonly name: string;
  readonly mode: number;
  readonly ino: number;
  readonly nlink: number;
  readonly rdevmajor: number;
  readonly rdevminor: number;
  readonly data: Buffer;
}

/** Parse a newc archive up to its trailer; throws RangeError on malformed input. */
export function readCpio(buf: Buffer): CpioEntry[] {
  const out: CpioEntry[] = [];
  let off = 0;
  for (;;) {
    if (off + HEADER_LEN > buf.length) throw new RangeError(`truncated header at ${off}`);
    const h = buf.toString("ascii", off, off + HEADER_LEN);
    if (!h.startsWith(MAGIC)) throw new RangeError(`bad magic at ${off}`);
    const field = (i: number): number => Number.parseInt(h.slice(6 + 8 * i, 14 + 8 * i), 16);
    const namesize = field(11);
    const filesize = field(6);
    const nameEnd = off + HEADER_LEN + namesize;
    const dataStart = nameEnd + pad4(HEADER_LEN + namesize);
    if (dataStart + filesize > buf.length) throw new RangeError(`truncated entry at ${off}`);
    const name = buf.toString("utf8", off + HEADER_LEN, nameEnd - 1);
    if (name === TRAILER) return out;
    out.push({
      name,
      ino: field(0),
      mode: field(1),
      nlink: field(4),
      rdevmajor: field(9),
      rdevminor: field(10),
      data: buf.subarray(dataStart, dataStart + filesize),
    });
    off = dataStart + filesize + pad4(filesize);
  }
}

/**
 * Recognises disk image formats that are not raw from their first and last
 * bytes, so that a qcow2 (or VMDK, VHDX, …) file is not served to a guest as
 * if its metadata were disk sectors. Portable (bytes in, a name out). VIRTIO
 * 1.2 §5.2.6 (the device's sectors are the store's bytes: only a raw image
 * gives the guest its disk); docs/blk.md "Image formats".
 *
 * The signatures are those the formats' specifications define (and QEMU's
 * block drivers probe for):
 *
 * | format    | where                 | signature                                                   |
 * | --------- | --------------------- | ----------------------------------------------------------- |
 * | qcow      | 0                     | `QFI\xfb`, big-endian version 1                             |
 * | qcow2     | 0                     | `QFI\xfb`, big-endian version ≥ 2                           |
 * | vmdk      | 0                     | `KDMV` (sparse extent) or `COWD` (ESX COW extent)           |
 * | vmdk      | 0                     | a text descriptor: `#` comments and blank lines, then `version=1..3` |
 * | vhdx      | 0                     | `vhdxfile`                                                  |
 * | vdi       | 0x40                  | little-endian 0xbeda107f                                    |
 * | vpc (VHD) | 0, or the last 512 B  | `conectix` (dynamic disks copy the footer to the start)     |
 * | qed       | 0                     | `QED\0`                                                     |
 * | luks      | 0                     | `LUKS\xba\xbe`, big-endian version 1 or 2                   |
 * | parallels | 0                     | `WithoutFreeSpace` / `WithouFreSpacExt`, little-endian version 2 |
 * | bochs     | 0                     | `Bochs Virtual HD Image`, `Redolog`, `Growing`, version 1 or 2 |
 * | cloop     | 0                     | the `#!/bin/sh` / `#V2.0 Format` / `modprobe cloop` preamble |
 * | dmg       | the last 512 B        | `koly`, big-endian version 4 and header size 512            |
 *
 * Each check also needs the bytes its header occupies: a file too small to
 * hold one is not that format.
 *
 * @module
 */

/** A non-raw image format {@link detectImageFormat} recognises. */
export type ImageFormat =
  | "qcow"
  | "qcow2"
  | "vmdk"
  | "vhdx"
  | "vdi"
  | "vpc"
  | "qed"
  | "luks"
  | "parallels"
  | "bochs"
  | "cloop"
  | "dmg";

/** Bytes from offset 0 the probe looks at (a shorter head is a smaller file). */
export const FORMAT_PROBE_HEAD_BYTES = 4096;
/** Bytes at the end of the image the probe looks at (footers: VHD, DMG). */
export const FORMAT_PROBE_TAIL_BYTES = 512;

const ascii = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0));

/** Whether `buf` holds `sig` at `at`. */
function has(buf: Uint8Array, at: number, sig: Uint8Array): boolean {
  if (buf.length < at + sig.length) return false;
  for (let i = 0; i < sig.length; i++) if (buf[at + i] !== sig[i]) return false;
  return true;
}

const be32 = (b: Uint8Array, at: number): number =>
  new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(at, false);
const le32 = (b: Uint8Array, at: number): number =>
  new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(at, true);

const QCOW = ascii("QFI\xfb");
const QCOW1_HEADER = 48;
const QCOW2_HEADER = 72;
const VMDK4 = ascii("KDMV");
const VMDK3 = ascii("COWD");
const VHDX = ascii("vhdxfile");
const VDI_SIGNATURE = 0xbeda107f;
const VPC = ascii("conectix");
const QED = ascii("QED\0");
const QED_HEADER = 64;
const LUKS = ascii("LUKS\xba\xbe");
const PARALLELS = [ascii("WithoutFreeSpace"), ascii("WithouFreSpacExt")];
const BOCHS = [ascii("Bochs Virtual HD Image\0"), ascii("Redolog\0"), ascii("Growing\0")];
const BOCHS_VERSIONS = [0x00010000, 0x00020000];
const CLOOP = ascii(
  "#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n",
);
const DMG = ascii("koly");

/** Formats told apart by their first bytes, checked in order. */
const HEAD_CHECKS: readonly [ImageFormat, (h: Uint8Array) => boolean][] = [
  ["qcow", (h) => h.length >= QCOW1_HEADER && has(h, 0, QCOW) && be32(h, 4) === 1],
  ["qcow2", (h) => h.length >= QCOW2_HEADER && has(h, 0, QCOW) && be32(h, 4) >= 2],
  ["vmdk", (h) => has(h, 0, VMDK4) || has(h, 0, VMDK3) || isVmdkDescriptor(h)],
  ["vhdx", (h) => has(h, 0, VHDX)],
  ["vdi", (h) => h.length >= 0x48 && le32(h, 0x40) === VDI_SIGNATURE],
  ["vpc", (h) => has(h, 0, VPC)],
  ["qed", (h) => h.length >= QED_HEADER && has(h, 0, QED)],
  ["luks", (h) => h.length >= 8 && has(h, 0, LUKS) && [1, 2].includes((h[6]! << 8) | h[7]!)],
  ["parallels", (h) => h.length >= 64 && PARALLELS.some((m) => has(h, 0, m)) && le32(h, 16) === 2],
  [
    "bochs",
    (h) =>
      h.length >= 512 &&
      has(h, 0, BOCHS[0]!) &&
      has(h, 32, BOCHS[1]!) &&
      has(h, 48, BOCHS[2]!) &&
      BOCHS_VERSIONS.includes(le32(h, 64)),
  ],
  ["cloop", (h) => has(h, 0, CLOOP)],
];

/**
 * A VMDK text descriptor: lines starting with `#` and blank lines (spaces,
 * then LF or CR LF), then a `version=1`, `2` or `3` line.
 */
function isVmdkDescriptor(h: Uint8Array): boolean {
  let p = 0;
  while (p < h.length) {
    const nl = h.indexOf(0x0a, p);
    const end = nl < 0 ? h.length : nl;
    let line = String.fromCharCode(...h.subarray(p, Math.min(end, p + 64)));
    if (line.endsWith("\r")) line = line.slice(0, -1);
    if (line.startsWith("#") || (nl >= 0 && /^ *$/.test(line))) {
      if (nl < 0) return false;
      p = nl + 1;
      continue;
    }
    return nl >= 0 && /^version=[123]$/.test(line);
  }
  return false;
}

/**
 * The non-raw format whose signature `head` (the image's first bytes, up to
 * {@link FORMAT_PROBE_HEAD_BYTES}) or `tail` (its last
 * {@link FORMAT_PROBE_TAIL_BYTES}, when it has that many) carries, or null
 * for anything else (a raw image, as far as can be told).
 */
export function detectImageFormat(head: Uint8Array, tail?: Uint8Array): ImageFormat | null {
  for (const [format, check] of HEAD_CHECKS) if (check(head)) return format;
  if (tail === undefined || tail.length < FORMAT_PROBE_TAIL_BYTES) return null;
  const footer = tail.subarray(tail.length - FORMAT_PROBE_TAIL_BYTES);
  if (has(footer, 0, VPC)) return "vpc";
  if (has(footer, 0, DMG) && be32(footer, 4) === 4 && be32(footer, 8) === 512) return "dmg";
  return null;
}

/** Reads `length` bytes at `offset` of the image (whole blocks). */
export type ProbeRead = (offset: number, length: number) => Promise<Uint8Array>;

/**
 * Reads an image's first and last bytes (whole blocks of `lbs`, so O_DIRECT
 * accepts them) and returns the non-raw format they carry, or null.
 */
export async function probeImageFormat(
  size: number,
  lbs: number,
  read: ProbeRead,
): Promise<ImageFormat | null> {
  if (size === 0) return null;
  const head = await read(0, Math.min(size, Math.ceil(FORMAT_PROBE_HEAD_BYTES / lbs) * lbs));
  const tailBytes = Math.min(size, Math.max(lbs, FORMAT_PROBE_TAIL_BYTES));
  return detectImageFormat(head, await read(size - tailBytes, tailBytes));
}

/** How a format is usually called. */
const NAMES: Record<ImageFormat, string> = {
  qcow: "qcow (version 1)",
  qcow2: "qcow2",
  vmdk: "VMDK",
  vhdx: "VHDX",
  vdi: "VDI (VirtualBox)",
  vpc: "VHD (vpc)",
  qed: "QED",
  luks: "LUKS (encrypted)",
  parallels: "Parallels",
  bochs: "Bochs",
  cloop: "cloop",
  dmg: "DMG",
};

/**
 * Why an image in `format` is refused, for a `BLK_IMAGE` message after
 * "disk image PATH: ".
 */
export function formatRefusal(format: ImageFormat): string {
  return (
    `is a ${NAMES[format]} image, not raw: serve it through qemu-nbd ` +
    `(docs/blk.md, "Image formats") or pass --format raw to serve its bytes as they are`
  );
}

/**
 * QEMU-style names of virtio-blk request types for log and trace lines.
 * VIRTIO 1.2 §5.2.6 (request types). The logger itself is the project's
 * (../../log.ts).
 *
 * @module
 */

const TYPE_NAMES: Readonly<Record<number, string>> = {
  0: "IN",
  1: "OUT",
  4: "FLUSH",
  8: "GET_ID",
  10: "GET_LIFETIME",
  11: "DISCARD",
  13: "WRITE_ZEROES",
  14: "SECURE_ERASE",
};

/** The spec name of a request type without its prefix, or the number. */
export function blkTypeName(type: number): string {
  return TYPE_NAMES[type] ?? String(type);
}

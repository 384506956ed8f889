/**
 * Seed inputs of the blk-request target: well-formed IN, OUT, FLUSH,
 * GET_ID, DISCARD and WRITE_ZEROES requests on 512 and 4096-byte devices.
 *
 * @module
 */

/** Header byte, segments (length, writable), then the readable bytes. */
function req(bits: number, segs: [number, boolean][], readable: number[]): Uint8Array {
  const out = [bits, segs.length - 1];
  for (const [len, w] of segs) out.push(len & 0xff, len >> 8, w ? 1 : 0);
  return new Uint8Array([...out, ...readable]);
}

function hdr(type: number, sector: number): number[] {
  return [type, 0, 0, 0, 0, 0, 0, 0, sector & 0xff, (sector >> 8) & 0xff, 0, 0, 0, 0, 0, 0];
}

function seg(sector: number, num: number, flags: number): number[] {
  return [sector & 0xff, sector >> 8, 0, 0, 0, 0, 0, 0, num, 0, 0, 0, flags, 0, 0, 0];
}

export function blkRequestSeeds(): Uint8Array[] {
  return [
    req(
      0,
      [
        [16, false],
        [512, true],
        [1, true],
      ],
      hdr(0, 8),
    ),
    req(
      0,
      [
        [16, false],
        [1024, false],
        [1, true],
      ],
      [...hdr(1, 2), ...new Array<number>(64).fill(7)],
    ),
    req(
      2,
      [
        [16, false],
        [4096, true],
        [1, true],
      ],
      hdr(0, 8),
    ),
    req(
      0,
      [
        [16, false],
        [1, true],
      ],
      hdr(4, 0),
    ),
    req(
      0,
      [
        [16, false],
        [20, true],
        [1, true],
      ],
      hdr(8, 0),
    ),
    req(
      0,
      [
        [48, false],
        [1, true],
      ],
      [...hdr(11, 0), ...seg(0, 8, 0), ...seg(64, 8, 0)],
    ),
    req(
      0,
      [
        [32, false],
        [1, true],
      ],
      [...hdr(13, 0), ...seg(16, 16, 1)],
    ),
    req(
      1,
      [
        [16, false],
        [512, false],
        [1, true],
      ],
      hdr(1, 0),
    ),
  ];
}

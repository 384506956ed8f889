import { test } from "node:test";
import assert from "node:assert/strict";
import {
  detectImageFormat,
  FORMAT_PROBE_HEAD_BYTES,
  formatRefusal,
  type ImageFormat,
  probeImageFormat,
  type ProbeRead,
} from "./image-format.ts";

const ascii = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0));

/** A 4 KiB head with `parts` written at their offsets. */
function head(...parts: [number, Uint8Array | string][]): Uint8Array {
  const h = new Uint8Array(FORMAT_PROBE_HEAD_BYTES);
  for (const [at, p] of parts) h.set(typeof p === "string" ? ascii(p) : p, at);
  return h;
}
const u32be = (v: number): Uint8Array => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v, false);
  return b;
};
const u32le = (v: number): Uint8Array => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v, true);
  return b;
};

/** Deterministic pseudo-random bytes (xorshift32). */
function noise(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

const HEADS: [ImageFormat, Uint8Array][] = [
  ["qcow", head([0, "QFI\xfb"], [4, u32be(1)])],
  ["qcow2", head([0, "QFI\xfb"], [4, u32be(2)])],
  ["qcow2", head([0, "QFI\xfb"], [4, u32be(3)])],
  ["vmdk", head([0, "KDMV"], [4, u32le(1)])],
  ["vmdk", head([0, "COWD"], [4, u32le(1)])],
  [
    "vmdk",
    head([0, '# Disk DescriptorFile\nversion=1\nCID=fffffffe\ncreateType="monolithicFlat"\n']),
  ],
  ["vmdk", head([0, "# Disk DescriptorFile\r\n  \r\n# comment\r\nversion=3\r\n"])],
  ["vhdx", head([0, "vhdxfile"], [8, "Q\0E\0M\0U\0"])],
  ["vdi", head([0, "<<< Oracle VM VirtualBox Disk Image >>>\n"], [0x40, u32le(0xbeda107f)])],
  ["vpc", head([0, "conectix"], [8, u32be(2)])],
  ["qed", head([0, "QED\0"], [4, u32le(4096)])],
  ["luks", head([0, "LUKS\xba\xbe"], [6, new Uint8Array([0, 1])], [8, "aes"])],
  ["luks", head([0, "LUKS\xba\xbe"], [6, new Uint8Array([0, 2])])],
  ["parallels", head([0, "WithoutFreeSpace"], [16, u32le(2)])],
  ["parallels", head([0, "WithouFreSpacExt"], [16, u32le(2)])],
  [
    "bochs",
    head(
      [0, "Bochs Virtual HD Image\0"],
      [32, "Redolog\0"],
      [48, "Growing\0"],
      [64, u32le(0x20000)],
    ),
  ],
  [
    "cloop",
    head([
      0,
      "#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n",
    ]),
  ],
];

test("each format's header is recognised from the image's first bytes", () => {
  for (const [format, h] of HEADS) assert.equal(detectImageFormat(h), format, format);
});

test("footers: a fixed VHD's conectix and a DMG's koly in the last 512 bytes", () => {
  const zero = new Uint8Array(FORMAT_PROBE_HEAD_BYTES);
  const tail = (...parts: [number, Uint8Array | string][]): Uint8Array => {
    const t = new Uint8Array(1024);
    for (const [at, p] of parts) t.set(typeof p === "string" ? ascii(p) : p, 512 + at);
    return t;
  };
  assert.equal(detectImageFormat(zero, tail([0, "conectix"])), "vpc");
  assert.equal(detectImageFormat(zero, tail([0, "koly"], [4, u32be(4)], [8, u32be(512)])), "dmg");
  // koly with another version or header size is not a DMG trailer.
  assert.equal(detectImageFormat(zero, tail([0, "koly"], [4, u32be(3)], [8, u32be(512)])), null);
  // Only the footer's own position counts.
  assert.equal(detectImageFormat(zero, tail([-512, "conectix"])), null);
});

test("raw images: zeroes, random bytes, an MBR, near misses", () => {
  assert.equal(detectImageFormat(new Uint8Array(FORMAT_PROBE_HEAD_BYTES)), null);
  for (let seed = 1; seed <= 64; seed++)
    assert.equal(detectImageFormat(noise(FORMAT_PROBE_HEAD_BYTES, seed), noise(512, ~seed)), null);
  const mbr = head(
    [446, new Uint8Array([0x80, 0, 2, 0, 0x83])],
    [510, new Uint8Array([0x55, 0xaa])],
  );
  assert.equal(detectImageFormat(mbr), null);
  // Signatures with the wrong version, or at the wrong place.
  assert.equal(detectImageFormat(head([0, "QFI\xfb"], [4, u32be(0)])), null);
  assert.equal(detectImageFormat(head([0, "LUKS\xba\xbe"], [6, new Uint8Array([0, 3])])), null);
  assert.equal(detectImageFormat(head([0, "WithoutFreeSpace"], [16, u32le(1)])), null);
  assert.equal(detectImageFormat(head([1, "vhdxfile"])), null);
  assert.equal(detectImageFormat(head([0x44, u32le(0xbeda107f)])), null);
  // A text file that is not a VMDK descriptor.
  assert.equal(detectImageFormat(head([0, "# notes\nhello=1\nversion=1\n"])), null);
  assert.equal(detectImageFormat(head([0, "# Disk DescriptorFile\nversion=4\n"])), null);
});

test("an image too small to hold a header is not that format", () => {
  assert.equal(detectImageFormat(new Uint8Array(0)), null);
  assert.equal(detectImageFormat(ascii("QFI")), null);
  assert.equal(detectImageFormat(ascii("QFI\xfb\0\0\0\x02")), null); // 8 of qcow2's 72 bytes
  assert.equal(detectImageFormat(ascii("QED\0")), null);
  assert.equal(detectImageFormat(ascii("vhdxfil")), null);
  assert.equal(detectImageFormat(ascii("LUKS\xba\xbe")), null);
  assert.equal(
    detectImageFormat(head([0, "WithoutFreeSpace"], [16, u32le(2)]).subarray(0, 63)),
    null,
  );
  // A tail shorter than a footer is ignored.
  assert.equal(detectImageFormat(new Uint8Array(512), ascii("conectix")), null);
  // The first bytes that hold each header are enough.
  for (const [format, h] of HEADS.filter(([f]) => f !== "bochs"))
    assert.equal(detectImageFormat(h.subarray(0, 128)), format, format);
});

test("probeImageFormat reads the head and the last block of an image", async () => {
  const reads: [number, number][] = [];
  const reader =
    (img: Uint8Array): ProbeRead =>
    (offset, length) => {
      reads.push([offset, length]);
      return Promise.resolve(img.slice(offset, offset + length));
    };
  const img = new Uint8Array(64 * 1024);
  assert.equal(await probeImageFormat(img.length, 512, reader(img)), null);
  assert.deepEqual(reads, [
    [0, 4096],
    [65024, 512],
  ]);
  img.set(ascii("conectix"), img.length - 512);
  reads.length = 0;
  assert.equal(await probeImageFormat(img.length, 16384, reader(img)), "vpc");
  assert.deepEqual(reads, [
    [0, 16384],
    [49152, 16384],
  ]);
  img.set(head([0, "QFI\xfb"], [4, u32be(3)]));
  assert.equal(await probeImageFormat(img.length, 512, reader(img)), "qcow2");
  reads.length = 0;
  assert.equal(await probeImageFormat(0, 512, reader(img)), null);
  assert.deepEqual(reads, []);
  const small = head([0, "vhdxfile"]).subarray(0, 512);
  assert.equal(await probeImageFormat(512, 512, reader(small)), "vhdx");
});

test("the refusal names the format and both ways out, on one line", () => {
  const m = formatRefusal("qcow2");
  assert.match(m, /^is a qcow2 image, not raw: serve it through qemu-nbd .* or pass --format raw/);
  assert.ok(!m.includes("\n"));
});

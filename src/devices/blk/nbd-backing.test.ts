// NbdBacking against the scriptable fake NBD server: how backing calls map to
// NBD commands (splitting, flags, fallbacks), and what it refuses.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { ErrorCode, isVirtioError } from "../../errors.ts";
import { silentLogger } from "../../log.ts";
import {
  DEFAULT_FLAGS,
  FakeNbdServer,
  type FakeBehaviour,
} from "../../nbd/fake-server-test-support.ts";
import * as nbd from "../../spec/nbd.ts";
import { NbdBacking, probeNbd } from "./nbd-backing.ts";
import { openNodeBacking } from "./node-backing.ts";

const servers: FakeNbdServer[] = [];
after(async () => {
  for (const s of servers) await s.stop();
});
async function server(b: FakeBehaviour = {}): Promise<FakeNbdServer> {
  const s = await FakeNbdServer.start(b);
  servers.push(s);
  return s;
}
const OPTS = { connectTimeoutMs: 2000, requestTimeoutMs: 2000 };

test("large reads and writes are split at the maximum payload, aligned to the preferred block size", async () => {
  const s = await server({ blockSize: [512, 4096, 65536 + 512], size: 1 << 20 });
  const disk = await NbdBacking.open(s.uri, OPTS);
  const data = new Uint8Array(200 * 1024).map((_, i) => (i * 7) & 0xff);
  // Three views, deliberately not aligned to the pieces.
  await disk.writev(4096, [
    data.subarray(0, 1000),
    data.subarray(1000, 150_000),
    data.subarray(150_000),
  ]);
  const back = new Uint8Array(data.length);
  await disk.readv(4096, [back.subarray(0, 3), back.subarray(3)]);
  assert.deepEqual(back, data);
  assert.deepEqual(s.disk.subarray(4096, 4096 + data.length), data);
  const io = s.requests.filter((r) => r.type === nbd.NBD_CMD_READ || r.type === nbd.NBD_CMD_WRITE);
  assert.ok(io.length >= 8);
  for (const r of io) {
    assert.ok(r.length <= 65536 + 512, `piece of ${r.length}`);
    assert.equal(r.offset % 512, 0);
    assert.equal(r.length % 512, 0);
  }
  assert.equal(io[0]!.length, 65536, "pieces are multiples of the preferred block size");
  await disk.close();
});

test("flush, trim, write-zeroes and FUA follow the transmission flags", async () => {
  const s = await server();
  const disk = await NbdBacking.open(s.uri, { ...OPTS, fua: true });
  s.disk.fill(9);
  await disk.writeZeroes(0, 8192, false);
  await disk.writeZeroes(8192, 4096, true);
  await disk.discard(65536, 4096);
  await disk.writev(0, [new Uint8Array(512)]);
  await disk.flush();
  const seen = s.requests.map((r) => [r.type, r.flags, r.offset, r.length]);
  const { NBD_CMD_FLAG_FUA: FUA, NBD_CMD_FLAG_NO_HOLE: NO_HOLE } = nbd;
  assert.deepEqual(seen, [
    [nbd.NBD_CMD_WRITE_ZEROES, FUA | NO_HOLE, 0, 8192],
    [nbd.NBD_CMD_WRITE_ZEROES, FUA, 8192, 4096],
    [nbd.NBD_CMD_TRIM, FUA, 65536, 4096],
    [nbd.NBD_CMD_WRITE, FUA, 0, 512],
    [nbd.NBD_CMD_FLUSH, 0, 0, 0],
  ]);
  await disk.close();
});

test("without the flags: zeroes are written, trim and flush are not sent", async () => {
  const s = await server({ flags: nbd.NBD_FLAG_HAS_FLAGS });
  const disk = await NbdBacking.open(s.uri, { ...OPTS, fua: true });
  s.disk.fill(9);
  await disk.writeZeroes(0, (3 << 20) >> 2, true);
  await disk.discard(0, 4096);
  await disk.flush();
  assert.ok(s.requests.every((r) => r.type === nbd.NBD_CMD_WRITE && r.flags === 0));
  assert.ok(s.disk.subarray(0, (3 << 20) >> 2).every((b) => b === 0));
  assert.equal(s.disk[(3 << 20) >> 2], 9);
  await disk.close();
});

test("read-only exports refuse writes; the spec can ask for read-only too", async () => {
  const s = await server({ flags: DEFAULT_FLAGS | nbd.NBD_FLAG_READ_ONLY });
  const disk = await NbdBacking.open(s.uri, OPTS);
  assert.equal(disk.readOnly, true);
  await assert.rejects(disk.writev(0, [new Uint8Array(512)]), (e) =>
    isVirtioError(e, ErrorCode.NBD_EXPORT),
  );
  await disk.close();
  const rw = await server();
  const ro = await openNodeBacking(
    { kind: "nbd", uri: rw.uri, readOnly: true },
    { logicalBlockSize: 512, logger: silentLogger },
  );
  assert.equal(ro.readOnly, true);
  await ro.close();
});

test("exports that cannot be this disk: one clear error", async () => {
  const big = await server({ blockSize: [4096, 4096, 1 << 20] });
  await assert.rejects(NbdBacking.open(big.uri, OPTS), (e) => {
    assert.ok(isVirtioError(e, ErrorCode.NBD_EXPORT));
    assert.match(e.message, /minimum block size 4096 is larger than the logical block size 512/);
    return true;
  });
  const disk = await NbdBacking.open(big.uri, { ...OPTS, logicalBlockSize: 4096 });
  await disk.readv(0, [new Uint8Array(8192)]);
  await disk.close();
  const odd = await server({ size: (1 << 20) + 512 });
  await assert.rejects(
    openNodeBacking(
      { kind: "nbd", uri: odd.uri },
      { logicalBlockSize: 4096, logger: silentLogger },
    ),
    /size 1049088 is not a multiple of the logical block size 4096/,
  );
});

test("out-of-range calls reject before anything is sent; probeNbd reports the flags", async () => {
  const s = await server({
    flags: DEFAULT_FLAGS | nbd.NBD_FLAG_CAN_MULTI_CONN,
    blockSize: [1, 4096, 1 << 25],
  });
  const disk = await NbdBacking.open(s.uri, { ...OPTS, connections: 3 });
  assert.equal(disk.connections, 3);
  await assert.rejects(disk.readv(disk.size - 512, [new Uint8Array(1024)]), RangeError);
  assert.equal(s.requests.length, 0);
  await disk.close();
  const p = await probeNbd(s.uri, OPTS);
  assert.deepEqual(
    [p.size, p.canMultiConn, p.canFlush, p.canTrim, p.canWriteZeroes, p.readOnly, p.minBlockSize],
    [1 << 20, true, true, true, true, false, 1],
  );
});

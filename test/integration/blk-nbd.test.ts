/**
 * virtio-blk end to end on an NBD export: the driver in a worker, the queues
 * on a dataplane worker that opens the `"nbd"` backing spec itself, the
 * export served by the scriptable fake NBD server on the test thread. A
 * server error or a dropped connection reaches the guest as
 * VIRTIO_BLK_S_IOERR, and later requests succeed (VIRTIO 1.2 §5.2.6;
 * docs/conformance.md "NBD server replies").
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { NbdBackingSpec } from "../../src/devices/blk/backing-spec.ts";
import { FakeNbdServer, serveCorrectly } from "../../src/nbd/fake-server-test-support.ts";
import { errorChunk } from "../../src/nbd/test-support.ts";
import * as blk from "../../src/spec/blk.ts";
import * as nbd from "../../src/spec/nbd.ts";
import { VIRTIO_CONFIG_S_DRIVER_OK as DRIVER_OK } from "../../src/spec/virtio.ts";
import { InprocBlkRig, pattern } from "./blk-harness.ts";

const { VIRTIO_BLK_S_OK: OK, VIRTIO_BLK_S_IOERR: IOERR } = blk;
let failReads = false;
let server: FakeNbdServer;
let rig: InprocBlkRig;

before(async () => {
  server = await FakeNbdServer.start({
    size: 1 << 20,
    onRequest: (req, conn, srv) => {
      if (failReads && req.type === nbd.NBD_CMD_READ)
        conn.send(errorChunk(req.cookie, nbd.NBD_EIO, "injected"));
      else serveCorrectly(req, conn, srv);
    },
  });
  rig = await InprocBlkRig.start({
    layout: "split",
    backing: {
      kind: "nbd",
      uri: server.uri,
      requestTimeoutMs: 2000,
    } satisfies NbdBackingSpec,
  });
  const { status } = await rig.init();
  assert.equal(status & DRIVER_OK, DRIVER_OK);
});
after(async () => {
  await rig.close();
  await server.stop();
});

test("OUT, IN, FLUSH, WRITE_ZEROES reach the NBD server", async () => {
  const data = pattern(4096, 3);
  assert.equal(
    (await rig.one({ type: blk.VIRTIO_BLK_T_OUT, sector: 8, out: data, piece: 700 })).status,
    OK,
  );
  assert.deepEqual(server.disk.subarray(8 * 512, 8 * 512 + 4096), data);
  const r = await rig.one({ type: blk.VIRTIO_BLK_T_IN, sector: 8, inLen: 4096, piece: 512 });
  assert.equal(r.status, OK);
  assert.deepEqual(r.data, data);
  assert.equal((await rig.one({ type: blk.VIRTIO_BLK_T_FLUSH })).status, OK);
  assert.ok(server.requests.some((q) => q.type === nbd.NBD_CMD_FLUSH));
});

test("a server error is VIRTIO_BLK_S_IOERR; the next request succeeds", async () => {
  failReads = true;
  const bad = await rig.one({ type: blk.VIRTIO_BLK_T_IN, sector: 0, inLen: 512 });
  assert.equal(bad.status, IOERR);
  assert.ok(
    rig.log.errors.some((l) => /NBD_CMD_READ \[0, \+512\) failed with NBD_EIO: injected/.test(l)),
    rig.log.errors.join("\n"),
  );
  failReads = false;
  assert.equal((await rig.one({ type: blk.VIRTIO_BLK_T_IN, sector: 0, inLen: 512 })).status, OK);
});

test("the server drops every connection: requests fail or wait, then succeed again", async () => {
  server.dropAll();
  const t0 = Date.now();
  let status: number | undefined;
  while (Date.now() - t0 < 5000) {
    status = (await rig.one({ type: blk.VIRTIO_BLK_T_IN, sector: 8, inLen: 512 })).status;
    if (status === OK) break;
    assert.equal(status, IOERR);
  }
  assert.equal(status, OK);
  assert.ok(server.connections >= 2, "the dataplane worker reconnected");
});

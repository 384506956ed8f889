/**
 * serveVhostUserBlk (src/devices/blk/serve-vhost-user.ts): a disk served in
 * one call — a store object written in the program, and an image file on a
 * worker thread — written and read back by the project's vhost-user
 * front-end (qemu/qemu docs/interop/vhost-user.rst, VIRTIO 1.2 §5.2), then
 * closed: the socket is gone and the data is on the disk.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { silentLogger } from "../../src/log.ts";
import { MemoryBacking } from "../../src/devices/blk/backing.ts";
import { serveVhostUserBlk } from "../../src/devices/blk/serve-vhost-user.ts";
import { VhostUserBlk } from "../../src/devices/blk/vhost-user-frontend.ts";

async function roundTrip(socket: string, at: number): Promise<Uint8Array> {
  const disk = await VhostUserBlk.connect(socket, { numQueues: 2 });
  try {
    const data = Uint8Array.from({ length: 16384 }, (_, i) => (i * 13) & 0xff);
    await disk.write(at, data);
    const back = new Uint8Array(data.length);
    await disk.read(at, back);
    assert.deepEqual(back, data);
    return data;
  } finally {
    await disk.close();
  }
}

test("serveVhostUserBlk: a store object on the calling thread, an image on a worker thread", async () => {
  const dir = mkdtempSync(join(tmpdir(), "serve-"));
  try {
    const bytes = new Uint8Array(4 << 20);
    const store = new MemoryBacking(bytes, { inPlace: true });
    const socket = join(dir, "mem.sock");
    const mem = await serveVhostUserBlk({
      socket,
      backing: store,
      numQueues: 2,
      logger: silentLogger,
    });
    assert.deepEqual(mem.info, { size: 4 << 20, readOnly: false });
    const data = await roundTrip(socket, 8192);
    await mem.close();
    assert.equal(existsSync(socket), false, "the socket file is removed");
    assert.deepEqual(bytes.subarray(8192, 8192 + data.length), data);
    await assert.rejects(store.readv(0, [new Uint8Array(512)]), /closed/, "close() closes the store");

    const image = join(dir, "disk.img");
    writeFileSync(image, new Uint8Array(8 << 20));
    const fileSocket = join(dir, "file.sock");
    const file = await serveVhostUserBlk({
      socket: fileSocket,
      backing: { kind: "file", path: image },
      numQueues: 2,
      ioThreads: 2,
      logger: silentLogger,
    });
    const written = await roundTrip(fileSocket, 1 << 20);
    await file.close();
    await file.close(); // idempotent
    assert.deepEqual(
      new Uint8Array(readFileSync(image)).subarray(1 << 20, (1 << 20) + written.length),
      written,
    );

    await assert.rejects(serveVhostUserBlk({ backing: store }), /exactly one of socket and fd/);
    await assert.rejects(
      serveVhostUserBlk({
        socket,
        backing: { kind: "file", path: join(dir, "missing.img") },
        logger: silentLogger,
      }),
      /missing\.img/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

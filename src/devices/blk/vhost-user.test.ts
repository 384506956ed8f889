import assert from "node:assert/strict";
import { splitOnly } from "../../testing/index.ts";
import { describe, test } from "node:test";
import { setImmediate as tick } from "node:timers/promises";
import { MemoryBacking } from "./backing.ts";
import type { GuestMemory } from "../../memory/guest-memory.ts";
import { DriverQueue, type UsedBuffer } from "../../ring/driver-queue.ts";
import { vringLayout } from "../../ring/layout.ts";
import {
  BlkConfig,
  VIRTIO_BLK_F_CONFIG_WCE,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
} from "../../spec/blk.ts";
import { VhostUserRequest as R } from "../../spec/vhost-user.ts";
import { hasFeature } from "../../spec/virtio.ts";
import {
  decodeConfig,
  decodeU64,
  decodeVringState,
  encodeConfig,
  encodeSingleMemRegion,
  encodeU64,
  encodeVringAddr,
  encodeVringFile,
  encodeVringState,
} from "../../vhost-user/codec.ts";
import { VhostUserBlkBackend } from "./vhost-user.ts";
import { Harness } from "../../vhost-user/test-support.ts";

const MEM = 1 << 20;
const UVA = 0x7f00_0000_0000n;
const DISK = 1 << 20;
const LAYOUT = vringLayout(16, 0x1000);
const HDR = 0x2_0000;
const DATA = 0x3_0000;
const STATUS = 0x4_0000;

async function completed(
  h: Harness<VhostUserBlkBackend>,
  drv: DriverQueue<string>,
): Promise<UsedBuffer<string>> {
  for (let i = 0; i < 1000; i++) {
    const u = drv.getUsed();
    if (u !== null) return u;
    await h.idle();
    await tick();
  }
  throw new Error("request not completed");
}

function header(guest: GuestMemory, type: number, sector: bigint): void {
  guest.writeU32(HDR, type);
  guest.writeU32(HDR + 4, 0);
  guest.writeU64(HDR + 8, sector);
}

describe("virtio-blk over vhost-user", { timeout: 10_000 }, () => {
  test("features, config, write then read back, SET_CONFIG writeback, GET_VRING_BASE", async () => {
    const { backend: blk, device } = VhostUserBlkBackend.withBacking({
      backing: new MemoryBacking(DISK),
      numQueues: 2,
      queueSize: 16,
    });
    const h = new Harness({ backend: blk, dataplane: device });
    const [f] = await h.call(R.GET_FEATURES);
    const offered = decodeU64(f!.payload);
    assert.ok(hasFeature(offered, VIRTIO_BLK_F_CONFIG_WCE));
    await h.call(R.SET_FEATURES, encodeU64(splitOnly(offered)));
    await h.call(R.SET_PROTOCOL_FEATURES, encodeU64(0xa209n));
    await h.expectReply(R.GET_QUEUE_NUM, undefined, encodeU64(2n));
    const [c] = await h.call(
      R.GET_CONFIG,
      encodeConfig({ offset: 0, flags: 0, data: new Uint8Array(57) }),
    );
    const cfg = decodeConfig(c!.payload);
    const dv = new DataView(cfg.data.buffer, cfg.data.byteOffset, cfg.data.byteLength);
    assert.equal(cfg.data.length, 57);
    assert.equal(dv.getBigUint64(BlkConfig.capacity, true), BigInt(DISK / 512));
    assert.equal(dv.getUint16(BlkConfig.num_queues, true), 2);

    const memfd = h.fds.memfd(MEM);
    const guest = h.guestMemory(memfd);
    await h.call(
      R.ADD_MEM_REG,
      encodeSingleMemRegion({
        guestPhysAddr: 0n,
        memorySize: BigInt(MEM),
        userspaceAddr: UVA,
        mmapOffset: 0n,
      }),
      [memfd],
    );
    const drv = new DriverQueue<string>(guest, LAYOUT);
    const kick = h.fds.eventfd();
    const uva = (gpa: number) => UVA + BigInt(gpa);
    await h.call(R.SET_VRING_NUM, encodeVringState({ index: 0, num: 16 }));
    await h.call(
      R.SET_VRING_ADDR,
      encodeVringAddr({
        index: 0,
        flags: 0,
        desc: uva(LAYOUT.descAddr),
        used: uva(LAYOUT.usedAddr),
        avail: uva(LAYOUT.availAddr),
        log: 0n,
      }),
    );
    await h.call(R.SET_VRING_KICK, encodeVringFile({ index: 0, noFd: false }), [kick]);
    await h.call(R.SET_VRING_CALL, encodeVringFile({ index: 0, noFd: false }), [h.fds.eventfd()]);
    await h.call(R.SET_VRING_ENABLE, encodeVringState({ index: 0, num: 1 }));
    assert.ok(device.engine(0) !== undefined);

    // OUT: 4 KiB at sector 8.
    const pattern = Uint8Array.from({ length: 4096 }, (_, i) => (i * 7 + 3) & 0xff);
    header(guest, VIRTIO_BLK_T_OUT, 8n);
    guest.write(DATA, pattern);
    guest.writeU8(STATUS, 0xff);
    drv.add(
      [
        { addr: HDR, len: 16 },
        { addr: DATA, len: 4096 },
      ],
      [{ addr: STATUS, len: 1 }],
      "write",
    );
    h.fds.kick(kick);
    const w = await completed(h, drv);
    assert.deepEqual([w.token, w.len, guest.readU8(STATUS)], ["write", 1, VIRTIO_BLK_S_OK]);

    // IN: read it back into a clean buffer.
    header(guest, VIRTIO_BLK_T_IN, 8n);
    guest.fill(DATA, 4096, 0);
    drv.add(
      [{ addr: HDR, len: 16 }],
      [
        { addr: DATA, len: 4096 },
        { addr: STATUS, len: 1 },
      ],
      "read",
    );
    h.fds.kick(kick);
    const r = await completed(h, drv);
    assert.deepEqual([r.token, r.len, guest.readU8(STATUS)], ["read", 4097, VIRTIO_BLK_S_OK]);
    const back = new Uint8Array(4096);
    guest.read(DATA, back);
    assert.deepEqual(back, pattern);

    // The guest turns the write cache off; QEMU forwards the one-byte write.
    const before = blk.blkConfig.writeback;
    const wce = await h.call(
      R.SET_CONFIG,
      encodeConfig({ offset: BlkConfig.writeback, flags: 0, data: Uint8Array.of(before ? 0 : 1) }),
    );
    assert.deepEqual(wce, []);
    assert.equal(blk.blkConfig.writeback, !before);
    await h.expectReply(
      R.GET_CONFIG,
      encodeConfig({ offset: BlkConfig.writeback, flags: 0, data: new Uint8Array(1) }),
      encodeConfig({ offset: BlkConfig.writeback, flags: 0, data: Uint8Array.of(before ? 0 : 1) }),
    );
    // Any other field is read-only.
    await h.call(R.SET_PROTOCOL_FEATURES, encodeU64(0xa209n));
    const ro = await h.call(
      R.SET_CONFIG,
      encodeConfig({ offset: 0, flags: 0, data: new Uint8Array(8) }),
      [],
      0x9,
    );
    assert.equal(decodeU64(ro[0]!.payload), 1n);

    const [base] = await h.call(R.GET_VRING_BASE, encodeVringState({ index: 0, num: 0 }));
    assert.deepEqual(decodeVringState(base!.payload), { index: 0, num: 2 });
    assert.equal(device.engine(0), undefined);
    h.socket.end();
    await h.conn.closed;
    h.assertReleased();
  });
});

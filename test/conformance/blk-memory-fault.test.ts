/**
 * The engine when guest memory is pulled away (docs/conformance.md, ring
 * table, `MEM_FAULT`): a transfer that meets EFAULT on the request's guest
 * buffers breaks the queue with `MEM_FAULT` instead of answering IOERR, and
 * a violation found while the embedder reports a memory fault is reported as
 * that fault. The engine logs neither: the transport owning the memory does.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { ErrorCode, VirtioError } from "../../src/errors.ts";
import { MemoryBacking } from "../../src/devices/blk/backing.ts";
import { VIRTIO_BLK_S_IOERR, VIRTIO_BLK_T_IN } from "../../src/spec/blk.ts";
import { BlkRig, pattern, until } from "./blk-harness.ts";

/** A store whose reads fail with a Node-style errno error. */
class FailingBacking extends MemoryBacking {
  constructor(readonly code: string) {
    super(pattern(1 << 20, 1));
  }
  override readv(): Promise<void> {
    return Promise.reject(Object.assign(new Error(`${this.code}: read`), { code: this.code }));
  }
}

test("EFAULT on a request's guest buffers breaks the queue with MEM_FAULT, unlogged, nothing completed", async () => {
  const r = new BlkRig({ backing: new FailingBacking("EFAULT") });
  r.add({ type: VIRTIO_BLK_T_IN, sector: 8, inLen: 4096 });
  r.engine.kick();
  await until(() => r.broken.length === 1, "the queue breaks");
  assert.equal(r.broken[0]!.code, ErrorCode.MEM_FAULT);
  assert.match(
    r.broken[0]!.message,
    /req \d+: IN sector 8: its guest buffers are unreachable \(EFAULT\)/,
  );
  assert.equal(r.q.broken?.code, ErrorCode.MEM_FAULT);
  assert.equal(r.drv.usedIdx, 0, "no used entry for a request whose memory is gone");
  assert.deepEqual(r.log.errors, []);
});

test("any other store error is still IOERR and the queue goes on", async () => {
  const r = new BlkRig({ backing: new FailingBacking("EIO") });
  const req = r.add({ type: VIRTIO_BLK_T_IN, sector: 8, inLen: 4096 });
  r.engine.kick();
  await until(() => r.drv.usedIdx === 1, "the request completes");
  assert.equal(r.status(req), VIRTIO_BLK_S_IOERR);
  assert.deepEqual(r.broken, []);
  assert.equal(r.log.errors.length, 1);
});

test("a ring violation while the memory is reported pulled away is reported as MEM_FAULT", () => {
  const fault = new VirtioError(ErrorCode.MEM_FAULT, "region gpa 0x0 shrank under the mapping");
  const r = new BlkRig({
    backing: new MemoryBacking(pattern(1 << 20, 1)),
    queueSize: 16,
    engine: { memoryFault: () => fault },
  });
  r.drv.publish(17); // a head outside the ring: what zeros in place of it could look like
  r.engine.kick();
  assert.deepEqual(r.broken, [fault], "reported as the fault (the ring keeps its own record)");
  assert.deepEqual(r.log.errors, []);
});

/**
 * The real `virtio-ts vhost-user-blk --allow-unsealed-memory` process and a
 * front-end that pulls its memory away (shrinks an unsealed memfd to 0 under
 * the back-end's mapping) — docs/threat-model.md "Memory mappings",
 * docs/conformance.md: the daemon stays up, closes that connection with one
 * line (`VIRTIO_ERR_MEM_FAULT`), and serves the next front-end normally.
 */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { ftruncate } from "../../src/native/index.ts";
import { tempDir } from "../../src/native/test-support.ts";
import { VIRTIO_BLK_S_OK } from "../../src/spec/blk.ts";
import { RawBlkFrontend, REGION } from "./raw-frontend.ts";
import { CliProcess, lines } from "./support.ts";

/** A front-end whose every completion is checked, closed when the test ends. */
async function connect(
  t: { after: (fn: () => void) => void },
  sock: string,
  sealed: readonly [boolean, boolean],
): Promise<RawBlkFrontend> {
  const fe = await RawBlkFrontend.connect(sock, sealed);
  let closed = false;
  t.after(() => void (closed || fe.close()));
  const done = fe.close.bind(fe);
  fe.close = () => {
    closed = true;
    done();
  };
  return fe;
}

async function readOk(fe: RawBlkFrontend, data: number): Promise<void> {
  const status = fe.submitRead(data, 4096);
  fe.kick();
  assert.equal(await fe.completion(status), VIRTIO_BLK_S_OK);
}

/** The connection's log lines after its `front-end connected` line. */
function connLines(stderr: string, n: number): string[] {
  return lines(stderr).filter(
    (l) =>
      new RegExp(`^virtio-ts: (warning: )?conn ${n}: `).test(l) &&
      !l.endsWith("front-end connected"),
  );
}

describe("a front-end that shrinks its memory under the mapping", { timeout: 120_000 }, () => {
  test("the daemon stays up, closes that connection with one line, serves the next", async (t) => {
    const dir = tempDir("virtio-ts-cli-");
    t.after(dir.remove);
    const image = join(dir.path, "disk.img");
    writeFileSync(image, Buffer.alloc(1 << 20, 0x5a));
    const sock = join(dir.path, "vu.sock");
    const args = ["vhost-user-blk", "--socket", sock, "--image", image];
    const p = new CliProcess([...args, "--allow-unsealed-memory"]);
    t.after(() => p.kill());
    await p.waitStdout(/listening on /);

    // 1. The data region goes away under a disk read: the kernel's copy fails (EFAULT).
    const fe1 = await connect(t, sock, [true, false]);
    await readOk(fe1, REGION);
    ftruncate(fe1.memfds[1], 0);
    fe1.submitRead(REGION + 4096, 4096);
    fe1.kick();
    await fe1.closedByBackend();
    fe1.close();

    // 2. The ring's region goes away: the back-end's own accesses meet SIGBUS, absorbed.
    const fe2 = await connect(t, sock, [false, true]);
    await readOk(fe2, REGION);
    ftruncate(fe2.memfds[0], 0);
    fe2.kick();
    await fe2.closedByBackend();
    fe2.close();

    // 3. The next front-end is served as if nothing happened.
    const fe3 = await connect(t, sock, [true, true]);
    await readOk(fe3, REGION);
    await readOk(fe3, 0x20000);
    fe3.close();
    await p.waitStderr(/conn 3: vhost-user: front-end disconnected/);

    p.proc.kill("SIGTERM");
    assert.deepEqual(await p.exit(), { code: 0, signal: null }, p.dump());
    const one = connLines(p.stderr, 1);
    assert.equal(one.length, 1, p.dump());
    assert.match(
      one[0]!,
      /^virtio-ts: warning: conn 1: vhost-user: virtio-blk: closing connection: VIRTIO_ERR_MEM_FAULT: ring 0: req \d+: IN sector 0: its guest buffers are unreachable \(EFAULT\)/,
    );
    const two = connLines(p.stderr, 2);
    assert.equal(two.length, 1, p.dump());
    assert.match(
      two[0]!,
      /^virtio-ts: warning: conn 2: vhost-user: virtio-blk: closing connection: VIRTIO_ERR_MEM_FAULT: ring 0: guest memory region gpa 0x0 size 0x100000: the front-end shrank its file under the mapping/,
    );
    assert.deepEqual(connLines(p.stderr, 3), [
      "virtio-ts: conn 3: vhost-user: front-end disconnected",
    ]);
  });

  test("without --allow-unsealed-memory an unsealed region is refused", async (t) => {
    const dir = tempDir("virtio-ts-cli-");
    t.after(dir.remove);
    const image = join(dir.path, "disk.img");
    writeFileSync(image, Buffer.alloc(1 << 20));
    const sock = join(dir.path, "vu.sock");
    const p = new CliProcess(["vhost-user-blk", "--socket", sock, "--image", image]);
    t.after(() => p.kill());
    await p.waitStdout(/listening on /);
    await assert.rejects(RawBlkFrontend.connect(sock, [true, false]), /region 1 mapped/);
    await p.waitStderr(/conn 1: vhost-user: virtio-blk: closing connection: /);
    assert.match(p.stderr, /VIRTIO_ERR_VHOST_USER_PROTOCOL: .*can shrink under the mapping/);
    p.proc.kill("SIGTERM");
    assert.deepEqual(await p.exit(), { code: 0, signal: null }, p.dump());
  });
});

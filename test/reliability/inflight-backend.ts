/**
 * A vhost-user-blk back-end for the inflight tests, run as a child process
 * so that it can be SIGKILLed: the library's server over a raw image file
 * on the calling thread, logging to stderr. With `hold`, writes never
 * complete (they stay in flight until the process dies); reads, flushes and
 * GET_ID complete as usual. Prints `ready` once it listens.
 *
 *   node --import tsx test/reliability/inflight-backend.ts SOCKET IMAGE serve|hold
 *
 * @module
 */
import { consoleLogger } from "../../src/log.ts";
import type { BlkBacking } from "../../src/devices/blk/backing.ts";
import { FileBacking } from "../../src/devices/blk/file-backing.ts";
import { VhostUserBlkBackend } from "../../src/devices/blk/vhost-user.ts";
import { NativeEventFds, NativeMapper } from "../../src/vhost-user/native-host.ts";
import { VhostUserServer } from "../../src/vhost-user/server.ts";
import { openTestDataplane } from "../../src/vhost-user/test-support.ts";

export const SERIAL = "inflight-test";

const [socketPath, imagePath, mode] = process.argv.slice(2);
if (socketPath === undefined || imagePath === undefined || (mode !== "serve" && mode !== "hold")) {
  console.error("usage: inflight-backend.ts SOCKET IMAGE serve|hold");
  process.exit(2);
}

const file = await FileBacking.open(imagePath);
/** Writes that never complete: the request stays in flight in the back-end. */
const backing: BlkBacking =
  mode === "hold"
    ? {
        size: file.size,
        readOnly: file.readOnly,
        readv: (offset, iov) => file.readv(offset, iov),
        writev: () => new Promise<void>(() => {}),
        flush: () => file.flush(),
        discard: (offset, length) => file.discard(offset, length),
        writeZeroes: (offset, length, unmap) => file.writeZeroes(offset, length, unmap),
        close: () => file.close(),
      }
    : file;
const { backend, device } = VhostUserBlkBackend.withBacking({
  backing,
  numQueues: 1,
  serial: SERIAL,
});
const { handle } = await openTestDataplane(
  device,
  1,
  new NativeEventFds(),
  new NativeMapper(),
  consoleLogger,
);
new VhostUserServer({
  backend,
  dataplane: handle,
  path: socketPath,
  removeStale: true,
  log: (line) => console.error(line),
});
console.log("ready");

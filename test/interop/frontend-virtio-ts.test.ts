/**
 * The vhost-user front-end and the virtio-blk driver against this project's
 * own back-end, the `virtio-ts vhost-user-blk` daemon (run as a separate
 * process, as a VMM would find it): the scenarios of
 * ./frontend-scenarios.ts, on packed rings (the daemon offers
 * VIRTIO_F_RING_PACKED and the disk accepts it; 100 entries, not a power of
 * two) and on split rings (RING_PACKED excluded).
 *
 * @module
 */
import { spawnBackend, virtioTsCommand, type StartBackend } from "./guest/backends.ts";
import { frontendScenarios } from "./frontend-scenarios.ts";

const SERIAL = "vts-frontend-test";

/** `virtio-ts vhost-user-blk` with a serial, ready at its `listening on` line. */
const startVirtioTs: StartBackend = (o) => {
  const { cmd, args } = virtioTsCommand();
  return spawnBackend(
    "virtio-ts vhost-user-blk",
    cmd,
    [
      ...args,
      "vhost-user-blk",
      "--socket",
      o.socketPath,
      "--image",
      o.imagePath,
      "--num-queues",
      String(o.numQueues),
      "--serial",
      SERIAL,
      ...(o.readOnly ? ["--read-only"] : []),
    ],
    o.socketPath,
    { listening: o.socketPath },
  );
};

frontendScenarios(
  "the virtio-ts daemon",
  startVirtioTs,
  { id: SERIAL },
  {
    layout: "packed",
    queueSize: 100,
  },
);
frontendScenarios(
  "the virtio-ts daemon",
  startVirtioTs,
  { id: SERIAL },
  {
    layout: "split",
    queueSize: 128,
    exclude: ["RING_PACKED"],
  },
);

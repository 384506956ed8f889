/**
 * A dataplane worker entry for the vhost-user ring tests: the Node runtime
 * with one device kind, `"recording"` (the test-support RecordingBackend's
 * dataplane half), and vhost-user's binding over the native fds with 64 KiB
 * mapping windows (several windows per region). Node-only; test helper.
 *
 * @module
 */
import { nodeParentEndpoint } from "../dataplane/node-threads.ts";
import { serveDataplane } from "../dataplane/runtime.ts";
import {
  EVENTFD_DOORBELLS,
  RegionMemorySpace,
  VHOST_USER_MEMORY,
  eventfdDoorbellOpener,
} from "./binding.ts";
import { NativeEventFds, NativeMapper } from "./native-host.ts";
import { RecordingBackend, type RecordingBackendOptions } from "./test-support.ts";

serveDataplane({
  endpoint: nodeParentEndpoint(),
  devices: {
    recording: (spec) => ({
      device: new RecordingBackend(
        (spec as unknown as { options: RecordingBackendOptions }).options,
      ),
    }),
  },
  memory: { [VHOST_USER_MEMORY]: () => new RegionMemorySpace(new NativeMapper(64 * 1024)) },
  doorbells: { [EVENTFD_DOORBELLS]: eventfdDoorbellOpener(new NativeEventFds()) },
});

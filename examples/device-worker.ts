/**
 * A device thread for the in-process transport (worker_threads): receives
 * {@link DeviceWorkerInit} as its first message, serves a
 * {@link ChecksumDevice} until the host calls `stopInprocDevice`, then posts
 * {@link DeviceWorkerDone} with its counters. Used by the demo, the stress
 * test and the ring benchmark.
 *
 * @module
 */
import { VirtioDevice } from "../src/device/virtio-device.ts";
import { GuestMemory } from "../src/memory/guest-memory.ts";
import {
  InprocDeviceTransport,
  type DeviceLoopOptions,
  type DeviceTransportStats,
  type InprocShared,
} from "../src/transport/inproc/index.ts";
import { nodeParentEndpoint } from "../src/dataplane/node-threads.ts";
import { ChecksumDevice, type ChecksumDeviceStats } from "./checksum-device.ts";
import type { DeviceStats } from "../src/device/virtio-device.ts";

/** First message to the worker. */
export interface DeviceWorkerInit {
  readonly shared: InprocShared;
  readonly mode: "checksum" | "null";
  readonly queueSize: number;
  readonly loop: DeviceLoopOptions;
}

/** Posted once the device loop ended. */
export interface DeviceWorkerDone {
  readonly type: "device-done";
  readonly device: DeviceStats;
  readonly transport: DeviceTransportStats;
  readonly checksum: ChecksumDeviceStats;
  readonly log: readonly string[];
}

const parent = nodeParentEndpoint();
const off = parent.onMessage((m) => {
  off();
  void serve(m as DeviceWorkerInit);
});

async function serve(init: DeviceWorkerInit): Promise<void> {
  const memory = GuestMemory.fromTransferable(init.shared.memory);
  const backend = new ChecksumDevice(init.mode, init.queueSize);
  const log: string[] = [];
  const device = new VirtioDevice(backend, { memory, log: (l) => log.push(l) });
  const transport = new InprocDeviceTransport(init.shared.registers, device);
  parent.postMessage({ type: "device-ready" });
  await transport.run(init.loop);
  const done: DeviceWorkerDone = {
    type: "device-done",
    device: { ...device.stats },
    transport: { ...transport.stats },
    checksum: { ...backend.stats },
    log,
  };
  parent.postMessage(done);
}

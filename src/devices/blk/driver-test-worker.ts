/**
 * Test worker for the virtio-blk driver's in-process transport test
 * (Node-only: worker_threads). Serves this project's virtio-blk device
 * (BlkDevice on a MemoryBacking, through VirtioDevice and
 * InprocDeviceTransport; VIRTIO 1.2 §5.2, §4.2-style register semantics of
 * the in-process transport) until the test thread calls
 * `stopInprocDevice`, then posts the disk's bytes.
 *
 * Messages: first {@link DriverTestWorkerInit} in; then
 * `{ type: "ready" }` and, after the loop ends, {@link DriverTestWorkerDone} out.
 *
 * @module
 */
import { VirtioDevice } from "../../device/virtio-device.ts";
import { GuestMemory } from "../../memory/guest-memory.ts";
import { InprocDeviceTransport, type InprocShared } from "../../transport/inproc/index.ts";
import { nodeParentEndpoint } from "../../dataplane/node-threads.ts";
import { MemoryBacking } from "./backing.ts";
import { BlkDevice } from "./device.ts";
import { silentLogger } from "../../log.ts";

/** First message to the worker. */
export interface DriverTestWorkerInit {
  readonly shared: InprocShared;
  readonly diskBytes: number;
  readonly numQueues: number;
  readonly queueSize: number;
  readonly serial: string;
  readonly maxInFlight: number;
}

/** Last message from the worker. */
export interface DriverTestWorkerDone {
  readonly type: "done";
  readonly disk: Uint8Array;
  readonly log: readonly string[];
}

const parent = nodeParentEndpoint();
const off = parent.onMessage((m) => {
  off();
  void serve(m as DriverTestWorkerInit);
});

async function serve(init: DriverTestWorkerInit): Promise<void> {
  const memory = GuestMemory.fromTransferable(init.shared.memory);
  const backing = new MemoryBacking(init.diskBytes);
  const blk = new BlkDevice({
    backing,
    numQueues: init.numQueues,
    queueSize: init.queueSize,
    serial: init.serial,
    maxInFlight: init.maxInFlight,
    logger: silentLogger,
  });
  const log: string[] = [];
  const device = new VirtioDevice(blk, { memory, log: (l) => log.push(l) });
  const transport = new InprocDeviceTransport(init.shared.registers, device);
  parent.postMessage({ type: "ready" });
  // "async": the engines complete requests in promise callbacks, so the event loop must stay free.
  await transport.run({ wait: "async", sleepSliceMs: 1000 });
  const done: DriverTestWorkerDone = { type: "done", disk: backing.snapshot(), log };
  parent.postMessage(done);
}

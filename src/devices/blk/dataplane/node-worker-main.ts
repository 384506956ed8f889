/**
 * Entry module of a virtio-blk dataplane worker on Node (worker_threads):
 * start it with a ThreadHost and the device's init message. Node-only.
 *
 * @module
 */
import { startNodeBlkDataplaneWorker } from "./node-worker.ts";

startNodeBlkDataplaneWorker();

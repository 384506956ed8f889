/**
 * Entry module of a dataplane worker on Node (worker_threads): start it with
 * a ThreadHost and an init message (../dataplane/protocol.ts). Node-only.
 *
 * @module
 */
import { startNodeDataplaneWorker } from "./node-dataplane.ts";

startNodeDataplaneWorker();

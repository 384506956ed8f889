/**
 * The cache mode shared between a virtio-blk device's control thread and its
 * dataplane workers. VIRTIO 1.2 §5.2.6.2 ("a write is stable once it is
 * completed" when `writeback` is 0 — write-through — or neither FLUSH nor
 * CONFIG_WCE was negotiated) and §5.2.4 (`writeback` is driver-writable with
 * CONFIG_WCE).
 *
 * A driver write of `writeback` is handled synchronously on the control
 * thread and acknowledged to the driver; a write the driver submits after
 * that acknowledgement must already follow the new mode. A message to the
 * workers could arrive after such a write is executed, so the mode is one
 * word of a SharedArrayBuffer instead: the control thread stores it before it
 * acknowledges the config write, and a worker loads it for every write-type
 * request. Both are sequentially consistent, and the driver's acknowledgement
 * load and its `avail.idx` store, and the worker's `avail.idx` load, sit in
 * between, so the worker sees the new mode.
 *
 * @module
 */
import { BlkDeviceConfig, type BlkDeviceOptions } from "./config.ts";

/** Word 0: 1 = write-through (every write stable before it completes), 0 = writeback. */
const WRITE_THROUGH = 0;

/** A fresh cache-mode word (write-through until the control thread says otherwise). */
export function createCacheModeBuffer(): SharedArrayBuffer {
  const sab = new SharedArrayBuffer(4);
  new Int32Array(sab)[WRITE_THROUGH] = 1;
  return sab;
}

/** The control thread's writer. */
export class CacheModeWriter {
  readonly #i32: Int32Array;

  constructor(buffer: SharedArrayBuffer) {
    this.#i32 = new Int32Array(buffer);
  }

  /** Publishes the mode; call before acknowledging whatever changed it. */
  store(writeThrough: boolean): void {
    // Atomics.store (SeqCst): visible to a worker's load that follows (via the driver's ack → avail.idx chain).
    Atomics.store(this.#i32, WRITE_THROUGH, writeThrough ? 1 : 0);
  }
}

/**
 * A worker's request policy: the blk configuration it rebuilt (limits,
 * negotiated features, capacity) with the cache mode read from the shared
 * word for every request.
 */
export class DataplanePolicy extends BlkDeviceConfig {
  readonly #mode: Int32Array;

  constructor(options: BlkDeviceOptions, cacheMode: SharedArrayBuffer) {
    super(options);
    this.#mode = new Int32Array(cacheMode);
  }

  /** True when every write must be stable before it completes (the control thread's word). */
  override get writeThrough(): boolean {
    // Atomics.load (SeqCst): sees the control thread's store made before it acknowledged the change.
    return Atomics.load(this.#mode, WRITE_THROUGH) !== 0;
  }
}

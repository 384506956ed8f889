/**
 * `virtio-ts/inproc`: the in-process transport — a virtio driver and device
 * in two threads of one process (Node worker_threads or Web Workers) over
 * one SharedArrayBuffer of guest memory and a register block of doorbells
 * and control words, with the device framework's operations (VIRTIO 1.2
 * §3.1 initialization, §2.4 reset) as register procedures. Portable.
 *
 * @module virtio-ts/inproc
 */
export * from "../transport/inproc/index.ts";

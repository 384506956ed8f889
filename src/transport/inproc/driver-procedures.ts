/**
 * The in-process driver's control procedures: device identity, status,
 * feature negotiation, queue registers and configuration space, each a
 * generator of control requests (run it with
 * {@link InprocDriverTransport.run} or `runAsync`). VIRTIO 1.2 §3.1.1
 * (driver initialization: the order of the steps), §2.5.1 (a configuration
 * read is retried until the generation is stable).
 *
 * These hold no state: what the driver keeps (negotiated features, its
 * queues) is {@link InprocDriverTransport}'s.
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../../errors.ts";
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FAILED,
  VIRTIO_CONFIG_S_FEATURES_OK,
} from "../../spec/virtio.ts";
import { call, type Procedure } from "./driver-control.ts";
import { INPROC_DATA_BYTES, Op, Result } from "./registers.ts";

/** Device identity from DEVICE_INFO. */
export interface DeviceInfo {
  readonly deviceId: number;
  readonly numQueues: number;
  readonly configSize: number;
}

/** A queue's size and the guest-physical addresses of its three parts. */
export interface QueuePlacement {
  readonly size: number;
  readonly descAddr: number;
  readonly availAddr: number;
  readonly usedAddr: number;
}

/** A 64-bit guest address as two u32 words (lo, hi). */
const split = (v: number): [number, number] => [v >>> 0, Math.floor(v / 0x1_0000_0000) >>> 0];

/** DEVICE_INFO: device id, queue count, configuration size. */
export function* deviceInfo(): Procedure<DeviceInfo> {
  const r = yield* call(Op.DEVICE_INFO);
  return { deviceId: r.ret[0]!, numQueues: r.ret[1]!, configSize: r.ret[2]! };
}

/** Reads the device status. */
export function* readStatus(): Procedure<number> {
  return (yield* call(Op.GET_STATUS)).ret[0]!;
}

/** Writes the device status (acknowledged once applied). */
export function* writeStatus(value: number): Procedure<void> {
  yield* call(Op.SET_STATUS, [value]);
}

/** The device's offered features (64 bits). */
export function* deviceFeatures(): Procedure<bigint> {
  const lo = (yield* call(Op.GET_DEVICE_FEATURES, [0])).ret[0]!;
  const hi = (yield* call(Op.GET_DEVICE_FEATURES, [1])).ret[0]!;
  return (BigInt(hi) << 32n) | BigInt(lo);
}

/**
 * §3.1.1 steps 2–6 on a device just reset: ACKNOWLEDGE, DRIVER, read the
 * device features, accept `wanted ∩ offered`, FEATURES_OK, and re-read the
 * status. Returns the accepted set.
 *
 * @throws {VirtioError} `FEATURES_REFUSED` if the device did not keep
 *   FEATURES_OK (FAILED is set first, §3.1.1 step 6).
 */
export function* negotiateFeatures(wanted: bigint): Procedure<bigint> {
  yield* writeStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE);
  yield* writeStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
  const offered = yield* deviceFeatures();
  const accepted = wanted & offered;
  yield* call(Op.SET_DRIVER_FEATURES, [0, Number(accepted & 0xffff_ffffn)]);
  yield* call(Op.SET_DRIVER_FEATURES, [1, Number(accepted >> 32n)]);
  const withOk = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
  yield* writeStatus(withOk);
  const status = yield* readStatus();
  if ((status & VIRTIO_CONFIG_S_FEATURES_OK) === 0) {
    yield* writeStatus(status | VIRTIO_CONFIG_S_FAILED);
    throw new VirtioError(
      ErrorCode.FEATURES_REFUSED,
      `device refused FEATURES_OK for features 0x${accepted.toString(16)}`,
      { features: accepted, status },
    );
  }
  return accepted;
}

/**
 * §3.1.1 step 7 on the device's side: queue `index`'s size and addresses,
 * then ready.
 *
 * @throws {VirtioError} `QUEUE_CONFIG` if the device refused any of them.
 */
export function* placeQueue(index: number, q: QueuePlacement): Procedure<void> {
  const sized = (yield* call(Op.SET_QUEUE_SIZE, [index, q.size])).ret[0] === 1;
  const placed =
    (yield* call(Op.SET_QUEUE_ADDRS, [
      index,
      ...split(q.descAddr),
      ...split(q.availAddr),
      ...split(q.usedAddr),
    ])).ret[0] === 1;
  const ready = (yield* call(Op.SET_QUEUE_READY, [index, 1])).ret[0] === 1;
  if (!sized || !placed || !ready)
    throw new VirtioError(ErrorCode.QUEUE_CONFIG, `device refused queue ${index} setup`, {
      index,
      size: q.size,
    });
}

/** §3.1.1 step 8: DRIVER_OK. Returns the status read back. */
export function* startDevice(): Procedure<number> {
  yield* writeStatus(
    VIRTIO_CONFIG_S_ACKNOWLEDGE |
      VIRTIO_CONFIG_S_DRIVER |
      VIRTIO_CONFIG_S_FEATURES_OK |
      VIRTIO_CONFIG_S_DRIVER_OK,
  );
  return yield* readStatus();
}

/**
 * Reads `length` configuration bytes at `offset`, retrying until the
 * generation is the same before and after (§2.5.1), at most 16 times.
 */
export function* readConfig(offset: number, length: number): Procedure<Uint8Array> {
  const out = new Uint8Array(length);
  for (let attempt = 0; attempt < 16; attempt++) {
    const before = (yield* call(Op.GET_CONFIG_GENERATION)).ret[0];
    for (let done = 0; done < length; done += INPROC_DATA_BYTES) {
      const n = Math.min(INPROC_DATA_BYTES, length - done);
      const r = yield* call(Op.GET_CONFIG, [offset + done, n], { readBack: n });
      out.set(r.data, done);
    }
    const after = (yield* call(Op.GET_CONFIG_GENERATION)).ret[0];
    if (before === after) break;
  }
  return out;
}

/** Writes configuration bytes; returns how many the device took. */
export function* writeConfig(offset: number, bytes: Uint8Array): Procedure<number> {
  let taken = 0;
  for (let done = 0; done < bytes.length; done += INPROC_DATA_BYTES) {
    const chunk = bytes.subarray(done, done + INPROC_DATA_BYTES);
    const r = yield* call(Op.SET_CONFIG, [offset + done, chunk.length], { data: chunk });
    if (r.result !== Result.OK) break;
    taken += r.ret[0]!;
  }
  return taken;
}

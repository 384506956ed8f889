/**
 * The in-process transport's register block: a small SharedArrayBuffer, next
 * to guest memory, holding the control channel and the doorbells. It plays
 * the part of virtio-mmio's register file (VIRTIO 1.2 §4.2.2) for two
 * threads of one process.
 *
 * Why registers in shared memory rather than a MessagePort RPC: a driver in
 * a JS/WASM emulator answers guest register accesses synchronously from a
 * worker that may never return to its event loop, and only `Atomics.wait`
 * works there; a MessagePort reply would never be delivered. One mechanism
 * (Atomics on shared words) then serves control and data path alike, and the
 * order between a control reply and ring contents is the Atomics order.
 *
 * Layout (Int32 words; every group that the two sides write at high rate
 * sits on its own 64-byte cache line so the writers do not share a line):
 *
 * | words | writer | content |
 * |---|---|---|
 * | line 0 | creator | MAGIC, VERSION, NUM_QUEUES, STOP |
 * | line 1 | driver | REQ_SEQ, OP, ARG0..ARG6 (a control request) |
 * | line 2 | device | ACK_SEQ, RESULT, RET0..RET3 (its reply) |
 * | device doorbell lines | driver | DEV_WAKE counter, then KICK[q] counters |
 * | 1 line | device | DEV_SLEEPING (1 while the device thread sleeps) |
 * | driver doorbell lines | device | DRV_WAKE counter, CONFIG_SEQ, then CALL[q] counters |
 * | 1 line | driver | DRV_SLEEPING |
 * | 64 words | per request | DATA: configuration bytes of GET/SET_CONFIG |
 * | kick route lines | device dataplane | KICK_ROUTE[q]: {@link KICK_ROUTE_WAITING}, {@link KICK_ROUTE_DIRECT} |
 *
 * Kick routes let a dataplane thread (not the thread answering control
 * requests) take a queue's kicks directly: it waits on that queue's KICK
 * counter itself, raising WAITING meanwhile, and sets DIRECT so the driver
 * does not also wake the control thread for every kick. A zero word (the
 * default) keeps the plain behaviour: kicks go through the device doorbell.
 *
 * Every doorbell is a counter bumped with `Atomics.add`: a waiter remembers
 * the last value it saw and sleeps only while the counter still has it, so
 * no wake-up is ever lost. The sleeping flags let a ringer skip the costly
 * `Atomics.notify` when the other side is busy (see ./doorbell.ts).
 *
 * Everything in the block is untrusted by the device side: the driver (the
 * guest) may write any word at any time.
 *
 * @module
 */
import type { TransferableGuestMemory } from "../../memory/guest-memory.ts";

/** "virt" in ASCII, little-endian. */
export const INPROC_MAGIC = 0x74726976;
export const INPROC_VERSION = 1;

/** Words per 64-byte cache line. */
const LINE = 16;
/** Bytes in the DATA window (one GET/SET_CONFIG moves at most this many). */
export const INPROC_DATA_BYTES = 256;
/** Largest number of queues the block is laid out for. */
export const INPROC_MAX_QUEUES = 1024;

/** KICK_ROUTE bit: a dataplane thread waits on this queue's KICK word (ring it with Atomics.notify). */
export const KICK_ROUTE_WAITING = 1;
/** KICK_ROUTE bit: a dataplane thread takes this queue's kicks; the device doorbell need not ring. */
export const KICK_ROUTE_DIRECT = 2;

/** Control operations (the OP word). */
export const Op = {
  /** → RET0 device id, RET1 number of queues, RET2 configuration size. */
  DEVICE_INFO: 1,
  /** ARG0 select (0/1) → RET0 32 bits of the device features. */
  GET_DEVICE_FEATURES: 2,
  /** ARG0 select, ARG1 value → RET0 1 if taken. */
  SET_DRIVER_FEATURES: 3,
  /** → RET0 status. */
  GET_STATUS: 4,
  /** ARG0 value; acknowledged once applied (a reset: once status reads 0). */
  SET_STATUS: 5,
  /** ARG0 queue → RET0 maximum size. */
  GET_QUEUE_MAX: 6,
  /** ARG0 queue, ARG1 size → RET0 1 if taken. */
  SET_QUEUE_SIZE: 7,
  /** ARG0 queue, ARG1/2 desc lo/hi, ARG3/4 avail lo/hi, ARG5/6 used lo/hi → RET0 1 if taken. */
  SET_QUEUE_ADDRS: 8,
  /** ARG0 queue, ARG1 ready (0/1) → RET0 resulting ready state. */
  SET_QUEUE_READY: 9,
  /** ARG0 offset, ARG1 length (≤ 256) → DATA bytes, RET0 generation. */
  GET_CONFIG: 10,
  /** ARG0 offset, ARG1 length (≤ 256), DATA bytes → RET0 bytes taken. */
  SET_CONFIG: 11,
  /** → RET0 configuration generation. */
  GET_CONFIG_GENERATION: 12,
} as const;

/** RESULT word values. */
export const Result = { OK: 0, UNKNOWN_OP: 1, FAILED: 2 } as const;

/** Fixed word indexes (the rest depends on the number of queues; see {@link RegisterLayout}). */
export const W = {
  MAGIC: 0,
  VERSION: 1,
  NUM_QUEUES: 2,
  /** Set to 1 by the host to end the device loop. */
  STOP: 3,
  REQ_SEQ: LINE,
  OP: LINE + 1,
  ARG0: LINE + 2,
  ACK_SEQ: 2 * LINE,
  RESULT: 2 * LINE + 1,
  RET0: 2 * LINE + 2,
} as const;

/** Number of ARG words. */
export const NUM_ARGS = 7;
/** Number of RET words. */
export const NUM_RETS = 4;

/** Word indexes that depend on the number of queues. */
export class RegisterLayout {
  readonly numQueues: number;
  readonly devWake: number;
  readonly kickBase: number;
  readonly devSleeping: number;
  readonly drvWake: number;
  readonly configSeq: number;
  readonly callBase: number;
  readonly drvSleeping: number;
  /** Word index of the DATA window. */
  readonly data: number;
  /** First KICK_ROUTE word (one per queue; after DATA, so the other offsets are unchanged). */
  readonly kickRouteBase: number;
  /** Total words. */
  readonly words: number;

  /** @throws {RangeError} for a queue count outside 1..{@link INPROC_MAX_QUEUES}. */
  constructor(numQueues: number) {
    if (!Number.isInteger(numQueues) || numQueues < 1 || numQueues > INPROC_MAX_QUEUES)
      throw new RangeError(`numQueues ${numQueues} must be an integer in 1..${INPROC_MAX_QUEUES}`);
    this.numQueues = numQueues;
    const lines = (words: number): number => Math.ceil(words / LINE) * LINE;
    this.devWake = 3 * LINE;
    this.kickBase = this.devWake + 1;
    this.devSleeping = this.devWake + lines(1 + numQueues);
    this.drvWake = this.devSleeping + LINE;
    this.configSeq = this.drvWake + 1;
    this.callBase = this.drvWake + 2;
    this.drvSleeping = this.drvWake + lines(2 + numQueues);
    this.data = this.drvSleeping + LINE;
    this.kickRouteBase = this.data + INPROC_DATA_BYTES / 4;
    this.words = this.kickRouteBase + lines(numQueues);
  }
}

/**
 * What both threads need, structured-cloneable (post it to a worker): the
 * register block and guest memory (SharedArrayBuffer-backed).
 */
export interface InprocShared {
  readonly registers: SharedArrayBuffer;
  readonly memory: TransferableGuestMemory;
}

/**
 * Allocates a register block for a device with `numQueues` queues.
 *
 * @throws {RangeError} for a bad queue count.
 */
export function createRegisters(numQueues: number): SharedArrayBuffer {
  const layout = new RegisterLayout(numQueues);
  const sab = new SharedArrayBuffer(layout.words * 4);
  const i32 = new Int32Array(sab);
  i32[W.MAGIC] = INPROC_MAGIC;
  i32[W.VERSION] = INPROC_VERSION;
  i32[W.NUM_QUEUES] = numQueues;
  return sab;
}

/**
 * Opens a register block made by {@link createRegisters}.
 *
 * @throws {RangeError} if the buffer is not one (wrong magic, version or size).
 */
export function openRegisters(sab: SharedArrayBuffer): { i32: Int32Array; layout: RegisterLayout } {
  if (!(sab instanceof SharedArrayBuffer) || sab.byteLength < 64)
    throw new RangeError("the register block must be a SharedArrayBuffer from createRegisters()");
  const i32 = new Int32Array(sab);
  if (i32[W.MAGIC] !== INPROC_MAGIC || i32[W.VERSION] !== INPROC_VERSION)
    throw new RangeError("the register block has a wrong magic or version");
  const layout = new RegisterLayout(i32[W.NUM_QUEUES]!);
  if (sab.byteLength < layout.words * 4)
    throw new RangeError("the register block is smaller than its queue count needs");
  return { i32, layout };
}

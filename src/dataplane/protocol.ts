/**
 * The messages between a control side and a dataplane runtime (a worker
 * thread, or the runtime on the calling thread). Not spec-defined: the
 * project's own thread protocol. Everything is structured-cloneable
 * (numbers, strings, bigint, SharedArrayBuffer, fd numbers): a message
 * crosses `postMessage` unchanged. Only lifecycle travels this way (a few
 * messages per activation); kicks, calls and the rings go through shared
 * memory or eventfds.
 *
 * A runtime hosts several devices (one per export, or per in-process
 * device); every message after `init` names its device by the number the
 * control side gave it at `open`.
 *
 * @module
 */
import type { LogFields } from "../log.ts";
import type { RingStart } from "../ring/open-ring.ts";
import type { DeviceSpec } from "./device.ts";
import type { DoorbellDescriptor, MemoryDescriptor } from "./seams.ts";
import type { WireError } from "./wire.ts";

/** First message to a runtime. */
export interface InitMessage {
  readonly type: "init";
  /** Runtime (worker) number, for log lines. */
  readonly worker: number;
  /** Forward devices' trace lines (costly; default false). */
  readonly trace?: boolean;
}

/** Control → runtime, after init. Each carries an `id` echoed by the reply. */
export type ControlMessage =
  | {
      readonly type: "open";
      readonly id: number;
      readonly device: number;
      readonly spec: DeviceSpec;
    }
  | {
      readonly type: "memory";
      readonly id: number;
      readonly device: number;
      readonly memory: MemoryDescriptor;
    }
  | {
      readonly type: "start";
      readonly id: number;
      readonly device: number;
      /** Activation number: a `broken` report names it, so late reports of an old one are dropped. */
      readonly activation: number;
      readonly queue: number;
      readonly ring: RingStart;
      readonly doorbells: DoorbellDescriptor;
    }
  | {
      readonly type: "doorbells";
      readonly id: number;
      readonly device: number;
      readonly queue: number;
      readonly doorbells: DoorbellDescriptor;
    }
  | { readonly type: "stop"; readonly id: number; readonly device: number; readonly queue: number }
  | { readonly type: "halt"; readonly id: number; readonly device: number }
  | { readonly type: "abort"; readonly id: number; readonly device: number }
  | {
      readonly type: "control";
      readonly id: number;
      readonly device: number;
      readonly op: string;
      readonly args?: unknown;
    }
  | { readonly type: "stats"; readonly id: number; readonly device: number }
  | { readonly type: "close"; readonly id: number; readonly device: number }
  | { readonly type: "shutdown"; readonly id: number };

/** What a `stop` reply carries. */
export interface StopResult {
  /** Where the ring stopped, as vhost-user GET_VRING_BASE reports it (DeviceRing `vringBase`). */
  readonly base: number;
  /** Requests that were in flight when the stop arrived (completed before the reply). */
  readonly drained: number;
}

/** Per-queue counters a `stats` reply carries. */
export interface QueueStats {
  readonly queue: number;
  /** Times the runtime woke up for this queue's kicks (or found the kick count moved). */
  readonly wakeups: number;
  /** Used-buffer notifications sent. */
  readonly calls: number;
  /** Requests in flight now. */
  readonly inFlight: number;
}

/** The level of a log line from a runtime. */
export type LogLevel = "error" | "warn" | "trace";

/** Runtime → control. */
export type RuntimeMessage =
  | { readonly type: "ready"; readonly worker: number }
  | { readonly type: "reply"; readonly id: number; readonly value?: unknown }
  | { readonly type: "reply"; readonly id: number; readonly error: WireError }
  | {
      readonly type: "broken";
      readonly device: number;
      readonly activation: number;
      readonly queue: number;
      readonly error: WireError;
    }
  | {
      readonly type: "log";
      /** The device the line is about; absent for the runtime's own lines. */
      readonly device?: number;
      readonly level: LogLevel;
      readonly message: string;
      readonly fields?: LogFields;
    };

/** A control message without its id (the handle numbers them). */
export type ControlRequest = ControlMessage extends infer M
  ? M extends ControlMessage
    ? Omit<M, "id">
    : never
  : never;

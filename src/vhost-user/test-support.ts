/**
 * Test support for the vhost-user back-end: a recording device (control
 * side and dataplane half in one object) that completes requests on demand,
 * and a harness that plays the front-end over a {@link FakeSocket} with
 * {@link FakeFds} and a {@link FakeMapper}, the rings on a dataplane runtime
 * on this thread. The device queues are real rings ({@link DeviceRing}) over the
 * fake-mapped memory, so a test can play the guest driver with
 * `DriverQueue` on the same bytes.
 *
 * @module
 */
import assert from "node:assert/strict";
import { ConfigSpace } from "../device/config-space.ts";
import { GuestMemory } from "../memory/guest-memory.ts";
import type { DescriptorChain } from "../ring/chain.ts";
import { DeviceQueue } from "../ring/device-queue.ts";
import type { DeviceRing } from "../ring/device-ring.ts";
import { VHOST_USER_HDR_SIZE, vhostUserRequestName } from "../spec/vhost-user.ts";
import type { DataplaneDeviceHandle } from "../dataplane/device-handle.ts";
import type { DataplaneDevice, QueueContext, QueueHandler } from "../dataplane/device.ts";
import { LOCAL_RUNTIME, localThreadHost } from "../dataplane/local.ts";
import { DataplanePool } from "../dataplane/pool.ts";
import { serveDataplane } from "../dataplane/runtime.ts";
import { silentLogger, type Logger } from "../log.ts";
import type { VhostUserBackend } from "./backend.ts";
import {
  EVENTFD_DOORBELLS,
  RegionMemorySpace,
  VHOST_USER_MEMORY,
  eventfdDoorbellOpener,
} from "./binding.ts";
import { decodeHeader, encodeMessage } from "./codec.ts";
import { VhostUserConnection, type VhostUserConnectionOptions } from "./connection.ts";
import { FakeFds, FakeMapper, FakeSocket } from "./fakes.ts";
import type { EventFds, MemoryMapper } from "./host.ts";
import { NativeEventFds, NativeMapper } from "./native-host.ts";
import { DataplaneRings } from "./rings.ts";

interface StartedQueue {
  readonly queue: DeviceRing;
  readonly ctx: QueueContext;
  /** Chains popped and not completed yet. */
  readonly held: DescriptorChain[];
  stopWaiter: (() => void) | undefined;
}

/** Options of {@link RecordingBackend}. */
export interface RecordingBackendOptions {
  readonly numQueues?: number;
  readonly features?: bigint;
  readonly config?: Uint8Array | null;
}

/**
 * A device that records every call. On a kick it pops every available chain;
 * with {@link hold} set the chains stay in flight until {@link release},
 * otherwise each completes at once with used length 0. `stopQueue` resolves
 * once nothing is in flight. SET_CONFIG may write only byte 32 (virtio-blk
 * `writeback`).
 */
export class RecordingBackend implements VhostUserBackend, DataplaneDevice {
  readonly name = "recording";
  readonly numQueues: number;
  readonly features: bigint;
  readonly config?: ConfigSpace;
  /** Every call, as text: "start 0 avail=0 used=0", "kick 0", "stop 0", "reset". */
  readonly events: string[] = [];
  /** Chains completed per queue index. */
  readonly completed = new Map<number, number>();
  readonly started = new Map<number, StartedQueue>();
  /** Keep popped chains in flight. */
  hold = false;

  constructor(o: RecordingBackendOptions = {}) {
    this.numQueues = o.numQueues ?? 2;
    this.features = o.features ?? 0n;
    if (o.config !== null) this.config = new ConfigSpace(o.config ?? new Uint8Array(60));
  }

  writeConfig(offset: number, data: Uint8Array, _flags: number, config: ConfigSpace): boolean {
    if (offset !== 32 || data.length !== 1) return false;
    config.store(offset, data);
    return true;
  }

  startQueue(ctx: QueueContext): QueueHandler {
    const { index, queue } = ctx;
    if (this.started.has(index)) throw new Error(`queue ${index} started twice`);
    this.events.push(
      queue instanceof DeviceQueue
        ? `start ${index} avail=${queue.nextAvail} used=${queue.nextUsed}`
        : `start ${index} base=${queue.vringBase}`,
    );
    const q: StartedQueue = { queue, ctx, held: [], stopWaiter: undefined };
    this.started.set(index, q);
    return {
      kick: () => this.queueNotify(index),
      halt: () => {},
      stop: () => this.stopQueue(index),
      get inFlight() {
        return q.held.length;
      },
    };
  }

  queueNotify(index: number): void {
    this.events.push(`kick ${index}`);
    const q = this.started.get(index);
    if (q === undefined) throw new Error(`kick for queue ${index}, which is not started`);
    for (let c = q.queue.popAvail(); c !== null; c = q.queue.popAvail()) {
      if (this.hold) q.held.push(c);
      else this.#complete(index, q, c);
    }
    q.ctx.signalUsed();
  }

  /** Completes every held chain of queue `index`. */
  release(index: number): void {
    const q = this.started.get(index);
    if (q === undefined) return;
    for (const c of q.held.splice(0)) this.#complete(index, q, c);
    q.ctx.signalUsed();
    q.stopWaiter?.();
  }

  stopQueue(index: number): Promise<void> {
    this.events.push(`stop ${index}`);
    const q = this.started.get(index);
    if (q === undefined) throw new Error(`stop for queue ${index}, which is not started`);
    const done = () => {
      this.started.delete(index);
      this.events.push(`stopped ${index}`);
    };
    if (q.held.length === 0) {
      done();
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      q.stopWaiter = () => {
        done();
        resolve();
      };
    });
  }

  reset(): void {
    this.events.push("reset");
  }

  #complete(index: number, q: StartedQueue, c: DescriptorChain): void {
    q.queue.addUsed(c.head, 0);
    this.completed.set(index, (this.completed.get(index) ?? 0) + 1);
  }
}

/** A decoded reply. */
export interface Reply {
  readonly request: number;
  readonly flags: number;
  readonly payload: Uint8Array;
}

/** The device kind a test runtime opens (the device object itself, not a copy). */
const TEST_DEVICE = "test-device";

/**
 * Opens `device` (its dataplane half) in a runtime on this thread with
 * vhost-user's binding over `fds` and `mapper` (fakes, or the native ones);
 * the device logs to `logger` (default: nowhere).
 */
export async function openTestDataplane(
  device: DataplaneDevice,
  numQueues: number,
  fds: EventFds,
  mapper: MemoryMapper,
  logger: Logger = silentLogger,
): Promise<{ pool: DataplanePool; handle: DataplaneDeviceHandle }> {
  const host = localThreadHost((endpoint) =>
    serveDataplane({
      endpoint,
      devices: { [TEST_DEVICE]: () => ({ device }) },
      memory: { [VHOST_USER_MEMORY]: () => new RegionMemorySpace(mapper) },
      doorbells: { [EVENTFD_DOORBELLS]: eventfdDoorbellOpener(fds) },
    }),
  );
  const pool = await DataplanePool.start({
    host,
    module: LOCAL_RUNTIME,
    runtimes: 1,
    logger: silentLogger,
  });
  const handle = await pool.open({ kind: TEST_DEVICE }, { queues: numQueues, logger });
  return { pool, handle };
}

/** {@link openTestDataplane} over the native eventfds and mapper: the device's handle. */
export function nativeTestDataplane(
  device: DataplaneDevice & { readonly numQueues: number },
  mapper: MemoryMapper = new NativeMapper(),
): Promise<DataplaneDeviceHandle> {
  return openTestDataplane(device, device.numQueues, new NativeEventFds(), mapper).then(
    (o) => o.handle,
  );
}

/** Options of {@link Harness}. */
export interface HarnessOptions<
  B extends VhostUserBackend = RecordingBackend,
> extends RecordingBackendOptions {
  /** The device (default: a {@link RecordingBackend} built from the other options). */
  readonly backend?: B;
  /** The device's dataplane half (default: `backend`, which must then be one). */
  readonly dataplane?: DataplaneDevice;
  readonly maxMemSlots?: number;
  /** Window size of the fake mapper (default 4 GiB). */
  readonly windowSize?: number;
}

/** A back-end connection driven by the test as the front-end. */
export class Harness<B extends VhostUserBackend = RecordingBackend> {
  readonly fds = new FakeFds();
  readonly mapper: FakeMapper;
  readonly socket = new FakeSocket();
  readonly device: B;
  readonly dataplane: DataplaneRings;
  readonly conn: VhostUserConnection;
  readonly logs: string[] = [];

  constructor(o: HarnessOptions<B> = {}) {
    this.mapper = new FakeMapper(this.fds, o.windowSize);
    this.device = o.backend ?? (new RecordingBackend(o) as unknown as B);
    const half = o.dataplane ?? (this.device as unknown as DataplaneDevice);
    const opened = openTestDataplane(half, this.device.numQueues, this.fds, this.mapper);
    this.dataplane = new DataplaneRings(opened.then((o) => o.handle));
    const options: VhostUserConnectionOptions = {
      backend: this.device,
      dataplane: this.dataplane,
      fds: this.fds,
      log: (line) => this.logs.push(line),
      ...(o.maxMemSlots === undefined ? {} : { maxMemSlots: o.maxMemSlots }),
    };
    this.conn = new VhostUserConnection(this.socket, options);
    this.conn.start();
  }

  /** Sends one message in one fragment (fds attached). */
  send(
    request: number,
    payload: Uint8Array = new Uint8Array(0),
    fds: number[] = [],
    flags = 0x1,
  ): void {
    this.socket.deliver(encodeMessage(request, flags, payload), fds);
  }

  /** Waits until every received message has been handled. */
  idle(): Promise<void> {
    return this.conn.whenIdle();
  }

  /** Sends, waits, and returns the replies sent meanwhile. */
  async call(
    request: number,
    payload?: Uint8Array,
    fds: number[] = [],
    flags = 0x1,
  ): Promise<Reply[]> {
    this.send(request, payload, fds, flags);
    await this.idle();
    return this.replies();
  }

  /** Sends, waits, and checks that exactly one reply with `payload` came back (flags 0x5). */
  async expectReply(
    request: number,
    payload: Uint8Array | undefined,
    expected: Uint8Array,
    fds: number[] = [],
    flags = 0x1,
  ): Promise<void> {
    const replies = await this.call(request, payload, fds, flags);
    assert.equal(replies.length, 1, `one reply to ${vhostUserRequestName(request)}`);
    const r = replies[0]!;
    assert.equal(r.request, request);
    assert.equal(r.flags, 0x5);
    assert.deepEqual([...r.payload], [...expected]);
  }

  /** Sends, waits, and checks that nothing was sent back. */
  async expectNoReply(
    request: number,
    payload?: Uint8Array,
    fds: number[] = [],
    flags = 0x1,
  ): Promise<void> {
    const replies = await this.call(request, payload, fds, flags);
    assert.deepEqual(replies, [], `no reply to ${vhostUserRequestName(request)}`);
  }

  /** Removes and decodes everything sent so far; checks each header's size field. */
  replies(): Reply[] {
    return this.socket.sent.splice(0).map(({ bytes, fds }) => {
      assert.deepEqual(fds, [], "replies carry no fds");
      const h = decodeHeader(bytes);
      assert.equal(h.size, bytes.length - VHOST_USER_HDR_SIZE, "header size matches the payload");
      return { request: h.request, flags: h.flags, payload: bytes.subarray(VHOST_USER_HDR_SIZE) };
    });
  }

  /** Guest memory over a memfd of the fake fd table (what the guest driver sees). */
  guestMemory(fd: number, gpa = 0): GuestMemory {
    const buffer = this.fds.memoryOf(fd);
    if (buffer === undefined) throw new Error(`fd ${fd} is not a memfd`);
    return new GuestMemory([{ guestPhysAddr: gpa, size: buffer.byteLength, buffer }]);
  }

  /** Checks that the connection released everything: no fd open but `keep`, no mapping, no misuse. */
  assertReleased(keep: readonly number[] = []): void {
    const open = this.fds.openFds().filter((s) => !keep.includes(Number(s.split(":")[0])));
    assert.deepEqual(open, [], "every fd the back-end received is closed");
    assert.equal(this.mapper.live, 0, "every mapping is unmapped");
    assert.deepEqual(this.fds.misuse, []);
    assert.equal(this.dataplane.runningRings, 0);
  }
}

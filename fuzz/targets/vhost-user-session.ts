/**
 * Fuzz target: vhost-user message sequences through one back-end
 * connection (src/vhost-user/connection.ts → framing → session.ts and the
 * handlers), with the rings served by a real dataplane runtime on this
 * thread over fake fds and mappings (src/vhost-user/fakes.ts,
 * test-support.ts).
 *
 * Feeds: a program of steps: send a message (a supported request or a raw
 * request number; version/NEED_REPLY/raw flags; a payload of the size the
 * request needs, or any size; the fds the request carries, as memfds of
 * 64 KiB or eventfds, sometimes one too many or too few; whole or in two
 * fragments), wait until idle, kick a kick fd, write guest memory, or hang
 * up. Every input runs on a new connection; the peer hangs up at the end.
 *
 * Failure: an exception escaping the connection other than the documented
 * protocol-violation path (a connection closed with an "internal error", a
 * teardown failure, an unhandled rejection); after the connection closed,
 * an fd it was given still open, a mapping not unmapped, a ring still
 * running, or an fd misused (closed twice, used after close); a sequence
 * that does not finish (the engine's timeout).
 *
 * @module
 */
import { GuestMemory } from "../../src/memory/guest-memory.ts";
import { VhostUserRequest as R, VHOST_USER_VRING_NOFD_MASK } from "../../src/spec/vhost-user.ts";
import { encodeMessage } from "../../src/vhost-user/codec.ts";
import { VhostUserConnection } from "../../src/vhost-user/connection.ts";
import { FakeFds, FakeMapper, FakeSocket } from "../../src/vhost-user/fakes.ts";
import { VHOST_USER_REQUEST_RULES } from "../../src/vhost-user/request-rules.ts";
import { DataplaneRings } from "../../src/vhost-user/rings.ts";
import { RecordingBackend, openTestDataplane } from "../../src/vhost-user/test-support.ts";
import type { DataplaneDeviceHandle } from "../../src/dataplane/device-handle.ts";
import { expect } from "../lib/check.ts";
import { FuzzInput } from "../lib/input.ts";

/** Supported requests, in a fixed order (the input picks by index). */
export const REQUESTS: readonly number[] = [...VHOST_USER_REQUEST_RULES.keys()].sort(
  (a, b) => a - b,
);
export const MEMFD_SIZE = 0x10000;
const MAX_STEPS = 64;

/** The fd table, mapper, device and runtime: one per process, shared by every input. */
interface World {
  readonly fds: FakeFds;
  readonly mapper: FakeMapper;
  readonly device: RecordingBackend;
  readonly handle: DataplaneDeviceHandle;
}
let world: Promise<World> | undefined;
const rejections: unknown[] = [];

function getWorld(): Promise<World> {
  world ??= (async () => {
    process.on("unhandledRejection", (e) => rejections.push(e));
    const fds = new FakeFds({ keepClosedMemory: false });
    const mapper = new FakeMapper(fds);
    const device = new RecordingBackend({ numQueues: 2, features: 1n << 32n });
    const { handle } = await openTestDataplane(device, device.numQueues, fds, mapper);
    return { fds, mapper, device, handle };
  })();
  return world;
}

/** Runs one input. */
export async function fuzz(data: Uint8Array): Promise<void> {
  const w = await getWorld();
  const input = new FuzzInput(data);
  const misuseBefore = w.fds.misuse.length;
  const given: number[] = [];
  const memfds: number[] = [];
  const eventfds: number[] = [];
  const logs: string[] = [];
  const socket = new FakeSocket();
  const dataplane = new DataplaneRings(w.handle);
  const conn = new VhostUserConnection(socket, {
    backend: w.device,
    dataplane,
    fds: w.fds,
    log: (line) => {
      if (process.env.VIRTIO_TS_FUZZ_DEBUG) console.error(line);
      logs.push(line);
    },
  });
  conn.start();
  const memfd = (): number => {
    const fd = w.fds.memfd(MEMFD_SIZE);
    memfds.push(fd);
    given.push(fd);
    return fd;
  };
  const eventfd = (): number => {
    const fd = w.fds.eventfd();
    eventfds.push(fd);
    given.push(fd);
    return fd;
  };

  for (let step = 0; step < MAX_STEPS && !input.done && !conn.closing; step++) {
    const op = input.below(16);
    if (op < 10) {
      sendMessage(socket, input, memfd, eventfd, (fd) => w.fds.close(fd));
    } else if (op < 13) {
      await conn.whenIdle();
    } else if (op === 13) {
      const fd = eventfds[input.below(eventfds.length)];
      if (fd !== undefined && w.fds.isOpen(fd)) w.fds.kick(fd);
      await conn.whenIdle();
    } else if (op === 14) {
      const fd = memfds[input.below(memfds.length)];
      const mem = fd === undefined ? undefined : w.fds.memoryOf(fd);
      if (mem !== undefined) {
        const g = new GuestMemory([{ guestPhysAddr: 0, size: mem.byteLength, buffer: mem }]);
        const at = input.u16() % (mem.byteLength - 16);
        g.write(at, input.bytes(1 + input.below(16)));
      }
    } else {
      break;
    }
  }
  socket.end();
  const { error } = await conn.closed;
  await conn.whenIdle();

  // The shared doubles record history; drop it so that memory stays bounded.
  w.device.events.length = 0;
  w.fds.closed.length = 0;
  w.mapper.calls.length = 0;
  const internal = logs.filter((l) => l.includes("internal error") || l.includes("teardown:"));
  expect(internal.length === 0, `escaped exception: ${internal.join("; ")}`);
  expect(error === undefined || !error.message.startsWith("internal error"), String(error));
  const rejected = rejections.splice(0);
  expect(rejected.length === 0, `unhandled rejection: ${String(rejected[0])}`);
  const open = given.filter((fd) => w.fds.isOpen(fd));
  expect(open.length === 0, `fds left open after the connection closed: ${open.join(", ")}`);
  expect(w.mapper.live === 0, `${w.mapper.live} mappings left after the connection closed`);
  expect(dataplane.runningRings === 0, `${dataplane.runningRings} rings left running`);
  const misuse = w.fds.misuse.slice(misuseBefore);
  expect(misuse.length === 0, `fd misuse: ${misuse.join("; ")}`);
}

/** Sends one message, built from the input. */
function sendMessage(
  socket: FakeSocket,
  input: FuzzInput,
  memfd: () => number,
  eventfd: () => number,
  closeOwn: (fd: number) => void,
): void {
  const pick = input.u8();
  const request = pick < 240 ? REQUESTS[pick % REQUESTS.length]! : input.u32();
  const fmode = input.below(8);
  const flags = fmode < 5 ? 0x1 : fmode < 7 ? 0x9 : input.u32();
  const rule = VHOST_USER_REQUEST_RULES.get(request);
  let size: number;
  const smode = input.below(16);
  if (rule === undefined || smode === 15) size = input.u16() % 600;
  else if (rule.payload.kind === "exact") size = rule.payload.size;
  else if (rule.payload.kind === "memory-table") size = 8 + 32 * (1 + input.below(8));
  else size = 12 + input.below(257);
  const payload = input.exactly(size);
  // The fd count the request carries, then perhaps one off.
  const dv = new DataView(payload.buffer);
  let memfds = 0;
  let events = 0;
  if (rule?.fds === "one" || rule?.fds === "at-most-one") {
    if (request === R.ADD_MEM_REG || request === R.REM_MEM_REG || request === R.SET_INFLIGHT_FD)
      memfds = 1;
    else events = 1;
  } else if (rule?.fds === "regions" && size >= 4) memfds = Math.min(dv.getUint32(0, true), 8);
  else if (rule?.fds === "vring-file" && size >= 8)
    events = (dv.getUint32(0, true) & VHOST_USER_VRING_NOFD_MASK) !== 0 ? 0 : 1;
  const fds: number[] = [];
  for (let i = 0; i < memfds; i++) fds.push(memfd());
  for (let i = 0; i < events; i++) fds.push(eventfd());
  const tweak = input.below(32);
  if (tweak === 0) fds.push(eventfd());
  else if (tweak === 1 && fds.length > 0) closeOwn(fds.shift()!); // one fd too few: never sent
  const bytes = encodeMessage(request >>> 0, flags >>> 0, payload);
  if (process.env.VIRTIO_TS_FUZZ_DEBUG)
    console.error(`send ${request} flags ${flags} size ${size} fds ${fds.join(",")}`);
  const cut =
    input.below(8) !== 0 || bytes.byteLength < 2
      ? 0
      : 1 + input.below(Math.min(255, bytes.byteLength - 1));
  if (cut > 0) socket.deliver(bytes.subarray(0, cut), []);
  // A connection closing after the first fragment never receives the fds: they stay ours.
  if (!socket.closed) socket.deliver(bytes.subarray(cut), fds);
  else for (const fd of fds) closeOwn(fd);
}

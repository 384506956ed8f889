import { test } from "node:test";
import assert from "node:assert/strict";
import { once } from "node:events";
import { setImmediate as nextTurn } from "node:timers/promises";
import { Worker } from "node:worker_threads";
import { eventfd, eventfdRead, eventfdWrite } from "./eventfd.ts";
import { memfdCreate } from "./files.ts";
import { mappingCount } from "./memory.ts";
import { isNativeError } from "./native-error.ts";
import { close, sendmsg, shutdown, socketPair } from "./sockets.ts";
import { fdsOpenedSince, fdSnapshot, within } from "./test-support.ts";
import { PollEvent, watch, watchCount, type FdWatch } from "./watch.ts";

/** Bound for every wait in this file: a broken watch fails instead of hanging. */
const WAIT_MS = 10_000;

/**
 * Watches `fd` for `events` until the first callback (at most WAIT_MS) and
 * always stops the watch, so a failing test never leaves the loop alive.
 * `arm` runs once the watch exists (e.g. to write the eventfd).
 */
async function firstEvent(
  fd: number,
  events: number,
  arm: (w: FdWatch) => void = () => undefined,
): Promise<{ error: string | undefined; events: number }> {
  let w: FdWatch | undefined;
  const fired = new Promise<{ error: string | undefined; events: number }>((resolve) => {
    w = watch(fd, events, (error, ready) => resolve({ error: error?.errnoCode, events: ready }));
  });
  try {
    if (w !== undefined) arm(w);
    return await within(fired, WAIT_MS, `events ${events} on fd ${fd}`);
  } finally {
    w?.stop();
  }
}

test("watch fires on the main thread when an eventfd is written, and not after stop()", async () => {
  const before = fdSnapshot();
  const fd = eventfd();
  const kicks: bigint[] = [];
  let wake: () => void = () => undefined;
  const w = watch(fd, PollEvent.READABLE, (error, events) => {
    assert.equal(error, null);
    assert.equal(events & PollEvent.READABLE, PollEvent.READABLE);
    const value = eventfdRead(fd);
    if (value !== null) kicks.push(value);
    wake();
  });
  try {
    assert.equal(watchCount(), 1);
    for (const value of [1n, 5n]) {
      const fired = new Promise<void>((resolve) => (wake = resolve));
      eventfdWrite(fd, value);
      await within(fired, WAIT_MS, `kick ${value}`);
    }
    assert.deepEqual(kicks, [1n, 5n]);
    assert.equal(w.stop(), true);
    assert.equal(w.stop(), false);
    assert.equal(w.stopped, true);
    assert.equal(watchCount(), 0);
    eventfdWrite(fd, 9n);
    for (let i = 0; i < 5; i++) await nextTurn();
    assert.deepEqual(kicks, [1n, 5n], "a stopped watch stays silent");
    assert.equal(eventfdRead(fd), 9n);
  } finally {
    w.stop();
    close(fd);
  }
  await nextTurn(); // uv_close completes on the next loop turn
  assert.deepEqual(fdsOpenedSince(before), []);
});

test("a counter already signalled fires at once; setEvents switches to writability", async () => {
  const fd = eventfd(1);
  assert.deepEqual(await firstEvent(fd, PollEvent.READABLE), {
    error: undefined,
    events: PollEvent.READABLE,
  });
  // A socket with nothing to read: only WRITABLE can fire.
  const [a, b] = socketPair();
  const ready = await firstEvent(a, PollEvent.READABLE, (w) => w.setEvents(PollEvent.WRITABLE));
  assert.equal(ready.events, PollEvent.WRITABLE);
  closeAll([a, b, fd]);
});

test("watch reports the peer's shutdown as DISCONNECT", async () => {
  const [a, b] = socketPair();
  const ready = await firstEvent(a, PollEvent.DISCONNECT, () => {
    sendmsg(b, Buffer.from("x"));
    shutdown(b, "write");
  });
  assert.equal(ready.events & PollEvent.DISCONNECT, PollEvent.DISCONNECT);
  closeAll([a, b]);
});

test("a poll error reaches the callback as a NativeError; setEvents resumes the watch", async () => {
  const [a, b] = socketPair();
  sendmsg(a, Buffer.from("unread"));
  close(b); // closing with unread data resets the connection: POLLERR on a
  const errors: (string | undefined)[] = [];
  let wake: () => void = () => undefined;
  const w = watch(a, PollEvent.READABLE, (error) => {
    errors.push(error?.errnoCode);
    wake();
  });
  try {
    await within(new Promise<void>((resolve) => (wake = resolve)), WAIT_MS, "poll error");
    assert.deepEqual(errors, ["EBADF"]);
    // libuv paused the watch after the error; setEvents resumes it.
    const again = new Promise<void>((resolve) => (wake = resolve));
    w.setEvents(PollEvent.READABLE);
    await within(again, WAIT_MS, "poll error after resuming");
    assert.deepEqual(errors, ["EBADF", "EBADF"]);
  } finally {
    w.stop();
    close(a);
  }
});

test("watch misuse: a second watch on the fd throws EEXIST; bad events and regular files are refused", () => {
  const fd = eventfd();
  const w = watch(fd, PollEvent.READABLE, () => undefined);
  assert.throws(
    () => watch(fd, PollEvent.READABLE, () => undefined),
    (e: unknown) => isNativeError(e, "EEXIST"),
  );
  assert.throws(() => w.setEvents(0), RangeError);
  assert.throws(() => w.setEvents(16), RangeError);
  w.stop();
  assert.throws(() => w.setEvents(PollEvent.READABLE), /stopped/);
  assert.equal(w.ref(), w, "ref/unref on a stopped watch are no-ops");
  assert.throws(() => watch(fd, 0, () => undefined), RangeError);
  assert.throws(() => watch(fd, PollEvent.READABLE, null as unknown as () => void), TypeError);
  const file = memfdCreate("regular");
  assert.throws(
    () => watch(file, PollEvent.READABLE, () => undefined),
    (e: unknown) => isNativeError(e, "EPERM"),
  );
  closeAll([fd, file]);
  assert.equal(watchCount(), 0);
});

/**
 * Runs test-worker.ts in `mode` with `fd` and hands it to `body`; the worker
 * is terminated afterwards whatever happens, so a failure never hangs the
 * test process. Node 20 applies no `--import` hooks to a worker: tsx is
 * registered first.
 */
async function withWorker(
  mode: string,
  fd: number,
  body: (worker: Worker, exited: Promise<number>) => Promise<void>,
): Promise<void> {
  const tsx = import.meta.resolve("tsx/esm/api");
  const entry = new URL("./test-worker.ts", import.meta.url).href;
  const worker = new Worker(
    `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); })`,
    { eval: true, workerData: { mode, fd } },
  );
  // (events.once(worker, "exit") would reject on an "error" event.)
  const exited = new Promise<number>((resolve) => worker.once("exit", resolve));
  try {
    await body(worker, exited);
  } finally {
    await worker.terminate();
  }
}

async function ready(worker: Worker): Promise<void> {
  const [message] = (await within(once(worker, "message"), WAIT_MS, "worker ready")) as [unknown];
  assert.equal(message, "ready");
}

test("a worker watches an eventfd on its own loop and sees the main thread's kick", async () => {
  const fd = eventfd();
  await withWorker("kick", fd, async (worker, exited) => {
    await ready(worker);
    eventfdWrite(fd, 3n);
    const [report] = (await within(once(worker, "message"), WAIT_MS, "kick in worker")) as [
      unknown,
    ];
    assert.deepEqual(report, { error: null, events: PollEvent.READABLE, value: 3n });
    // The worker stopped its watch: nothing keeps its loop alive, it ends by itself.
    assert.equal(await within(exited, WAIT_MS, "worker exit"), 0);
  });
  close(fd);
});

test("an unref'd watch lets its worker end; the open watch is closed with the worker", async () => {
  const fd = eventfd();
  await withWorker("unref", fd, async (worker, exited) => {
    await ready(worker);
    assert.equal(await within(exited, WAIT_MS, "worker exit"), 0);
  });
  close(fd);
});

test("terminating a worker with an active watch and a live mapping shuts down cleanly", async () => {
  const fd = eventfd();
  const mappings = mappingCount();
  await withWorker("hold", fd, async (worker, exited) => {
    await ready(worker);
    assert.equal(mappingCount(), mappings + 1);
    await worker.terminate();
    assert.equal(await within(exited, WAIT_MS, "worker exit"), 1);
  });
  assert.equal(mappingCount(), mappings, "the worker's mapping was unmapped");
  // This thread is unaffected: its own watches still work.
  const kick = await firstEvent(fd, PollEvent.READABLE, () => eventfdWrite(fd));
  assert.equal(kick.events, PollEvent.READABLE);
  close(fd);
});

test("a throwing watch callback is an uncaught exception of its thread", async () => {
  const fd = eventfd();
  await withWorker("throw", fd, async (worker, exited) => {
    const failed = once(worker, "error");
    await ready(worker);
    eventfdWrite(fd);
    const [error] = (await within(failed, WAIT_MS, "worker error")) as [Error];
    assert.equal(error.message, "thrown by a watch callback");
    assert.equal(await within(exited, WAIT_MS, "worker exit"), 1);
  });
  close(fd);
});

function closeAll(fds: readonly number[]): void {
  for (const fd of fds) close(fd);
}

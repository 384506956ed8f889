import assert from "node:assert/strict";
import { test } from "node:test";
import { CliLog, type CliIo, type LogOptions } from "./log.ts";

const NOW = new Date("2026-01-02T03:04:05.678Z");

function recorder(options: LogOptions = {}): { log: CliLog; out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  const io: CliIo = {
    out: (l) => out.push(l),
    err: (l) => err.push(l),
    onStopSignal: () => () => {},
  };
  return { log: new CliLog(io, { now: () => NOW, ...options }), out, err };
}

/** Writes one line of every kind. */
function everyKind(log: CliLog): void {
  log.logger().error("disk failed");
  log.logger().warn("odd ring");
  log.process("serving");
  log.debug("detail");
  log.logger().trace?.("virtqueue_pop vq 0 head 1");
}

test("text lines: the default level is info; warnings and errors name their level", () => {
  const { log, out, err } = recorder();
  everyKind(log);
  assert.deepEqual(err, [
    "virtio-ts: error: disk failed",
    "virtio-ts: warning: odd ring",
    "virtio-ts: serving",
  ]);
  assert.deepEqual(out, [], "nothing on stdout");
  assert.equal(log.verbose, false);
  assert.equal(log.logger().trace, undefined, "no trace hook below the trace level");
});

test("each level writes itself and everything more severe", () => {
  const counts = (["error", "warn", "info", "debug", "trace"] as const).map((level) => {
    const { log, err } = recorder({ level });
    everyKind(log);
    return err.length;
  });
  assert.deepEqual(counts, [1, 2, 3, 4, 5]);
  const { log, err } = recorder({ level: "trace" });
  log.connection = 3;
  everyKind(log);
  assert.deepEqual(err.slice(3), [
    "virtio-ts: debug: conn 3: detail",
    "conn 3: virtqueue_pop vq 0 head 1",
  ]);
  assert.equal(log.verbose, true);
});

test("--log-timestamp puts the ISO-8601 UTC time first; exports and connections are named", () => {
  const { log, err } = recorder({ timestamp: true });
  const disk = log.forExport("disk1");
  disk.connection = 2;
  disk.logger().warn("virtio-blk vq 0 req 17: failed", { queue: 0, req: 17 });
  disk.process("stopped");
  log.fatal("flush failed");
  assert.deepEqual(err, [
    "2026-01-02T03:04:05.678Z virtio-ts: warning: disk1: conn 2: virtio-blk vq 0 req 17: failed",
    "2026-01-02T03:04:05.678Z virtio-ts: disk1: stopped",
    "2026-01-02T03:04:05.678Z virtio-ts: flush failed",
  ]);
});

test("--log-format json: one object per line with time, level, msg and the structured fields", () => {
  const { log, err } = recorder({ format: "json", level: "trace" });
  const disk = log.forExport("disk1");
  disk.connection = 2;
  disk.logger().error("virtio-blk vq 1 req 9: EIO", {
    queue: 1,
    req: 9,
    msg: "not a field",
    extra: undefined,
  });
  disk.logger().trace?.("virtqueue_pop vq 1 head 9", { queue: 1 });
  log.process("stopped");
  log.fatal("flush failed");
  const records = err.map((l) => JSON.parse(l) as unknown);
  assert.deepEqual(records, [
    {
      time: NOW.toISOString(),
      level: "error",
      msg: "virtio-blk vq 1 req 9: EIO",
      export: "disk1",
      conn: 2,
      queue: 1,
      req: 9,
    },
    {
      time: NOW.toISOString(),
      level: "trace",
      msg: "virtqueue_pop vq 1 head 9",
      export: "disk1",
      conn: 2,
      queue: 1,
    },
    { time: NOW.toISOString(), level: "info", msg: "stopped" },
    { time: NOW.toISOString(), level: "error", msg: "flush failed" },
  ]);
  assert.ok(err.every((l) => !l.includes("\n")));
});

test("rate-limited lines are summarized as a warning in the chosen format", () => {
  const { log, err } = recorder({ format: "json", rateLimit: { lines: 2, windowMs: 60_000 } });
  for (let i = 0; i < 5; i++) log.line(`ring ${i} broken`, "warn");
  log.flush();
  assert.equal(err.length, 3);
  assert.deepEqual(JSON.parse(err[2]!), {
    time: NOW.toISOString(),
    level: "warn",
    msg: "3 more lines like this one were dropped: ring 2 broken",
  });
});

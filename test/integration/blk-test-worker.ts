/**
 * A dataplane worker entry for the integration tests: the Node worker with
 * one more disk kind, `"test-file"`, a FileBacking wrapped to delay I/O
 * (requests stay in flight long enough to reset under them), to fail reads
 * and flushes (backing-store errors), and to log every flush (to observe
 * the cache mode from the test thread). It shows the worker's backing seam.
 */
import type { BlkBacking } from "../../src/devices/blk/backing.ts";
import type { BackingContext, BackingSpec } from "../../src/devices/blk/backing-spec.ts";
import { openNodeBacking } from "../../src/devices/blk/node-backing.ts";
import { startNodeDataplaneWorker } from "../../src/devices/node-dataplane.ts";

/** The test disk kind. */
export interface TestFileSpec {
  readonly kind: "test-file";
  readonly path: string;
  readonly readOnly?: boolean;
  /** Delay every read and write by this many ms. */
  readonly delayMs?: number;
  /** Reads fail with EIO. */
  readonly failReads?: boolean;
  /** Flushes fail with EIO. */
  readonly failFlush?: boolean;
  /** Log a warning line "test-backing flush" per flush. */
  readonly logFlush?: boolean;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function wrap(inner: BlkBacking, s: TestFileSpec, ctx: BackingContext): BlkBacking {
  const delay = s.delayMs ?? 0;
  return {
    get size() {
      return inner.size;
    },
    readOnly: inner.readOnly,
    async readv(offset, iov) {
      if (delay > 0) await sleep(delay);
      if (s.failReads === true) throw new Error("EIO: injected read failure");
      await inner.readv(offset, iov);
    },
    async writev(offset, iov) {
      if (delay > 0) await sleep(delay);
      await inner.writev(offset, iov);
    },
    async flush() {
      if (s.logFlush === true) ctx.logger.warn("test-backing flush");
      if (s.failFlush === true) throw new Error("EIO: injected flush failure");
      await inner.flush();
    },
    discard: (o, l) => inner.discard(o, l),
    writeZeroes: (o, l, u) => inner.writeZeroes(o, l, u),
    close: () => inner.close(),
  };
}

async function openTestBacking(spec: BackingSpec, ctx: BackingContext): Promise<BlkBacking> {
  if (spec.kind !== "test-file") return openNodeBacking(spec, ctx);
  const s = spec as unknown as TestFileSpec;
  const inner = await openNodeBacking(
    { kind: "file", path: s.path, readOnly: s.readOnly ?? false },
    ctx,
  );
  return wrap(inner, s, ctx);
}

startNodeDataplaneWorker({ openBacking: openTestBacking });

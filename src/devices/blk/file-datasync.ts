/**
 * FileBacking's flush: fdatasync, coalesced between concurrent callers.
 * Node-only. VIRTIO 1.2 §5.2.6.2 (VIRTIO_BLK_T_FLUSH: completed writes reach
 * stable storage); docs/conformance.md "Lifecycle".
 *
 * - Concurrent flushes share one fdatasync when it started after they were
 *   requested: a sync that started earlier may miss their writes, so they
 *   wait for the next one (at most one is queued behind the running one).
 * - Once an fdatasync has failed, every later flush fails too: the kernel may
 *   have dropped the dirty pages, and a later fdatasync succeeding would
 *   acknowledge lost data.
 *
 * @module
 */
import type { FileHandle } from "node:fs/promises";
import { type Logger, errorText } from "../../log.ts";

/** fdatasync of one image file, shared between concurrent callers (see the module header). */
export class DatasyncCoalescer {
  readonly #fh: FileHandle;
  readonly #path: string;
  readonly #log: Logger;
  #running: Promise<void> | null = null;
  #queued: Promise<void> | null = null;
  #failed: Error | undefined = undefined;

  constructor(fh: FileHandle, path: string, log: Logger) {
    this.#fh = fh;
    this.#path = path;
    this.#log = log;
  }

  /** Resolves once an fdatasync that started after this call succeeded. */
  flush(): Promise<void> {
    if (this.#failed !== undefined) return Promise.reject(this.#failed);
    // A queued sync has not started yet, so it will cover this caller's completed writes.
    if (this.#queued !== null) return this.#queued;
    if (this.#running === null) return this.#start();
    const queued = this.#running
      .catch(() => {})
      .then(() => {
        this.#queued = null;
        return this.#failed !== undefined ? Promise.reject(this.#failed) : this.#start();
      });
    this.#queued = queued;
    return queued;
  }

  #start(): Promise<void> {
    const p: Promise<void> = this.#fh.datasync().then(
      () => {
        if (this.#running === p) this.#running = null;
      },
      (e: unknown) => {
        if (this.#running === p) this.#running = null;
        this.#failed = e instanceof Error ? e : new Error(String(e));
        this.#log.error(
          `disk image ${this.#path}: fdatasync failed, flushes fail from now on: ${errorText(e)}`,
        );
        throw e;
      },
    );
    this.#running = p;
    return p;
  }
}

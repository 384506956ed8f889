/**
 * Backing stores written as ES modules: a runtime imports the module a
 * {@link ModuleBackingSpec} names and calls its `openBacking(options,
 * context)`, then checks that what came back is a {@link BlkBacking} before
 * a request reaches it. VIRTIO 1.2 §5.2.6 (the store answers the device's
 * requests; §5.2.4: the capacity it reports is in 512-byte sectors).
 * Portable (a dynamic `import()`).
 *
 * A store module looks like this (TypeScript; compile it, or write it as
 * plain JavaScript):
 *
 * ```ts
 * import type { BackingContext, BlkBacking } from "virtio-ts/blk";
 * export async function openBacking(options: unknown, context: BackingContext): Promise<BlkBacking> {
 *   return new MyStore(options);
 * }
 * ```
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../../errors.ts";
import type { BlkBacking } from "./backing.ts";
import type { BackingContext } from "./backing-spec.ts";

/** A backing store module, imported by every runtime that hosts one of the device's queues. */
export interface ModuleBackingSpec {
  readonly kind: "module";
  /** The module's URL (`file:` for a local file), as `import()` takes it. */
  readonly url: string;
  /** Handed to `openBacking` as its first argument (structured-cloneable: it crosses threads). */
  readonly options?: unknown;
}

/** What a store module exports. */
export type OpenBackingFunction = (
  options: unknown,
  context: BackingContext,
) => BlkBacking | Promise<BlkBacking>;

const METHODS = ["readv", "writev", "flush", "discard", "writeZeroes", "close"] as const;

function moduleError(url: string, what: string): VirtioError {
  return new VirtioError(ErrorCode.BLK_IMAGE, `backing module ${url}: ${what}`, { url });
}

/** The reason `b` is not a usable store, or undefined. */
function storeProblem(b: unknown, context: BackingContext): string | undefined {
  if (typeof b !== "object" || b === null) return "openBacking did not return an object";
  const s = b as Record<string, unknown>;
  const missing = METHODS.filter((m) => typeof s[m] !== "function");
  if (missing.length > 0) return `the store has no ${missing.join(", ")} method`;
  if (typeof s.readOnly !== "boolean") return "the store's readOnly is not a boolean";
  const size = s.size;
  if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0)
    return `the store's size ${String(size)} is not a byte count`;
  if (size % context.logicalBlockSize !== 0)
    return `the store's size ${size} is not a multiple of the logical block size ${context.logicalBlockSize}`;
  return undefined;
}

/**
 * Imports the module and opens its store.
 *
 * @throws {VirtioError} `BLK_IMAGE` (one line naming the module) when the
 *   module cannot be imported, exports no `openBacking`, its open fails, or
 *   it returns something that is not a store.
 */
export async function openModuleBacking(
  spec: ModuleBackingSpec,
  context: BackingContext,
): Promise<BlkBacking> {
  let open: unknown;
  try {
    open = ((await import(spec.url)) as { openBacking?: unknown }).openBacking;
  } catch (e) {
    throw moduleError(
      spec.url,
      `cannot be imported (${e instanceof Error ? e.message : String(e)})`,
    );
  }
  if (typeof open !== "function") throw moduleError(spec.url, "exports no openBacking function");
  let store: unknown;
  try {
    store = await (open as OpenBackingFunction)(spec.options, context);
  } catch (e) {
    throw moduleError(
      spec.url,
      `openBacking failed: ${e instanceof Error ? e.message : String(e)}`,
    );
  }
  const problem = storeProblem(store, context);
  if (problem !== undefined) {
    await (store as Partial<BlkBacking> | null)?.close?.().catch(() => {});
    throw moduleError(spec.url, problem);
  }
  return store as BlkBacking;
}

/**
 * The SIGBUS guard's view from TypeScript (native/sigbus.cc; contract in
 * docs/threat-model.md "Memory mappings"): a mapping made with `guard`
 * (./memory.ts) survives its file shrinking underneath — a touch past the
 * new end of file gets a zero page instead of killing the process — and
 * the faults absorbed are counted per mapping and process-wide. Reading the
 * counters is how the owner of a mapping learns that the memory was pulled
 * away; the handler is process-wide, the counters are readable from every
 * thread (each call loads them with acquire ordering in C++).
 *
 * Only SIGBUS for an address inside a guarded mapping is absorbed; any other
 * SIGBUS keeps its previous handler or default action (the process dies).
 *
 * @module
 */
import { native } from "./addon.ts";

/**
 * Faults absorbed in one mapping returned by `mmap(..., guard)` since it
 * was mapped (0 for an unguarded or detached one). Throws TypeError for a
 * buffer `mmap` did not return.
 */
export const mappingFaults: (buffer: ArrayBuffer) => number = (buffer) =>
  native.mappingFaults(buffer);

/** Faults absorbed in the whole process: unchanged means no guarded mapping faulted since. */
export const guardFaultTotal: () => number = () => native.guardFaultTotal();

/** Guarded mappings registered in the process (for leak checks). */
export const guardedMappingCount: () => number = () => native.guardSlotsInUse();

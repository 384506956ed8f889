/**
 * The in-process transport's binding of a virtio-blk dataplane: guest memory
 * as SharedArrayBuffer regions, doorbells on the register block. Portable
 * (no Node-only module). See ./seams.ts for the roles.
 *
 * @module
 */
import { GuestMemory, type TransferableGuestMemory } from "../../../memory/guest-memory.ts";
import { openRegisters } from "../../../transport/inproc/registers.ts";
import { InprocQueueDoorbells, type InprocDoorbellOptions } from "./inproc-doorbells.ts";
import type { DoorbellDescriptor, MemoryDescriptor } from "./protocol.ts";
import type { DataplaneBinding, DoorbellOpener, MemoryAttacher } from "./seams.ts";

/** Memory kind: the transport's SharedArrayBuffer regions. */
export const INPROC_MEMORY = "inproc-shared";
/** Doorbell kind: KICK / CALL counters of a register block. */
export const INPROC_DOORBELLS = "inproc";

/** Guest memory made of SharedArrayBuffer regions. */
export interface InprocMemoryDescriptor extends MemoryDescriptor {
  readonly kind: typeof INPROC_MEMORY;
  readonly memory: TransferableGuestMemory;
}

/** A queue's doorbells on a register block. */
export interface InprocDoorbellDescriptor extends DoorbellDescriptor {
  readonly kind: typeof INPROC_DOORBELLS;
  readonly registers: SharedArrayBuffer;
}

/**
 * The control thread's binding for a device served over the in-process
 * transport whose register block is `registers`.
 *
 * @throws {RangeError} if `registers` is not a register block.
 */
export function inprocDataplaneBinding(registers: SharedArrayBuffer): DataplaneBinding {
  openRegisters(registers);
  return {
    exportMemory(memory: GuestMemory): InprocMemoryDescriptor {
      const t = memory.toTransferable();
      for (const r of t.regions) {
        if (!(r.buffer instanceof SharedArrayBuffer))
          throw new TypeError(
            "the in-process dataplane needs SharedArrayBuffer-backed guest memory",
          );
      }
      return { kind: INPROC_MEMORY, memory: t };
    },
    queueDoorbells: (): InprocDoorbellDescriptor => ({ kind: INPROC_DOORBELLS, registers }),
  };
}

/** Worker side: maps {@link InprocMemoryDescriptor}s. */
export const attachInprocMemory: MemoryAttacher = (d) =>
  GuestMemory.fromTransferable((d as InprocMemoryDescriptor).memory);

/** Worker side: opens {@link InprocDoorbellDescriptor}s. */
export function inprocDoorbellOpener(options: InprocDoorbellOptions = {}): DoorbellOpener {
  return (queue, d) =>
    new InprocQueueDoorbells((d as InprocDoorbellDescriptor).registers, queue, options);
}

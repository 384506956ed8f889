/**
 * The in-process transport's binding of the dataplane: guest memory as
 * SharedArrayBuffer regions, doorbells on the register block. VIRTIO 1.2
 * §2.3 (notifications), §2.7 (rings in guest memory). Portable (no
 * Node-only module); it knows no device. See ../../dataplane/seams.ts for
 * the roles.
 *
 * @module
 */
import type {
  DataplaneBinding,
  DoorbellDescriptor,
  DoorbellOpener,
  MemoryDescriptor,
  MemorySpaceFactory,
} from "../../dataplane/seams.ts";
import { GuestMemory, type TransferableGuestMemory } from "../../memory/guest-memory.ts";
import { InprocQueueDoorbells, type InprocDoorbellOptions } from "./dataplane-doorbells.ts";
import { openRegisters } from "./registers.ts";

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

/** Runtime side: maps {@link InprocMemoryDescriptor}s (nothing to release: the buffers are shared). */
export const inprocMemorySpace: MemorySpaceFactory = () => {
  let memory: GuestMemory | null = null;
  return {
    update: (d) =>
      void (memory = GuestMemory.fromTransferable((d as InprocMemoryDescriptor).memory)),
    memory: () => memory,
    dispose: () => void (memory = null),
  };
};

/** Runtime side: opens {@link InprocDoorbellDescriptor}s. */
export function inprocDoorbellOpener(options: InprocDoorbellOptions = {}): DoorbellOpener {
  return (queue, d) =>
    new InprocQueueDoorbells((d as InprocDoorbellDescriptor).registers, queue, options);
}

/**
 * What a completed virtio-blk request says: the status byte and used length
 * checked, IN data and the device ID copied out of the bounce pool. VIRTIO
 * 1.2 §5.2.6 (the status byte: VIRTIO_BLK_S_OK, _IOERR, _UNSUPP; the GET_ID
 * string), §2.7.14 (the driver receives used buffers and their length).
 *
 * The device is untrusted. Status OK is success; IOERR / UNSUPP become
 * {@link BlkIoError} (`BLK_IOERR` / `BLK_UNSUPP`). A used length of 0 (no
 * status byte) is `BLK_USED_LEN`; so is an OK read whose used length is
 * shorter than its data + 1 (the buffer was not filled). Other lengths up to
 * the writable size (the ring caps them) are accepted: QEMU reports the
 * whole writable size, this project's device the bytes written. A status
 * other than 0/1/2 (the driver presets 0xff) is `BLK_BAD_STATUS`.
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../../errors.ts";
import type { GuestSlice } from "../../memory/guest-memory.ts";
import {
  VIRTIO_BLK_ID_BYTES,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
} from "../../spec/blk.ts";
import { BLK_DRIVER_SLOT_STATUS } from "./driver-memory.ts";
import { BlkIoError, blkRequestName, type BlkOp, type BlkSlot } from "./driver-request.ts";

/** The error for a status byte other than VIRTIO_BLK_S_OK. */
function statusError(slot: BlkSlot, status: number): Error {
  const name = blkRequestName(slot.type);
  if (status === VIRTIO_BLK_S_IOERR || status === VIRTIO_BLK_S_UNSUPP)
    return new BlkIoError(
      status,
      slot.type,
      `${name} at byte ${slot.offset} (${slot.dataLen} bytes) failed: ${status === VIRTIO_BLK_S_IOERR ? "VIRTIO_BLK_S_IOERR" : "VIRTIO_BLK_S_UNSUPP"}`,
    );
  return new VirtioError(
    ErrorCode.BLK_BAD_STATUS,
    `${name} at byte ${slot.offset}: the device wrote status ${status}, not 0, 1 or 2`,
    { type: slot.type, status },
  );
}

/** Reads the answers of completed requests from the slot area and the bounce pool. */
export class BlkResultReader {
  readonly #slotArea: GuestSlice;
  readonly #bounceArea: GuestSlice;
  /** Guest address of the bounce area's first byte. */
  readonly #bounceBase: number;

  constructor(slotArea: GuestSlice, bounceArea: GuestSlice, bounceBase: number) {
    this.#slotArea = slotArea;
    this.#bounceArea = bounceArea;
    this.#bounceBase = bounceBase;
  }

  /**
   * Checks the status byte and used length of the request in `slot`; on
   * success copies IN data / the ID out. Returns the request's failure or null.
   */
  result(slot: BlkSlot, op: BlkOp, usedLen: number): Error | null {
    if (usedLen < 1)
      return new VirtioError(
        ErrorCode.BLK_USED_LEN,
        `${blkRequestName(slot.type)} at byte ${slot.offset}: used length 0, the device wrote no status byte`,
        { type: slot.type, usedLen },
      );
    const status = this.#slotArea.readU8(slot.off + BLK_DRIVER_SLOT_STATUS);
    if (status !== VIRTIO_BLK_S_OK) return statusError(slot, status);
    if (slot.type === VIRTIO_BLK_T_IN) {
      if (usedLen < slot.dataLen + 1)
        return new VirtioError(
          ErrorCode.BLK_USED_LEN,
          `${blkRequestName(slot.type)} of ${slot.dataLen} bytes completed OK with used length ${usedLen}: data not filled`,
          { type: slot.type, usedLen, dataLen: slot.dataLen },
        );
      if (op.user !== null && op.error === null)
        this.#bounceArea.readBytes(
          slot.bounceAddr - this.#bounceBase,
          op.user.subarray(slot.userPos, slot.userPos + slot.dataLen),
        );
    } else if (slot.type === VIRTIO_BLK_T_GET_ID) {
      op.result = this.#readId(slot.bounceAddr - this.#bounceBase, usedLen - 1);
    }
    return null;
  }

  /** The NUL-padded ASCII ID (§5.2.6: "If the string is 20 bytes long then there is no NUL terminator"). */
  #readId(off: number, written: number): string {
    let s = "";
    const n = Math.min(VIRTIO_BLK_ID_BYTES, written);
    for (let i = 0; i < n; i++) {
      const c = this.#bounceArea.readU8(off + i);
      if (c === 0) break;
      s += String.fromCharCode(c);
    }
    return s;
  }
}

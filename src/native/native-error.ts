/**
 * The error a failed system call in the native addon throws.
 *
 * A {@link NativeError} is a {@link VirtioError} with code
 * `VIRTIO_ERR_NATIVE`; `errnoCode` names the condition the way Node.js names
 * errno values (`"EAGAIN"`, `"EADDRINUSE"`, `"EOPNOTSUPP"`), or
 * `"MSG_CTRUNC"` when a received message carried more fds than asked for.
 * Misuse of the API (wrong argument types or ranges) throws TypeError /
 * RangeError instead.
 *
 * @module
 */
import { getSystemErrorMap } from "node:util";
import { ErrorCode, VirtioError } from "../errors.ts";

/** Options of {@link NativeError}'s constructor. */
export interface NativeErrorOptions {
  /** The file system path involved, if any. */
  readonly path?: string | undefined;
  /** Overrides the name derived from `errno` (e.g. `"MSG_CTRUNC"`). */
  readonly errnoCode?: string | undefined;
  /** Overrides the description derived from `errno`. */
  readonly message?: string | undefined;
  /** Further values for logs, merged into `details`. */
  readonly details?: Readonly<Record<string, number | string | bigint | boolean>>;
}

let errnoTable: Map<number, [string, string]> | undefined;

/** Linux's EOPNOTSUPP, which libuv names by its alias ENOTSUP ("... on socket"). */
const EOPNOTSUPP = 95;

/** `[name, description]` of a positive errno value, e.g. `["EAGAIN", "resource temporarily unavailable"]`. */
function describeErrno(errno: number): [string, string] {
  if (errno === EOPNOTSUPP) return ["EOPNOTSUPP", "operation not supported"];
  errnoTable ??= getSystemErrorMap();
  return errnoTable.get(-errno) ?? [`errno ${errno}`, "unknown error"];
}

/** A failed system call (or a related kernel condition) in the native addon. */
export class NativeError extends VirtioError {
  /** The system call that failed, e.g. `"bind"`. */
  readonly syscall: string;
  /** The errno value (positive, as in `<errno.h>`); 0 for `"MSG_CTRUNC"`. */
  readonly errno: number;
  /** The errno name, e.g. `"EADDRINUSE"`, or `"MSG_CTRUNC"`. */
  readonly errnoCode: string;
  /** The file system path involved, if any. */
  readonly path: string | undefined;

  constructor(syscall: string, errno: number, options: NativeErrorOptions = {}) {
    const [name, description] = describeErrno(errno);
    const errnoCode = options.errnoCode ?? name;
    const text = options.message ?? description;
    super(
      ErrorCode.NATIVE,
      `${syscall} ${errnoCode}: ${text}${options.path === undefined ? "" : ` (${options.path})`}`,
      {
        syscall,
        errno,
        errnoCode,
        ...(options.path === undefined ? {} : { path: options.path }),
        ...options.details,
      },
    );
    this.syscall = syscall;
    this.errno = errno;
    this.errnoCode = errnoCode;
    this.path = options.path;
  }
}

/** True if `e` is a {@link NativeError} (optionally with the given `errnoCode`). */
export function isNativeError(e: unknown, errnoCode?: string): e is NativeError {
  return e instanceof NativeError && (errnoCode === undefined || e.errnoCode === errnoCode);
}

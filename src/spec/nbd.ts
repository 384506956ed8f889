/**
 * NBD protocol constants with the spec's names. NetworkBlockDevice/nbd
 * doc/proto.md; each group names the heading it comes from. Every integer
 * on the wire is big-endian ("network byte order", proto.md "Conventions").
 *
 * @module
 */

// proto.md "Newstyle negotiation"
/** ASCII `NBDMAGIC` (`INIT_PASSWD`): the first 8 bytes every server sends. */
export const NBDMAGIC = 0x4e42444d41474943n;
/** ASCII `IHAVEOPT`: newstyle negotiation; also the magic of every option request. */
export const IHAVEOPT = 0x49484156454f5054n;
// proto.md "Oldstyle negotiation"
/** `cliserv_magic`: an oldstyle server (not supported). */
export const NBD_CLISERV_MAGIC = 0x00420281861253n;
// proto.md "Fixed newstyle negotiation"
/** Magic of every option reply. */
export const NBD_OPT_REPLY_MAGIC = 0x3e889045565a9n;

// proto.md "Handshake flags"
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
// proto.md "Client flags"
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

// proto.md "Transmission flags"
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_RESIZE = 1 << 9;
export const NBD_FLAG_SEND_CACHE = 1 << 10;
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11;
export const NBD_FLAG_BLOCK_STATUS_PAYLOAD = 1 << 12;

// proto.md "Option types"
export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;
export const NBD_OPT_EXTENDED_HEADERS = 11;

// proto.md "Option reply types"
export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
/** Bit 31: the reply is an error. */
export const NBD_REP_FLAG_ERROR = 0x80000000;
export const NBD_REP_ERR_UNSUP = 0x80000001;
export const NBD_REP_ERR_POLICY = 0x80000002;
export const NBD_REP_ERR_INVALID = 0x80000003;
export const NBD_REP_ERR_PLATFORM = 0x80000004;
export const NBD_REP_ERR_TLS_REQD = 0x80000005;
export const NBD_REP_ERR_UNKNOWN = 0x80000006;
export const NBD_REP_ERR_SHUTDOWN = 0x80000007;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = 0x80000008;
export const NBD_REP_ERR_TOO_BIG = 0x80000009;
export const NBD_REP_ERR_EXT_HEADER_REQD = 0x8000000a;

// proto.md "Option reply types" (NBD_REP_INFO)
export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

// proto.md "Request message"
// proto.md "Simple reply message"
// proto.md "Structured reply chunk message"
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

// proto.md "Request types"
export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;

// proto.md "Command flags"
export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;

// proto.md "Structured reply flags"
export const NBD_REPLY_FLAG_DONE = 1 << 0;

// proto.md "Structured reply types"
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
/** Bit 15: an error chunk. */
export const NBD_REPLY_TYPE_ERROR_BIT = 1 << 15;
export const NBD_REPLY_TYPE_ERROR = (1 << 15) + 1;
export const NBD_REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2;

// proto.md "Error values"
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

// Byte layouts (proto.md "Request message" and the reply headings above).
/** magic, command flags, type, cookie, offset, length. */
export const NBD_REQUEST_SIZE = 28;
/** magic, error, cookie. */
export const NBD_SIMPLE_REPLY_SIZE = 16;
/** magic, flags, type, cookie, length. */
export const NBD_STRUCTURED_REPLY_SIZE = 20;
/** IHAVEOPT, option, length (proto.md "Newstyle negotiation"). */
export const NBD_OPTION_HEADER_SIZE = 16;
/** magic, option, reply type, length (proto.md "Fixed newstyle negotiation"). */
export const NBD_OPTION_REPLY_HEADER_SIZE = 20;
/** Export size, transmission flags, 124 zero bytes (NBD_OPT_EXPORT_NAME's reply). */
export const NBD_EXPORT_NAME_ZEROES = 124;

// proto.md "Conventions": strings "MUST be no longer than 4096 bytes".
export const NBD_MAX_STRING_LENGTH = 4096;
// proto.md "Size constraints"
/** An advertised minimum block size "MUST NOT be larger than 2^16". */
export const NBD_MAX_MINIMUM_BLOCK_SIZE = 1 << 16;
/** The payload every server should accept and no party should call a denial of service. */
export const NBD_DEFAULT_MAX_PAYLOAD = 1 << 25;
/** Default preferred block size when none is advertised. */
export const NBD_DEFAULT_PREFERRED_BLOCK_SIZE = 1 << 12;
// doc/uri.md "NBD URI authority": the IANA port.
export const NBD_DEFAULT_PORT = 10809;

const names = (entries: Record<string, number>): Map<number, string> =>
  new Map(Object.entries(entries).map(([k, v]) => [v, k]));

const CMD_NAMES = names({
  NBD_CMD_READ,
  NBD_CMD_WRITE,
  NBD_CMD_DISC,
  NBD_CMD_FLUSH,
  NBD_CMD_TRIM,
  NBD_CMD_CACHE,
  NBD_CMD_WRITE_ZEROES,
  NBD_CMD_BLOCK_STATUS,
});
const ERROR_NAMES = names({
  NBD_EPERM,
  NBD_EIO,
  NBD_ENOMEM,
  NBD_EINVAL,
  NBD_ENOSPC,
  NBD_EOVERFLOW,
  NBD_ENOTSUP,
  NBD_ESHUTDOWN,
});
const REP_NAMES = names({
  NBD_REP_ACK,
  NBD_REP_SERVER,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_REP_ERR_UNSUP,
  NBD_REP_ERR_POLICY,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_PLATFORM,
  NBD_REP_ERR_TLS_REQD,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_SHUTDOWN,
  NBD_REP_ERR_BLOCK_SIZE_REQD,
  NBD_REP_ERR_TOO_BIG,
  NBD_REP_ERR_EXT_HEADER_REQD,
});

/** `NBD_CMD_READ` etc., or `cmd N` for an unknown type. */
export function nbdCommandName(type: number): string {
  return CMD_NAMES.get(type) ?? `cmd ${type}`;
}

/** `NBD_EIO` etc., or `error N` for a value the spec does not define. */
export function nbdErrorName(error: number): string {
  return ERROR_NAMES.get(error) ?? `error ${error}`;
}

/** `NBD_REP_ACK` etc., or `reply 0x…` for an unknown type. */
export function nbdReplyTypeName(type: number): string {
  return REP_NAMES.get(type) ?? `reply 0x${type.toString(16)}`;
}

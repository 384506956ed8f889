/**
 * The client side of the NBD handshake: fixed newstyle negotiation with
 * option haggling. NetworkBlockDevice/nbd doc/proto.md "Fixed newstyle
 * negotiation", proto.md "Option types", proto.md "Option reply types",
 * proto.md "Size constraints", proto.md "Transmission flags".
 *
 * 1. NBDMAGIC, IHAVEOPT, handshake flags (oldstyle servers are refused).
 * 2. Client flags: NBD_FLAG_C_FIXED_NEWSTYLE and NBD_FLAG_C_NO_ZEROES where
 *    the server set the matching flag ("MUST NOT be set if the server did not
 *    set NBD_FLAG_NO_ZEROES").
 * 3. NBD_OPT_STRUCTURED_REPLY (ACK: structured replies; an error: simple ones).
 * 4. NBD_OPT_GO asking for NBD_INFO_EXPORT and NBD_INFO_BLOCK_SIZE; only if
 *    the server answers NBD_REP_ERR_UNSUP, NBD_OPT_EXPORT_NAME instead (and
 *    directly on a server without fixed newstyle).
 *
 * Every reply field is checked: magics, the option echoed, reply lengths
 * (at most {@link MAX_OPTION_REPLY} bytes), info lengths, block sizes as the
 * spec constrains them, NBD_FLAG_HAS_FLAGS ("MUST always be 1"). A violation
 * is `NBD_HANDSHAKE`; an option error from the server is `NBD_REFUSED` after
 * NBD_OPT_ABORT (the client's soft disconnect).
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../errors.ts";
import * as nbd from "../spec/nbd.ts";
import { encodeGoData, encodeOption, readU64, serverText } from "./codec.ts";

/** Largest option reply accepted during the handshake. */
export const MAX_OPTION_REPLY = 64 * 1024;
/** Replies accepted for one NBD_OPT_GO before its final one. */
const MAX_INFO_REPLIES = 64;

/** Reads and writes during the handshake. */
export interface HandshakeIo {
  /** Exactly `n` bytes; rejects when the connection ends or the deadline passes. */
  read(n: number): Promise<Buffer>;
  write(bytes: Uint8Array): void;
}

/** What the handshake agreed on. */
export interface NbdExportInfo {
  readonly exportName: string;
  /** Export size in bytes (a safe integer). */
  readonly size: number;
  /** Transmission flags (NBD_FLAG_*). */
  readonly flags: number;
  /** The server's size constraints (defaults when none were advertised). */
  readonly minBlockSize: number;
  readonly preferredBlockSize: number;
  /** Advertised maximum payload (0xffffffff: no limit), or the default 2^25. */
  readonly maxPayload: number;
  /** True if NBD_INFO_BLOCK_SIZE came from the server. */
  readonly blockSizeAdvertised: boolean;
  readonly structuredReplies: boolean;
  /** True if NBD_OPT_GO ended the handshake; false after NBD_OPT_EXPORT_NAME. */
  readonly usedGo: boolean;
}

/** Handshake choices. */
export interface HandshakeOptions {
  /** Ask for structured replies (default true). */
  readonly structuredReplies?: boolean;
}

export function handshakeError(why: string): VirtioError {
  return new VirtioError(ErrorCode.NBD_HANDSHAKE, `NBD handshake: ${why}`);
}

interface OptionReply {
  readonly type: number;
  readonly data: Buffer;
}

async function readOptionReply(io: HandshakeIo, option: number): Promise<OptionReply> {
  const h = await io.read(nbd.NBD_OPTION_REPLY_HEADER_SIZE);
  if (h.readBigUInt64BE(0) !== nbd.NBD_OPT_REPLY_MAGIC)
    throw handshakeError(`bad option reply magic 0x${h.readBigUInt64BE(0).toString(16)}`);
  const echoed = h.readUInt32BE(8);
  const type = h.readUInt32BE(12);
  const length = h.readUInt32BE(16);
  if (echoed !== option) throw handshakeError(`reply for option ${echoed}, expected ${option}`);
  if (length > MAX_OPTION_REPLY)
    throw handshakeError(
      `${nbd.nbdReplyTypeName(type)} of ${length} bytes (cap ${MAX_OPTION_REPLY})`,
    );
  return { type, data: length === 0 ? Buffer.alloc(0) : await io.read(length) };
}

function refused(io: HandshakeIo, option: string, r: OptionReply): VirtioError {
  io.write(encodeOption(nbd.NBD_OPT_ABORT)); // soft disconnect ("it MUST use soft disconnect")
  const text = r.data.length > 0 ? `: ${serverText(r.data)}` : "";
  const tls =
    r.type === nbd.NBD_REP_ERR_TLS_REQD ? " (the server requires TLS, which is not supported)" : "";
  return new VirtioError(
    ErrorCode.NBD_REFUSED,
    `NBD server refused ${option} with ${nbd.nbdReplyTypeName(r.type)}${tls}${text}`,
    { reply: r.type },
  );
}

/** Steps 1 and 2: returns the handshake flags the server sent. */
async function greet(io: HandshakeIo): Promise<number> {
  const h = await io.read(18);
  if (h.readBigUInt64BE(0) !== nbd.NBDMAGIC)
    throw handshakeError("not an NBD server (no NBDMAGIC)");
  const magic = h.readBigUInt64BE(8);
  if (magic === nbd.NBD_CLISERV_MAGIC)
    throw handshakeError("oldstyle negotiation is not supported");
  if (magic !== nbd.IHAVEOPT)
    throw handshakeError(`bad magic 0x${magic.toString(16)} after NBDMAGIC`);
  const flags = h.readUInt16BE(16);
  const client = Buffer.alloc(4);
  client.writeUInt32BE(flags & (nbd.NBD_FLAG_C_FIXED_NEWSTYLE | nbd.NBD_FLAG_C_NO_ZEROES));
  io.write(client);
  return flags;
}

async function negotiateStructured(io: HandshakeIo): Promise<boolean> {
  io.write(encodeOption(nbd.NBD_OPT_STRUCTURED_REPLY));
  const r = await readOptionReply(io, nbd.NBD_OPT_STRUCTURED_REPLY);
  if (r.type === nbd.NBD_REP_ACK) {
    if (r.data.length !== 0) throw handshakeError("NBD_REP_ACK with data");
    return true;
  }
  if (r.type === nbd.NBD_REP_ERR_SHUTDOWN) throw refused(io, "NBD_OPT_STRUCTURED_REPLY", r);
  if (r.type & nbd.NBD_REP_FLAG_ERROR) return false;
  throw handshakeError(`${nbd.nbdReplyTypeName(r.type)} in reply to NBD_OPT_STRUCTURED_REPLY`);
}

interface GoState {
  size?: number;
  flags?: number;
  block?: readonly [number, number, number];
}

const isPow2 = (n: number): boolean => n > 0 && (n & (n - 1)) === 0;

/** proto.md "Size constraints": the MUSTs on advertised block sizes. */
function checkBlockSizes(min: number, pref: number, max: number): void {
  if (!isPow2(min) || min > nbd.NBD_MAX_MINIMUM_BLOCK_SIZE)
    throw handshakeError(`minimum block size ${min} is not a power of 2 up to 2^16`);
  if (!isPow2(pref) || pref < Math.max(min, 512))
    throw handshakeError(`preferred block size ${pref} is not a power of 2 ≥ max(minimum, 512)`);
  if (max < pref)
    throw handshakeError(`maximum payload ${max} is below the preferred block size ${pref}`);
}

function takeInfo(st: GoState, data: Buffer): void {
  if (data.length < 2) throw handshakeError(`NBD_REP_INFO of ${data.length} bytes`);
  const info = data.readUInt16BE(0);
  if (info === nbd.NBD_INFO_EXPORT) {
    if (data.length !== 12) throw handshakeError(`NBD_INFO_EXPORT of ${data.length} bytes, not 12`);
    st.size = readU64(data, 2);
    st.flags = data.readUInt16BE(10);
  } else if (info === nbd.NBD_INFO_BLOCK_SIZE) {
    if (data.length !== 14)
      throw handshakeError(`NBD_INFO_BLOCK_SIZE of ${data.length} bytes, not 14`);
    const sizes = [data.readUInt32BE(2), data.readUInt32BE(6), data.readUInt32BE(10)] as const;
    checkBlockSizes(...sizes);
    st.block = sizes;
  } // "The client MUST ignore information replies it does not understand."
}

/** Step 4: NBD_OPT_GO; undefined if the server does not know it (NBD_REP_ERR_UNSUP). */
async function go(io: HandshakeIo, name: string): Promise<GoState | undefined> {
  const infos = [nbd.NBD_INFO_EXPORT, nbd.NBD_INFO_BLOCK_SIZE];
  io.write(encodeOption(nbd.NBD_OPT_GO, encodeGoData(name, infos)));
  const st: GoState = {};
  for (let i = 0; i <= MAX_INFO_REPLIES; i++) {
    const r = await readOptionReply(io, nbd.NBD_OPT_GO);
    if (r.type === nbd.NBD_REP_INFO) takeInfo(st, r.data);
    else if (r.type === nbd.NBD_REP_ACK) {
      // "the server MUST send at least one NBD_REP_INFO, with an NBD_INFO_EXPORT information type"
      if (st.size === undefined)
        throw handshakeError("NBD_OPT_GO acknowledged without NBD_INFO_EXPORT");
      return st;
    } else if (r.type === nbd.NBD_REP_ERR_UNSUP) return undefined;
    else if (r.type & nbd.NBD_REP_FLAG_ERROR)
      throw refused(io, `export ${JSON.stringify(name)}`, r);
    else throw handshakeError(`${nbd.nbdReplyTypeName(r.type)} in reply to NBD_OPT_GO`);
  }
  throw handshakeError(`more than ${MAX_INFO_REPLIES} replies to NBD_OPT_GO`);
}

/** NBD_OPT_EXPORT_NAME: size, flags, then 124 zeroes unless NO_ZEROES was agreed. */
async function exportName(io: HandshakeIo, name: string, noZeroes: boolean): Promise<GoState> {
  io.write(encodeOption(nbd.NBD_OPT_EXPORT_NAME, Buffer.from(name, "utf8")));
  let h: Buffer;
  try {
    h = await io.read(10 + (noZeroes ? 0 : nbd.NBD_EXPORT_NAME_ZEROES));
  } catch (e) {
    // "If the server is unwilling to allow the export, it MUST terminate the session."
    if (e instanceof VirtioError && e.code === ErrorCode.NBD_DISCONNECTED)
      throw new VirtioError(
        ErrorCode.NBD_REFUSED,
        `NBD server closed the connection on export ${JSON.stringify(name)}`,
      );
    throw e;
  }
  return { size: readU64(h, 0), flags: h.readUInt16BE(8) };
}

function exportInfo(
  name: string,
  st: GoState,
  structured: boolean,
  usedGo: boolean,
): NbdExportInfo {
  const flags = st.flags ?? 0;
  if ((flags & nbd.NBD_FLAG_HAS_FLAGS) === 0)
    throw handshakeError("transmission flags without NBD_FLAG_HAS_FLAGS");
  const size = st.size ?? Infinity;
  if (!Number.isSafeInteger(size))
    throw new VirtioError(
      ErrorCode.NBD_EXPORT,
      `NBD export ${JSON.stringify(name)} is larger than 2^53 bytes`,
    );
  const [min, pref, max] = st.block ?? [
    1,
    nbd.NBD_DEFAULT_PREFERRED_BLOCK_SIZE,
    nbd.NBD_DEFAULT_MAX_PAYLOAD,
  ];
  return {
    exportName: name,
    size,
    flags,
    minBlockSize: min,
    preferredBlockSize: pref,
    maxPayload: max,
    blockSizeAdvertised: st.block !== undefined,
    structuredReplies: structured,
    usedGo,
  };
}

/**
 * Runs the handshake for export `name` up to the transmission phase.
 *
 * @throws {VirtioError} `NBD_HANDSHAKE`, `NBD_REFUSED`, `NBD_EXPORT`, or what `io.read` rejects with.
 */
export async function nbdHandshake(
  io: HandshakeIo,
  name: string,
  options: HandshakeOptions = {},
): Promise<NbdExportInfo> {
  const hflags = await greet(io);
  const noZeroes = (hflags & nbd.NBD_FLAG_NO_ZEROES) !== 0;
  if ((hflags & nbd.NBD_FLAG_FIXED_NEWSTYLE) === 0)
    return exportInfo(name, await exportName(io, name, noZeroes), false, false);
  const structured = options.structuredReplies !== false && (await negotiateStructured(io));
  const st = await go(io, name);
  if (st) return exportInfo(name, st, structured, true);
  return exportInfo(name, await exportName(io, name, noZeroes), structured, false);
}

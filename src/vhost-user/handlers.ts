/**
 * One small handler per front-end request (libvhost-user `*_exec` style).
 * qemu/qemu docs/interop/vhost-user.rst "Front-end message types",
 * "REPLY_ACK", "Ring states", "Memory access".
 *
 * A handler returns the reply body of a request that has one, a REPLY_ACK
 * status for one that does not (nothing = 0 = success; a number ≠ 0 = a
 * refusal that keeps the connection), or throws a {@link VirtioError} for a
 * protocol violation, which closes the connection. fds a handler keeps are
 * taken out of `msg.fds` ({@link takeFd}); the dispatcher closes the rest.
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../errors.ts";
import { VIRTIO_F_VERSION_1, hasFeature } from "../spec/virtio.ts";
import { isPackedRing, ringPartBytes, ringSizeProblem } from "../ring/ring-layout.ts";
import {
  VHOST_VRING_F_LOG,
  VhostUserRequest as R,
  vhostUserRequestName,
} from "../spec/vhost-user.ts";
import {
  decodeConfig,
  decodeMemoryTable,
  decodeSingleMemRegion,
  decodeU64,
  decodeVringAddr,
  decodeVringFile,
  decodeVringState,
  encodeConfig,
  encodeU64,
  encodeVringState,
} from "./codec.ts";
import { takeFd, type VhostUserMessage } from "./framing.ts";
import { getInflightFd, setInflightFd } from "./handlers-inflight.ts";
import { validateRegion } from "./memory-table.ts";
import type { VhostUserSession } from "./session.ts";

/** A reply body with fds attached; the connection sends them, then closes its copies. */
export interface ReplyWithFds {
  readonly payload: Uint8Array;
  readonly fds: readonly number[];
}

/** Reply body (with fds), REPLY_ACK status (0 = success), or nothing (success). */
export type HandlerResult = Uint8Array | ReplyWithFds | number | undefined;

/** Handles one request. */
export type Handler = (
  s: VhostUserSession,
  msg: VhostUserMessage,
) => HandlerResult | Promise<HandlerResult>;

/** REPLY_ACK status of a refused request whose connection stays up. */
export const REPLY_ACK_FAILED = 1;

function violation(
  msg: VhostUserMessage,
  text: string,
  details: Record<string, number | bigint> = {},
): VirtioError {
  return new VirtioError(
    ErrorCode.VHOST_USER_PROTOCOL,
    `${vhostUserRequestName(msg.request)}: ${text}`,
    {
      request: msg.request,
      ...details,
    },
  );
}

const hex = (v: bigint): string => `0x${v.toString(16)}`;

// ------------------------------------------------------------ features and ownership

const getFeatures: Handler = (s) => encodeU64(s.offeredFeatures);

const setFeatures: Handler = async (s, msg) => {
  const f = decodeU64(msg.payload);
  const extra = f & ~s.offeredFeatures;
  if (extra !== 0n)
    throw violation(msg, `features ${hex(extra)} were not offered`, { features: f });
  // virtio-ts serves modern (VERSION_1) devices only, as libvhost-user does.
  if (!hasFeature(f, VIRTIO_F_VERSION_1))
    throw violation(msg, "VIRTIO_F_VERSION_1 not set (legacy devices are not supported)");
  s.features = f;
  if (!s.protocolFeaturesNegotiated) {
    // "If VHOST_USER_F_PROTOCOL_FEATURES has not been negotiated, the ring starts directly in the enabled state."
    for (const r of s.rings) r.enabled = true;
  }
  // Never disables a ring: running rings keep their features until their next start.
  await s.reconcileAll();
};

const getProtocolFeatures: Handler = (s) => encodeU64(s.offeredProtocolFeatures);

const setProtocolFeatures: Handler = (s, msg) => {
  const f = decodeU64(msg.payload);
  const extra = f & ~s.offeredProtocolFeatures;
  if (extra !== 0n)
    throw violation(msg, `protocol features ${hex(extra)} were not offered`, { features: f });
  s.protocolFeatures = f;
};

const setOwner: Handler = (s) => {
  s.owner = true;
};

/** Deprecated; the spec recommends ignoring it (disabling rings would lose work). */
const resetOwner: Handler = (s) => {
  s.log(`vhost-user: ${s.backend.name}: VHOST_USER_RESET_OWNER ignored (deprecated)`);
};

const getQueueNum: Handler = (s) => encodeU64(BigInt(s.rings.length));

const getMaxMemSlots: Handler = (s) => encodeU64(BigInt(s.maxMemSlots));

// ------------------------------------------------------------ memory table

/**
 * SET_MEM_TABLE replaces the whole table; fds match the regions in number and
 * order. The new regions are mapped first (a bad one fails before any ring is
 * disturbed), then the running rings stop, the old regions go and the rings
 * restart over the new memory.
 */
const setMemTable: Handler = async (s, msg) => {
  const regions = decodeMemoryTable(msg.payload).map(validateRegion);
  s.memory.checkReplace(regions);
  for (let i = 0; i < regions.length; i++) await s.dataplane.addRegion(regions[i]!, msg.fds[i]!);
  await s.stopAll();
  for (const r of s.memory.regions) await s.dataplane.removeRegion(r);
  s.memory.replace(regions);
  await s.reconcileAll();
};

/** ADD_MEM_REG appends one region; running rings restart to see it. */
const addMemReg: Handler = async (s, msg) => {
  const region = validateRegion(decodeSingleMemRegion(msg.payload));
  s.memory.checkAdd(region);
  await s.dataplane.addRegion(region, msg.fds[0]!);
  await s.stopAll();
  s.memory.add(region);
  await s.reconcileAll();
};

/** REM_MEM_REG: "identified by its guest address, user address and size. The mmap offset is ignored." */
const remMemReg: Handler = async (s, msg) => {
  const wanted = validateRegion({ ...decodeSingleMemRegion(msg.payload), mmapOffset: 0n });
  const region = s.memory.find(wanted);
  if (region === undefined) {
    s.log(
      `vhost-user: ${s.backend.name}: VHOST_USER_REM_MEM_REG for an unknown region (gpa 0x${wanted.gpa.toString(16)})`,
    );
    return REPLY_ACK_FAILED;
  }
  await s.stopAll();
  await s.dataplane.removeRegion(region);
  s.memory.remove(region);
  await s.reconcileAll();
  return undefined;
};

// ------------------------------------------------------------ rings

const setVringNum: Handler = async (s, msg) => {
  const { index, num } = decodeVringState(msg.payload);
  const ring = s.ring(index);
  await s.stop(ring);
  ring.num = num;
  ring.startFailed = false;
  await s.reconcile(ring);
};

const setVringBase: Handler = async (s, msg) => {
  const { index, num } = decodeVringState(msg.payload);
  const ring = s.ring(index);
  // Split rings: the base is last_avail_idx, a u16. Packed rings: positions and
  // wrap counters in all 32 bits ("Vring descriptor indices for packed
  // virtqueues"), checked against the ring when it starts.
  if (num > 0xffff && !isPackedRing(s.features))
    throw violation(msg, `base ${num} of ring ${index} is not a u16`, { index, num });
  await s.stop(ring);
  ring.base = num;
  await s.reconcile(ring);
};

const setVringAddr: Handler = async (s, msg) => {
  const addr = decodeVringAddr(msg.payload);
  const ring = s.ring(addr.index);
  if ((addr.flags & (1 << VHOST_VRING_F_LOG)) !== 0)
    throw violation(msg, `ring ${addr.index}: dirty logging (VHOST_VRING_F_LOG) is not supported`);
  // With a known size the whole ring part must lie in one region; otherwise its first byte.
  const valid = ringSizeProblem(ring.num, s.features) === null;
  const bytes = valid ? ringPartBytes(ring.num, s.features) : { desc: 1, avail: 1, used: 1 };
  s.checkRingAddress(ring, "descriptor table", addr.desc, bytes.desc);
  s.checkRingAddress(ring, "available ring", addr.avail, bytes.avail);
  s.checkRingAddress(ring, "used ring", addr.used, bytes.used);
  await s.stop(ring);
  ring.addr = addr;
  ring.startFailed = false;
  await s.reconcile(ring);
};

const setVringKick: Handler = async (s, msg) => {
  const { index, noFd } = decodeVringFile(msg.payload);
  const ring = s.ring(index);
  if (noFd) throw violation(msg, `ring ${index}: polling mode (no kick fd) is not supported`);
  await s.stop(ring);
  ring.kickFd = s.replaceFd(ring.kickFd, takeFd(msg));
  // "The back-end must start ring upon receiving a kick ... on the descriptor specified by VHOST_USER_SET_VRING_KICK."
  ring.started = true;
  ring.startFailed = false;
  await s.reconcile(ring);
};

/** The front-end may replace the call fd at any time (QEMU does at every start). */
const setVringCall: Handler = async (s, msg) => {
  const { index, noFd } = decodeVringFile(msg.payload);
  const ring = s.ring(index);
  await s.settle(ring);
  const fd = noFd ? null : takeFd(msg);
  const old = ring.callFd;
  ring.callFd = fd;
  if (ring.running) await s.dataplane.setCallFd(index, fd);
  s.replaceFd(old, fd);
};

const setVringErr: Handler = (s, msg) => {
  const { index, noFd } = decodeVringFile(msg.payload);
  const ring = s.ring(index);
  ring.errFd = s.replaceFd(ring.errFd, noFd ? null : takeFd(msg));
};

const setVringEnable: Handler = async (s, msg) => {
  const { index, num } = decodeVringState(msg.payload);
  // "This request should be sent only when VHOST_USER_F_PROTOCOL_FEATURES has been negotiated."
  if (!s.protocolFeaturesNegotiated)
    throw violation(
      msg,
      "sent before VHOST_USER_F_PROTOCOL_FEATURES was negotiated with SET_FEATURES",
    );
  if (num !== 0 && num !== 1)
    throw violation(msg, `ring ${index}: enable value ${num} is not 0 or 1`, { index, num });
  const ring = s.ring(index);
  await s.settle(ring);
  ring.enabled = num === 1;
  // Disabling only stops the ring (in the background); it is not a reset.
  await s.reconcile(ring);
};

/** Stops the ring ("stop ring upon receiving VHOST_USER_GET_VRING_BASE") and returns where it stopped. */
const getVringBase: Handler = async (s, msg) => {
  const { index } = decodeVringState(msg.payload);
  const ring = s.ring(index);
  await s.stop(ring);
  ring.started = false;
  ring.startFailed = false;
  ring.kickFd = s.replaceFd(ring.kickFd, null);
  // A broken device is reset once the front-end has stopped every ring.
  if (s.broken !== null && s.rings.every((r) => !r.started)) s.broken = null;
  return encodeVringState({ index, num: ring.base });
};

// ------------------------------------------------------------ config space, reset

function configRange(
  s: VhostUserSession,
  msg: VhostUserMessage,
  offset: number,
  size: number,
): void {
  const limit = s.backend.config?.size ?? 0;
  if (offset + size > limit) {
    throw violation(msg, `access [${offset}, +${size}) is outside the ${limit}-byte config space`, {
      offset,
      size,
    });
  }
}

/** Replies with exactly the requested bytes ("payload size MUST match the front-end's request"). */
const getConfig: Handler = (s, msg) => {
  const { offset, flags, data } = decodeConfig(msg.payload);
  configRange(s, msg, offset, data.length);
  const bytes = s.backend.config?.snapshot() ?? new Uint8Array(0);
  return encodeConfig({ offset, flags, data: bytes.subarray(offset, offset + data.length) });
};

const setConfig: Handler = (s, msg) => {
  const { offset, flags, data } = decodeConfig(msg.payload);
  configRange(s, msg, offset, data.length);
  const config = s.backend.config;
  if (config === undefined || s.backend.writeConfig === undefined) return REPLY_ACK_FAILED;
  // The device shares what its dataplane needs (e.g. virtio-blk's cache-mode word) before it returns.
  if (!s.backend.writeConfig(offset, data, flags, config)) return REPLY_ACK_FAILED;
  return 0;
};

/** "Disable all rings and reset all internal device state ... retains ownership." Memory stays mapped. */
const resetDevice: Handler = async (s) => {
  await s.stopAll();
  for (const r of s.rings) s.resetRing(r);
  s.features = 0n;
  s.broken = null;
  await s.dropInflight();
  await s.backend.reset?.();
};

/** Every supported request and its handler (see request-rules.ts for the wire rules). */
export const VHOST_USER_HANDLERS: ReadonlyMap<number, Handler> = new Map<number, Handler>([
  [R.GET_FEATURES, getFeatures],
  [R.SET_FEATURES, setFeatures],
  [R.SET_OWNER, setOwner],
  [R.RESET_OWNER, resetOwner],
  [R.SET_MEM_TABLE, setMemTable],
  [R.SET_VRING_NUM, setVringNum],
  [R.SET_VRING_ADDR, setVringAddr],
  [R.SET_VRING_BASE, setVringBase],
  [R.GET_VRING_BASE, getVringBase],
  [R.SET_VRING_KICK, setVringKick],
  [R.SET_VRING_CALL, setVringCall],
  [R.SET_VRING_ERR, setVringErr],
  [R.GET_PROTOCOL_FEATURES, getProtocolFeatures],
  [R.SET_PROTOCOL_FEATURES, setProtocolFeatures],
  [R.GET_QUEUE_NUM, getQueueNum],
  [R.SET_VRING_ENABLE, setVringEnable],
  [R.GET_CONFIG, getConfig],
  [R.SET_CONFIG, setConfig],
  [R.RESET_DEVICE, resetDevice],
  [R.GET_MAX_MEM_SLOTS, getMaxMemSlots],
  [R.ADD_MEM_REG, addMemReg],
  [R.REM_MEM_REG, remMemReg],
  [R.GET_INFLIGHT_FD, getInflightFd],
  [R.SET_INFLIGHT_FD, setInflightFd],
]);

/**
 * The vhost-user front-end's handshake: which virtio and protocol features
 * it acknowledges, the back-end's limits, and the config space it reads.
 * qemu/qemu docs/interop/vhost-user.rst "Communication", "REPLY_ACK",
 * "Front-end message types" (SET_OWNER, GET_/SET_FEATURES,
 * GET_/SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, GET_MAX_MEM_SLOTS, GET_CONFIG);
 * docs/vhost-user.md
 *
 * The order is libblkio's: SET_OWNER, GET_FEATURES (bit 30
 * VHOST_USER_F_PROTOCOL_FEATURES required), SET_FEATURES,
 * GET_PROTOCOL_FEATURES (REPLY_ACK and CONFIG required; CONFIGURE_MEM_SLOTS,
 * MQ and INFLIGHT_SHMFD kept when offered), SET_PROTOCOL_FEATURES, then NEED_REPLY on every
 * request, GET_QUEUE_NUM (with MQ), GET_MAX_MEM_SLOTS (with
 * CONFIGURE_MEM_SLOTS), GET_CONFIG. A back-end lacking something required
 * fails the handshake with `VIRTIO_ERR_VHOST_USER_INCOMPATIBLE`.
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../errors.ts";
import { VHOST_USER_F_PROTOCOL_FEATURES } from "../spec/virtio.ts";
import {
  VHOST_MEMORY_BASELINE_NREGIONS,
  VHOST_USER_MAX_CONFIG_SIZE,
  VhostUserProtocolFeature as PF,
  VhostUserRequest as R,
} from "../spec/vhost-user.ts";
import { encodeConfig, encodeU64 } from "./codec.ts";
import type { ControlChannel } from "./frontend-channel.ts";

const bit = (n: number): bigint => 1n << BigInt(n);

/** Protocol features the front-end cannot work without. */
export const FRONTEND_REQUIRED_PROTOCOL_FEATURES = bit(PF.REPLY_ACK) | bit(PF.CONFIG);
/** Protocol features the front-end uses when offered (everything else is declined). */
export const FRONTEND_PROTOCOL_FEATURES =
  FRONTEND_REQUIRED_PROTOCOL_FEATURES |
  bit(PF.CONFIGURE_MEM_SLOTS) |
  bit(PF.MQ) |
  bit(PF.INFLIGHT_SHMFD);

/** Options of {@link VhostUserFrontend.connect}. */
export interface VhostUserFrontendOptions {
  /**
   * Virtio feature bits the driver can use: a mask (the front-end
   * acknowledges its intersection with what the back-end offers), or a
   * function from the offered bits to the accepted ones (it may throw to
   * refuse the device; the connection then closes). Bit 30
   * (VHOST_USER_F_PROTOCOL_FEATURES) is added either way.
   */
  readonly features: bigint | ((offered: bigint) => bigint);
  /** Bytes of config space to read during the handshake (0..256, default 0: none). */
  readonly configSize?: number;
  /**
   * Milliseconds to wait for each reply before the back-end counts as hung
   * and the connection closes (default 30 000; 0 waits forever).
   */
  readonly replyTimeoutMs?: number;
}

/** What the handshake settled. */
export interface Negotiated {
  /** Virtio features the back-end offered (GET_FEATURES). */
  readonly deviceFeatures: bigint;
  /** Virtio features acknowledged with SET_FEATURES (bit 30 included). */
  readonly features: bigint;
  /** Protocol features the back-end offered. */
  readonly deviceProtocolFeatures: bigint;
  /** Protocol features acknowledged with SET_PROTOCOL_FEATURES. */
  readonly protocolFeatures: bigint;
  /** Rings the back-end supports (GET_QUEUE_NUM with MQ, else 1), at most 256. */
  readonly maxQueues: number;
  /** Memory regions the back-end accepts (GET_MAX_MEM_SLOTS, else 8). */
  readonly maxMemSlots: number;
  /** Config space read during the handshake (`configSize` bytes from offset 0). */
  readonly config: Uint8Array;
}

const NO_PAYLOAD = new Uint8Array(0);
const U64 = { kind: "u64" } as const;

function incompatible(
  message: string,
  details: Record<string, number | string | bigint | boolean> = {},
): VirtioError {
  return new VirtioError(ErrorCode.VHOST_USER_INCOMPATIBLE, message, details);
}

/** Runs the handshake on a fresh channel; from its end on every request asks for a reply. */
export async function negotiate(
  ch: ControlChannel,
  o: VhostUserFrontendOptions,
): Promise<Negotiated> {
  await ch.request(R.SET_OWNER, NO_PAYLOAD);
  const deviceFeatures = await ch.request(R.GET_FEATURES, NO_PAYLOAD, U64);
  if ((deviceFeatures & bit(VHOST_USER_F_PROTOCOL_FEATURES)) === 0n)
    throw incompatible("the back-end does not offer VHOST_USER_F_PROTOCOL_FEATURES (bit 30)", {
      features: deviceFeatures,
    });
  const wanted = typeof o.features === "bigint" ? o.features : o.features(deviceFeatures);
  if (typeof wanted !== "bigint" || wanted < 0n)
    throw new TypeError("the feature selector must return a non-negative bigint");
  const features = deviceFeatures & (wanted | bit(VHOST_USER_F_PROTOCOL_FEATURES));
  await ch.request(R.SET_FEATURES, encodeU64(features));
  const deviceProtocolFeatures = await ch.request(R.GET_PROTOCOL_FEATURES, NO_PAYLOAD, U64);
  const missing = FRONTEND_REQUIRED_PROTOCOL_FEATURES & ~deviceProtocolFeatures;
  if (missing !== 0n)
    throw incompatible(
      `the back-end lacks protocol features 0x${missing.toString(16)} (REPLY_ACK and CONFIG are required)`,
      { protocolFeatures: deviceProtocolFeatures },
    );
  const protocolFeatures = deviceProtocolFeatures & FRONTEND_PROTOCOL_FEATURES;
  await ch.request(R.SET_PROTOCOL_FEATURES, encodeU64(protocolFeatures));
  // From here on every request asks for a reply (REPLY_ACK), as libblkio does.
  ch.needReply = true;
  const has = (pf: number): boolean => (protocolFeatures & bit(pf)) !== 0n;
  const maxQueues = has(PF.MQ) ? await queueCount(ch) : 1;
  const maxMemSlots = has(PF.CONFIGURE_MEM_SLOTS)
    ? await memSlots(ch)
    : VHOST_MEMORY_BASELINE_NREGIONS;
  const config =
    o.configSize !== undefined && o.configSize > 0
      ? await readConfig(ch, 0, o.configSize)
      : NO_PAYLOAD;
  const limits = { maxQueues, maxMemSlots, config };
  return { deviceFeatures, features, deviceProtocolFeatures, protocolFeatures, ...limits };
}

async function queueCount(ch: ControlChannel): Promise<number> {
  const n = await ch.request(R.GET_QUEUE_NUM, NO_PAYLOAD, U64);
  if (n === 0n) throw incompatible("the back-end supports 0 queues");
  // A vring index is 8 bits in SET_VRING_KICK/CALL/ERR: more rings cannot be addressed.
  return n > 256n ? 256 : Number(n);
}

async function memSlots(ch: ControlChannel): Promise<number> {
  const n = await ch.request(R.GET_MAX_MEM_SLOTS, NO_PAYLOAD, U64);
  if (n === 0n) throw incompatible("the back-end accepts 0 memory slots");
  return n > 0xffffn ? 0xffff : Number(n);
}

/**
 * Reads `size` bytes of config space at `offset` (GET_CONFIG). The reply
 * must echo offset, size and flags and hold exactly `size` bytes.
 *
 * @throws {RangeError} (at once) for a size outside 1..256 or an offset that is not a u32.
 */
export function readConfig(ch: ControlChannel, offset: number, size: number): Promise<Uint8Array> {
  if (!Number.isInteger(size) || size < 1 || size > VHOST_USER_MAX_CONFIG_SIZE)
    throw new RangeError(`config size must be in 1..${VHOST_USER_MAX_CONFIG_SIZE}, got ${size}`);
  if (!Number.isInteger(offset) || offset < 0 || offset > 0xffff_ffff)
    throw new RangeError(`config offset must be a u32, got ${offset}`);
  return ch.request(R.GET_CONFIG, encodeConfig({ offset, flags: 0, data: new Uint8Array(size) }), {
    kind: "config",
    offset,
    size,
    flags: 0,
  });
}

/** Checks the options before anything is sent. */
export function checkOptions(o: VhostUserFrontendOptions): void {
  if (typeof o.features === "function") return checkConfigSize(o);
  if (typeof o.features !== "bigint" || o.features < 0n)
    throw new TypeError("options.features must be a non-negative bigint or a function");
  checkConfigSize(o);
}

function checkConfigSize(o: VhostUserFrontendOptions): void {
  const c = o.configSize ?? 0;
  if (!Number.isInteger(c) || c < 0 || c > VHOST_USER_MAX_CONFIG_SIZE)
    throw new RangeError(`configSize must be in 0..${VHOST_USER_MAX_CONFIG_SIZE}, got ${c}`);
}

/**
 * What each supported front-end request must look like on the wire: payload
 * size, number of file descriptors, and whether it has its own reply.
 * qemu/qemu docs/interop/vhost-user.rst "Front-end message types",
 * "Communication" (which requests carry fds, which have replies).
 *
 * A request id missing from a rule table is not supported: the framing layer
 * rejects it as soon as its header arrives.
 *
 * @module
 */
import {
  VHOST_USER_CONFIG_HDR_SIZE,
  VHOST_USER_INFLIGHT_SIZE,
  VHOST_USER_MAX_CONFIG_SIZE,
  VHOST_USER_MEMORY_HDR_SIZE,
  VHOST_USER_MEM_REGION_SIZE,
  VHOST_USER_SINGLE_MEM_REGION_SIZE,
  VHOST_USER_U64_SIZE,
  VHOST_USER_VRING_ADDR_SIZE,
  VHOST_USER_VRING_STATE_SIZE,
  VhostUserRequest as R,
  vhostUserMemoryTableSize,
  VHOST_MEMORY_BASELINE_NREGIONS,
} from "../spec/vhost-user.ts";

/** How the payload size is checked. */
export type PayloadRule =
  /** Exactly this many bytes. */
  | { readonly kind: "exact"; readonly size: number }
  /** "Memory regions description" with 1..8 regions (8 + 32·n bytes). */
  | { readonly kind: "memory-table" }
  /** "Virtio device config space": 12 + size bytes, size ≤ 256. */
  | { readonly kind: "config" };

/**
 * How many fds must come with the request.
 * - `none` / `one`: 0 / exactly 1;
 * - `regions`: one per region of the memory table;
 * - `vring-file`: 1, or 0 when the payload's NOFD bit (0x100) is set;
 * - `at-most-one`: 0 or 1 (REM_MEM_REG: "the back-end MAY accept messages
 *   with one file descriptor ... MUST close it without using it").
 */
export type FdRule = "none" | "one" | "regions" | "vring-file" | "at-most-one";

/** The wire rule of one request. */
export interface RequestRule {
  readonly payload: PayloadRule;
  readonly fds: FdRule;
  /** True if the request has its own reply body (then NEED_REPLY adds no second reply). */
  readonly reply: boolean;
}

const exact = (size: number): PayloadRule => ({ kind: "exact", size });
const u64 = exact(VHOST_USER_U64_SIZE);
const none = exact(0);
const state = exact(VHOST_USER_VRING_STATE_SIZE);
const region = exact(VHOST_USER_SINGLE_MEM_REGION_SIZE);
const inflight = exact(VHOST_USER_INFLIGHT_SIZE);

/** Rules of every request the back-end handles (see handlers.ts). */
export const VHOST_USER_REQUEST_RULES: ReadonlyMap<number, RequestRule> = new Map<
  number,
  RequestRule
>([
  [R.GET_FEATURES, { payload: none, fds: "none", reply: true }],
  [R.SET_FEATURES, { payload: u64, fds: "none", reply: false }],
  [R.SET_OWNER, { payload: none, fds: "none", reply: false }],
  [R.RESET_OWNER, { payload: none, fds: "none", reply: false }],
  [R.SET_MEM_TABLE, { payload: { kind: "memory-table" }, fds: "regions", reply: false }],
  [R.SET_VRING_NUM, { payload: state, fds: "none", reply: false }],
  [R.SET_VRING_ADDR, { payload: exact(VHOST_USER_VRING_ADDR_SIZE), fds: "none", reply: false }],
  [R.SET_VRING_BASE, { payload: state, fds: "none", reply: false }],
  [R.GET_VRING_BASE, { payload: state, fds: "none", reply: true }],
  [R.SET_VRING_KICK, { payload: u64, fds: "vring-file", reply: false }],
  [R.SET_VRING_CALL, { payload: u64, fds: "vring-file", reply: false }],
  [R.SET_VRING_ERR, { payload: u64, fds: "vring-file", reply: false }],
  [R.GET_PROTOCOL_FEATURES, { payload: none, fds: "none", reply: true }],
  [R.SET_PROTOCOL_FEATURES, { payload: u64, fds: "none", reply: false }],
  [R.GET_QUEUE_NUM, { payload: none, fds: "none", reply: true }],
  [R.SET_VRING_ENABLE, { payload: state, fds: "none", reply: false }],
  [R.GET_CONFIG, { payload: { kind: "config" }, fds: "none", reply: true }],
  [R.SET_CONFIG, { payload: { kind: "config" }, fds: "none", reply: false }],
  [R.RESET_DEVICE, { payload: none, fds: "none", reply: false }],
  [R.GET_MAX_MEM_SLOTS, { payload: none, fds: "none", reply: true }],
  [R.ADD_MEM_REG, { payload: region, fds: "one", reply: false }],
  [R.REM_MEM_REG, { payload: region, fds: "at-most-one", reply: false }],
  [R.GET_INFLIGHT_FD, { payload: inflight, fds: "none", reply: true }],
  [R.SET_INFLIGHT_FD, { payload: inflight, fds: "one", reply: false }],
]);

/** Largest payload any rule allows (a GET_CONFIG of 256 bytes: 268). */
export const MAX_RULE_PAYLOAD = Math.max(
  vhostUserMemoryTableSize(VHOST_MEMORY_BASELINE_NREGIONS),
  VHOST_USER_CONFIG_HDR_SIZE + VHOST_USER_MAX_CONFIG_SIZE,
);

/**
 * The payload size check that can be made from the header alone: undefined
 * if `size` may be right, otherwise the expected size as text.
 */
export function checkPayloadSize(rule: PayloadRule, size: number): string | undefined {
  switch (rule.kind) {
    case "exact":
      return size === rule.size ? undefined : String(rule.size);
    case "memory-table": {
      const n = (size - VHOST_USER_MEMORY_HDR_SIZE) / VHOST_USER_MEM_REGION_SIZE;
      const ok = Number.isInteger(n) && n >= 1 && n <= VHOST_MEMORY_BASELINE_NREGIONS;
      return ok ? undefined : `8 + 32·n with n in 1..${VHOST_MEMORY_BASELINE_NREGIONS}`;
    }
    case "config": {
      const max = VHOST_USER_CONFIG_HDR_SIZE + VHOST_USER_MAX_CONFIG_SIZE;
      return size >= VHOST_USER_CONFIG_HDR_SIZE && size <= max
        ? undefined
        : `${VHOST_USER_CONFIG_HDR_SIZE}..${max}`;
    }
  }
}

/**
 * The payload checks that need the payload itself: a memory table's
 * `num regions` and a config payload's `size` must match the payload length.
 * Returns a description of the mismatch, or undefined.
 */
export function checkPayloadFields(rule: PayloadRule, payload: Uint8Array): string | undefined {
  const dv = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  switch (rule.kind) {
    case "exact":
      return undefined;
    case "memory-table": {
      const n = dv.getUint32(0, true);
      return payload.byteLength === vhostUserMemoryTableSize(n)
        ? undefined
        : `num regions ${n} does not match a payload of ${payload.byteLength} bytes`;
    }
    case "config": {
      const size = dv.getUint32(4, true);
      return payload.byteLength === VHOST_USER_CONFIG_HDR_SIZE + size
        ? undefined
        : `config size ${size} does not match a payload of ${payload.byteLength} bytes`;
    }
  }
}

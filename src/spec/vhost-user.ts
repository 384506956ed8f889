/**
 * vhost-user protocol constants and payload layouts, with the spec's names.
 * qemu/qemu docs/interop/vhost-user.rst: "Message Specification" (header,
 * payloads), "Protocol features", "Front-end message types".
 *
 * All integers on the wire are in the machine's native byte order, which
 * virtio-ts requires to be little-endian (see memory/guest-memory.ts).
 *
 * @module
 */

/** Front-end → back-end request ids ("Front-end message types"). */
export const VhostUserRequest = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  /** Renamed SET_BACKEND_REQ_FD in later spec versions. */
  SET_SLAVE_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  CREATE_CRYPTO_SESSION: 26,
  CLOSE_CRYPTO_SESSION: 27,
  POSTCOPY_ADVISE: 28,
  POSTCOPY_LISTEN: 29,
  POSTCOPY_END: 30,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  GPU_SET_SOCKET: 33,
  RESET_DEVICE: 34,
  VRING_KICK: 35,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
} as const;

/** A front-end request id known to the spec. */
export type VhostUserRequestId = (typeof VhostUserRequest)[keyof typeof VhostUserRequest];

const requestNames = new Map<number, string>(
  Object.entries(VhostUserRequest).map(([name, id]) => [id, `VHOST_USER_${name}`]),
);

/** The spec name of a request id (`VHOST_USER_GET_FEATURES`), or `request <id>` if unknown. */
export function vhostUserRequestName(id: number): string {
  return requestNames.get(id) ?? `request ${id}`;
}

/** True if `id` is a front-end request id the spec defines. */
export function isKnownVhostUserRequest(id: number): boolean {
  return requestNames.has(id);
}

/** Header "flags": the lower 2 bits are the version (currently 0x01). */
export const VHOST_USER_VERSION_MASK = 0x3;
export const VHOST_USER_VERSION = 0x1;
/** Header "flags" bit 2: "needs to be sent on each reply from the back-end". */
export const VHOST_USER_REPLY_MASK = 0x4;
/** Header "flags" bit 3: need_reply (see REPLY_ACK). */
export const VHOST_USER_NEED_REPLY_MASK = 0x8;
/** The exact flags of every reply we send: version 1 + REPLY (QEMU rejects anything else). */
export const VHOST_USER_REPLY_FLAGS = VHOST_USER_VERSION | VHOST_USER_REPLY_MASK;

/** "Protocol features": bit numbers of the GET/SET_PROTOCOL_FEATURES u64. */
export const VhostUserProtocolFeature = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  MTU: 4,
  SLAVE_REQ: 5,
  CROSS_ENDIAN: 6,
  CRYPTO_SESSION: 7,
  PAGEFAULT: 8,
  CONFIG: 9,
  SLAVE_SEND_FD: 10,
  HOST_NOTIFIER: 11,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  INBAND_NOTIFICATIONS: 14,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
} as const;

/** Vring file payload (SET_VRING_KICK/CALL/ERR): bits 0–7 hold the vring index. */
export const VHOST_USER_VRING_IDX_MASK = 0xff;
/** Vring file payload bit 8: "the invalid FD flag ... no file descriptor in the ancillary data". */
export const VHOST_USER_VRING_NOFD_MASK = 0x100;

/** SET_VRING_ADDR flags bit 0 (VHOST_VRING_F_LOG): log writes to the used ring. */
export const VHOST_VRING_F_LOG = 0;

/** Config payload flags: "Vhost front-end messages used for writable fields". */
export const VHOST_SET_CONFIG_TYPE_FRONTEND = 0;
/** Config payload flags: "Vhost front-end messages used for live migration". */
export const VHOST_SET_CONFIG_TYPE_MIGRATION = 1;

/** The memory regions description holds at most 8 regions (`region0 ... region7`). */
export const VHOST_MEMORY_BASELINE_NREGIONS = 8;
/** Largest config access: QEMU's VHOST_USER_MAX_CONFIG_SIZE (the config payload's array). */
export const VHOST_USER_MAX_CONFIG_SIZE = 256;

/** Header: request u32, flags u32, size u32 (packed). */
export const VHOST_USER_HDR_SIZE = 12;
export const VHOST_USER_HDR_OFF_REQUEST = 0;
export const VHOST_USER_HDR_OFF_FLAGS = 4;
export const VHOST_USER_HDR_OFF_SIZE = 8;

/** "A single 64-bit integer". */
export const VHOST_USER_U64_SIZE = 8;
/** "A vring state description": index u32, num u32. */
export const VHOST_USER_VRING_STATE_SIZE = 8;
/**
 * "A vring address description": index u32, flags u32, then u64 addresses in
 * the order descriptor, used, available, log.
 */
export const VHOST_USER_VRING_ADDR_SIZE = 40;
export const VHOST_USER_VRING_ADDR_OFF_INDEX = 0;
export const VHOST_USER_VRING_ADDR_OFF_FLAGS = 4;
export const VHOST_USER_VRING_ADDR_OFF_DESC = 8;
export const VHOST_USER_VRING_ADDR_OFF_USED = 16;
export const VHOST_USER_VRING_ADDR_OFF_AVAIL = 24;
export const VHOST_USER_VRING_ADDR_OFF_LOG = 32;
/** One region: guest address u64, size u64, user address u64, mmap offset u64. */
export const VHOST_USER_MEM_REGION_SIZE = 32;
export const VHOST_USER_MEM_REGION_OFF_GPA = 0;
export const VHOST_USER_MEM_REGION_OFF_SIZE = 8;
export const VHOST_USER_MEM_REGION_OFF_UVA = 16;
export const VHOST_USER_MEM_REGION_OFF_MMAP_OFFSET = 24;
/** "Memory regions description" header: num regions u32, padding u32. */
export const VHOST_USER_MEMORY_HDR_SIZE = 8;
/** "Single memory region description": padding u64, then one region. */
export const VHOST_USER_SINGLE_MEM_REGION_SIZE = 8 + VHOST_USER_MEM_REGION_SIZE;
/** "Log description": log size u64, log offset u64. */
export const VHOST_USER_LOG_SIZE = 16;
/** "Virtio device config space" header: offset u32, size u32, flags u32. */
export const VHOST_USER_CONFIG_HDR_SIZE = 12;
/**
 * "Inflight description": mmap size u64, mmap offset u64, num queues u16,
 * queue size u16. QEMU's C struct is not packed, so it sends 24 bytes.
 */
export const VHOST_USER_INFLIGHT_SIZE = 24;

/** Bytes of a SET_MEM_TABLE payload with `n` regions (QEMU sends only the used entries). */
export function vhostUserMemoryTableSize(n: number): number {
  return VHOST_USER_MEMORY_HDR_SIZE + VHOST_USER_MEM_REGION_SIZE * n;
}

/*
 * "Inflight I/O tracking", split virtqueue layout: the shared buffer holds
 * one QueueRegionSplit per queue, each a 16-byte header (features u64,
 * version u16, desc_num u16, last_batch_head u16, used_idx u16) followed by
 * desc_num DescStateSplit entries of 16 bytes (inflight u8, padding u8[5],
 * next u16, counter u64), indexed by head descriptor index. QEMU and
 * libvhost-user place the queue regions 64-byte aligned.
 */
/** QueueRegionSplit.features (u64, "Now it's initialized to 0"). */
export const INFLIGHT_OFF_FEATURES = 0;
/** QueueRegionSplit.version (u16): "It's 1 currently. Zero value indicates an uninitialized buffer". */
export const INFLIGHT_OFF_VERSION = 8;
/** QueueRegionSplit.desc_num (u16): the queue size. */
export const INFLIGHT_OFF_DESC_NUM = 10;
/** QueueRegionSplit.last_batch_head (u16): head of the list of the last batch of used descriptors. */
export const INFLIGHT_OFF_LAST_BATCH_HEAD = 12;
/** QueueRegionSplit.used_idx (u16): the used ring's idx after the last completed batch. */
export const INFLIGHT_OFF_USED_IDX = 14;
/** QueueRegionSplit.desc: the first DescStateSplit. */
export const INFLIGHT_OFF_DESC = 16;
/** Bytes of one DescStateSplit. */
export const INFLIGHT_DESC_SIZE = 16;
/** DescStateSplit.inflight (u8). */
export const INFLIGHT_DESC_OFF_INFLIGHT = 0;
/** DescStateSplit.next (u16): the next entry of a used batch. */
export const INFLIGHT_DESC_OFF_NEXT = 6;
/** DescStateSplit.counter (u64): the order descriptors were fetched in. */
export const INFLIGHT_DESC_OFF_COUNTER = 8;
/** The version this implementation writes. */
export const INFLIGHT_VERSION = 1;
/** Queue regions are aligned to a cache line. */
export const INFLIGHT_ALIGNMENT = 64;

/** Bytes of one queue's region for a queue of `queueSize` entries. */
export function inflightQueueRegionSize(queueSize: number): number {
  const raw = INFLIGHT_OFF_DESC + INFLIGHT_DESC_SIZE * queueSize;
  return Math.ceil(raw / INFLIGHT_ALIGNMENT) * INFLIGHT_ALIGNMENT;
}

/*
 * "Inflight I/O tracking", packed virtqueue layout: one QueueRegionPacked
 * per queue, a header (features u64, version u16, desc_num u16, free_head
 * u16, old_free_head u16, used_idx u16, old_used_idx u16, used_wrap_counter
 * u8, old_used_wrap_counter u8, padding u8[7]) followed by desc_num
 * DescStatePacked entries of 32 bytes (inflight u8, padding u8, next u16,
 * last u16, num u16, counter u64, id u16, flags u16, len u32, addr u64).
 * The C struct is not packed: the entries (8-byte aligned, they hold u64s)
 * start at offset 32. features, version and desc_num are where the split
 * layout has them (INFLIGHT_OFF_FEATURES, _VERSION, _DESC_NUM).
 */
/** QueueRegionPacked.free_head (u16): "The head of free DescStatePacked entry list". */
export const INFLIGHT_PACKED_OFF_FREE_HEAD = 12;
/** QueueRegionPacked.old_free_head (u16): "The old head of free DescStatePacked entry list". */
export const INFLIGHT_PACKED_OFF_OLD_FREE_HEAD = 14;
/** QueueRegionPacked.used_idx (u16): "The used index of descriptor ring" (a ring position). */
export const INFLIGHT_PACKED_OFF_USED_IDX = 16;
/** QueueRegionPacked.old_used_idx (u16): "The old used index of descriptor ring". */
export const INFLIGHT_PACKED_OFF_OLD_USED_IDX = 18;
/** QueueRegionPacked.used_wrap_counter (u8): "Device ring wrap counter". */
export const INFLIGHT_PACKED_OFF_USED_WRAP = 20;
/** QueueRegionPacked.old_used_wrap_counter (u8): "The old device ring wrap counter". */
export const INFLIGHT_PACKED_OFF_OLD_USED_WRAP = 21;
/** QueueRegionPacked.desc: the first DescStatePacked. */
export const INFLIGHT_PACKED_OFF_DESC = 32;
/** Bytes of one DescStatePacked. */
export const INFLIGHT_PACKED_DESC_SIZE = 32;
/** DescStatePacked.inflight (u8): "Only available for head-descriptor". */
export const INFLIGHT_PACKED_DESC_OFF_INFLIGHT = 0;
/** DescStatePacked.next (u16): "Link to the next free entry". */
export const INFLIGHT_PACKED_DESC_OFF_NEXT = 2;
/** DescStatePacked.last (u16): "Link to the last entry of descriptor list" (head only). */
export const INFLIGHT_PACKED_DESC_OFF_LAST = 4;
/** DescStatePacked.num (u16): "The length of descriptor list" (head only). */
export const INFLIGHT_PACKED_DESC_OFF_NUM = 6;
/** DescStatePacked.counter (u64): the order lists were fetched in (head only). */
export const INFLIGHT_PACKED_DESC_OFF_COUNTER = 8;
/** DescStatePacked.id (u16): "The buffer id". */
export const INFLIGHT_PACKED_DESC_OFF_ID = 16;
/** DescStatePacked.flags (u16): "The descriptor flags". */
export const INFLIGHT_PACKED_DESC_OFF_FLAGS = 18;
/** DescStatePacked.len (u32): "The buffer length". */
export const INFLIGHT_PACKED_DESC_OFF_LEN = 20;
/** DescStatePacked.addr (u64): "The buffer address". */
export const INFLIGHT_PACKED_DESC_OFF_ADDR = 24;

/** Bytes of one queue's packed-layout region for a queue of `queueSize` entries. */
export function inflightPackedQueueRegionSize(queueSize: number): number {
  const raw = INFLIGHT_PACKED_OFF_DESC + INFLIGHT_PACKED_DESC_SIZE * queueSize;
  return Math.ceil(raw / INFLIGHT_ALIGNMENT) * INFLIGHT_ALIGNMENT;
}

/** Bytes of one queue's region in the layout of the negotiated ring (`packed`: VIRTIO_F_RING_PACKED). */
export function inflightRegionSize(queueSize: number, packed: boolean): number {
  return packed ? inflightPackedQueueRegionSize(queueSize) : inflightQueueRegionSize(queueSize);
}

/**
 * virtio-blk constants and layouts. VIRTIO 1.2 §5.2 (Block Device).
 *
 * @module
 */

/** §5.2.3 feature bits. */
export const VIRTIO_BLK_F_SIZE_MAX = 1;
export const VIRTIO_BLK_F_SEG_MAX = 2;
export const VIRTIO_BLK_F_GEOMETRY = 4;
export const VIRTIO_BLK_F_RO = 5;
export const VIRTIO_BLK_F_BLK_SIZE = 6;
export const VIRTIO_BLK_F_FLUSH = 9;
export const VIRTIO_BLK_F_TOPOLOGY = 10;
export const VIRTIO_BLK_F_CONFIG_WCE = 11;
export const VIRTIO_BLK_F_MQ = 12;
export const VIRTIO_BLK_F_DISCARD = 13;
export const VIRTIO_BLK_F_WRITE_ZEROES = 14;
export const VIRTIO_BLK_F_LIFETIME = 15;
export const VIRTIO_BLK_F_SECURE_ERASE = 16;

/** §5.2.6 request types. */
export const VIRTIO_BLK_T_IN = 0;
export const VIRTIO_BLK_T_OUT = 1;
export const VIRTIO_BLK_T_FLUSH = 4;
export const VIRTIO_BLK_T_GET_ID = 8;
export const VIRTIO_BLK_T_GET_LIFETIME = 10;
export const VIRTIO_BLK_T_DISCARD = 11;
export const VIRTIO_BLK_T_WRITE_ZEROES = 13;
export const VIRTIO_BLK_T_SECURE_ERASE = 14;
/** Legacy barrier bit that Linux may set in `type`; masked off (docs/conformance.md). */
export const VIRTIO_BLK_T_BARRIER = 0x80000000;

/** §5.2.6 status values. */
export const VIRTIO_BLK_S_OK = 0;
export const VIRTIO_BLK_S_IOERR = 1;
export const VIRTIO_BLK_S_UNSUPP = 2;

/** §5.2.6: discard / write-zeroes segment flag. */
export const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1;

/** §5.2.6: `struct virtio_blk_req` header: le32 type, le32 reserved, le64 sector. */
export const VIRTIO_BLK_REQ_HDR_SIZE = 16;
/** §5.2.6: `struct virtio_blk_discard_write_zeroes`: le64 sector, le32 num_sectors, le32 flags. */
export const VIRTIO_BLK_DWZ_SEG_SIZE = 16;
/** §5.2.6: GET_ID returns up to 20 bytes. */
export const VIRTIO_BLK_ID_BYTES = 20;
/** Sectors are always 512 bytes in the protocol, whatever the logical block size. */
export const VIRTIO_BLK_SECTOR_SIZE = 512;

/**
 * §5.2.4 `struct virtio_blk_config` field offsets (little-endian).
 */
export const BlkConfig = {
  capacity: 0, // le64
  size_max: 8, // le32
  seg_max: 12, // le32
  geometry_cylinders: 16, // le16
  geometry_heads: 18, // u8
  geometry_sectors: 19, // u8
  blk_size: 20, // le32
  physical_block_exp: 24, // u8
  alignment_offset: 25, // u8
  min_io_size: 26, // le16
  opt_io_size: 28, // le32
  writeback: 32, // u8
  unused0: 33, // u8
  num_queues: 34, // le16
  max_discard_sectors: 36, // le32
  max_discard_seg: 40, // le32
  discard_sector_alignment: 44, // le32
  max_write_zeroes_sectors: 48, // le32
  max_write_zeroes_seg: 52, // le32
  write_zeroes_may_unmap: 56, // u8
  unused1: 57, // u8[3]
  max_secure_erase_sectors: 60, // le32
  max_secure_erase_seg: 64, // le32
  secure_erase_sector_alignment: 68, // le32
} as const;

/** Size of the config space this implementation exposes (up to write_zeroes_may_unmap + padding). */
export const VIRTIO_BLK_CONFIG_SIZE = 60;

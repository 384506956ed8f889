/**
 * `virtio-ts/testing`: for testing your own devices — mock drivers that
 * build any split (VIRTIO 1.2 §2.7) or packed (§2.8) ring, valid or
 * malformed, in a {@link virtio-ts!GuestMemory | GuestMemory}. Portable.
 *
 * @module virtio-ts/testing
 */
export * from "../testing/index.ts";

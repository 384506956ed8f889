/**
 * `virtio-ts/native`: the Linux system calls Node does not offer (Unix
 * sockets with fd passing, mmap of guest memory, eventfds, fd watching,
 * memfd, fallocate, io_uring), behind typed functions over the package's
 * native addon. Node-only, Linux only; not spec-defined.
 *
 * @module virtio-ts/native
 */
export * from "../native/index.ts";

import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { ErrorCode, isVirtioError, VirtioError } from "../errors.ts";
import { loadAddon, native, nativeAvailable, nativeLoadError, NOT_BUILT_MESSAGE } from "./addon.ts";
import { EFD_SEMAPHORE } from "./eventfd.ts";
import * as files from "./files.ts";
import * as api from "./index.ts";
import { isNativeError, NativeError } from "./native-error.ts";
import { MAX_FDS_PER_MESSAGE } from "./sockets.ts";
import { tempDir } from "./test-support.ts";
import { PollEvent } from "./watch.ts";

test("the addon is built and loaded", () => {
  assert.equal(nativeAvailable(), true, nativeLoadError());
  assert.equal(nativeLoadError(), undefined);
  assert.equal(typeof api.pageSize(), "number");
});

test("a missing addon names the fix; a broken one says it failed to load", () => {
  const dir = tempDir();
  try {
    const root = pathToFileURL(`${dir.path}/`);
    assert.deepEqual(loadAddon([root]), { error: NOT_BUILT_MESSAGE }, "no binding.gyp: not a root");
    writeFileSync(join(dir.path, "binding.gyp"), "{}");
    const notFound = (): string => {
      throw new Error("No native build was found");
    };
    assert.deepEqual(loadAddon([root], notFound), { error: NOT_BUILT_MESSAGE });
    assert.match(NOT_BUILT_MESSAGE, /npm rebuild virtio-ts.*g\+\+.*skips install scripts/);
    assert.deepEqual(loadAddon([root]), { error: NOT_BUILT_MESSAGE }, "node-gyp-build finds none");
    const path = join(dir.path, "virtio_ts_native.node");
    writeFileSync(path, "not a shared object");
    const broken = loadAddon([root], () => path);
    assert.ok("error" in broken);
    assert.match(broken.error, /failed to load.*npm rebuild virtio-ts/);
  } finally {
    dir.remove();
  }
});

test("the TypeScript constants equal the addon's (Linux ABI values)", () => {
  const c = native.constants;
  const expected: Record<string, number> = {
    EFD_SEMAPHORE,
    MFD_ALLOW_SEALING: files.MFD_ALLOW_SEALING,
    MFD_HUGETLB: files.MFD_HUGETLB,
    F_SEAL_SEAL: files.F_SEAL_SEAL,
    F_SEAL_SHRINK: files.F_SEAL_SHRINK,
    F_SEAL_GROW: files.F_SEAL_GROW,
    F_SEAL_WRITE: files.F_SEAL_WRITE,
    FALLOC_FL_KEEP_SIZE: files.FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE: files.FALLOC_FL_PUNCH_HOLE,
    FALLOC_FL_ZERO_RANGE: files.FALLOC_FL_ZERO_RANGE,
    UV_READABLE: PollEvent.READABLE,
    UV_WRITABLE: PollEvent.WRITABLE,
    UV_DISCONNECT: PollEvent.DISCONNECT,
    UV_PRIORITIZED: PollEvent.PRIORITIZED,
    SCM_MAX_FD: MAX_FDS_PER_MESSAGE,
    SHUT_RD: 0,
    SHUT_WR: 1,
    SHUT_RDWR: 2,
  };
  assert.deepEqual({ ...c }, expected);
});

test("NativeError: a VirtioError with code NATIVE, the errno's name and syscall", () => {
  const e = new NativeError("bind", 98, { path: "/run/x.sock" });
  assert.ok(e instanceof VirtioError);
  assert.ok(isVirtioError(e, ErrorCode.NATIVE));
  assert.equal(e.errnoCode, "EADDRINUSE");
  assert.equal(e.message, "bind EADDRINUSE: address already in use (/run/x.sock)");
  assert.deepEqual(e.details, {
    syscall: "bind",
    errno: 98,
    errnoCode: "EADDRINUSE",
    path: "/run/x.sock",
  });
  const t = new NativeError("recvmsg", 0, { errnoCode: "MSG_CTRUNC", message: "truncated" });
  assert.equal(t.message, "recvmsg MSG_CTRUNC: truncated");
  assert.equal(t.path, undefined);
  assert.ok(isNativeError(t) && isNativeError(t, "MSG_CTRUNC") && !isNativeError(t, "EAGAIN"));
  assert.ok(!isNativeError(new Error("x")));
  assert.equal(new NativeError("x", 99999).errnoCode, "errno 99999");
});

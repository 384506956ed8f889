import { test } from "node:test";
import assert from "node:assert/strict";
import { readSync, writeSync } from "node:fs";
import { join } from "node:path";
import { ErrorCode, isVirtioError } from "../errors.ts";
import { memfdCreate } from "./files.ts";
import { isNativeError, NativeError } from "./native-error.ts";
import {
  acceptUnix,
  bindUnixDatagram,
  close,
  connectUnix,
  isListeningSocket,
  listenUnix,
  MAX_FDS_PER_MESSAGE,
  recvmsg,
  sendmsg,
  sendUnixDatagram,
  shutdown,
  socketPair,
  unixSocketAnswers,
} from "./sockets.ts";
import {
  fdFlags,
  fdsOpenedSince,
  fdSnapshot,
  fdTarget,
  O_CLOEXEC,
  O_NONBLOCK,
  tempDir,
} from "./test-support.ts";

/** Runs `body` and asserts it leaves no fd open that was not open before. */
function noFdLeak(body: () => void): void {
  const before = fdSnapshot();
  body();
  assert.deepEqual(fdsOpenedSince(before), []);
}

const nativeCode = (errnoCode: string) => (e: unknown) => isNativeError(e, errnoCode);

function closeAll(fds: readonly number[]): void {
  for (const fd of fds) close(fd);
}

function readAt(fd: number, position: number, length: number): string {
  const buf = Buffer.alloc(length);
  const n = readSync(fd, buf, 0, length, position);
  return buf.subarray(0, n).toString();
}

for (const count of [0, 1, 2, MAX_FDS_PER_MESSAGE]) {
  test(`a message with ${count} fds arrives whole; received fds are CLOEXEC and share the files`, () => {
    noFdLeak(() => {
      const [a, b] = socketPair();
      const files = Array.from({ length: count }, (_, i) => {
        const fd = memfdCreate(`f${i}`);
        writeSync(fd, `file ${i}`, 0);
        return fd;
      });
      const payload = Buffer.from(`hello with ${count} fds`);
      assert.equal(sendmsg(a, payload, files), payload.length);

      const msg = recvmsg(b, 256, MAX_FDS_PER_MESSAGE);
      assert.ok(msg);
      assert.deepEqual(msg.bytes, payload);
      assert.equal(msg.eof, false);
      assert.equal(msg.fds.length, count);
      msg.fds.forEach((received, i) => {
        const original = files[i] as number;
        assert.ok(!files.includes(received), "a received fd is a new descriptor");
        assert.equal(fdTarget(received), fdTarget(original));
        assert.equal(fdFlags(received) & O_CLOEXEC, O_CLOEXEC);
        // Same open file: what one writes, the other reads.
        assert.equal(readAt(received, 0, 64), `file ${i}`);
        writeSync(received, `via received ${i}`, 100);
        assert.equal(readAt(original, 100, 64), `via received ${i}`);
      });
      closeAll([a, b, ...files, ...msg.fds]);
    });
  });
}

test("listen, accept and connect give non-blocking CLOEXEC sockets that pass fds both ways", () => {
  const dir = tempDir();
  try {
    noFdLeak(() => {
      const path = join(dir.path, "s.sock");
      const server = listenUnix(path, 4);
      assert.equal(acceptUnix(server), null, "nothing pending yet");
      const client = connectUnix(path);
      const conn = acceptUnix(server);
      assert.ok(conn !== null);
      for (const fd of [server, client, conn]) {
        assert.equal(fdFlags(fd) & (O_CLOEXEC | O_NONBLOCK), O_CLOEXEC | O_NONBLOCK);
      }
      assert.equal(acceptUnix(server), null);

      const file = memfdCreate("shared");
      assert.equal(sendmsg(client, Buffer.from("req"), [file]), 3);
      const req = recvmsg(conn, 16, 4);
      assert.ok(req);
      assert.equal(req.bytes.toString(), "req");
      assert.equal(req.fds.length, 1);
      assert.equal(sendmsg(conn, Buffer.from("reply"), req.fds), 5);
      const reply = recvmsg(client, 16, 4);
      assert.ok(reply);
      assert.equal(reply.bytes.toString(), "reply");
      assert.equal(reply.fds.length, 1);
      assert.equal(fdTarget(reply.fds[0] as number), fdTarget(file));
      closeAll([file, ...req.fds, ...reply.fds, client, conn, server]);
    });
  } finally {
    dir.remove();
  }
});

test("listenUnix on a taken path throws EADDRINUSE saying whether a server answers", () => {
  const dir = tempDir();
  try {
    noFdLeak(() => {
      const path = join(dir.path, "s.sock");
      const server = listenUnix(path);
      assert.equal(unixSocketAnswers(path), true);
      assert.throws(
        () => listenUnix(path),
        (e: unknown) =>
          e instanceof NativeError &&
          e.errnoCode === "EADDRINUSE" &&
          e.syscall === "bind" &&
          e.path === path &&
          e.details.live === true &&
          isVirtioError(e, ErrorCode.NATIVE),
      );
      // The listener accepted the probe's connection; drain it.
      const probe = acceptUnix(server);
      assert.ok(probe !== null);
      close(probe);

      close(server); // the socket file stays: stale
      assert.equal(unixSocketAnswers(path), false);
      assert.throws(
        () => listenUnix(path),
        (e: unknown) => isNativeError(e, "EADDRINUSE") && e.details.live === false,
      );
    });
  } finally {
    dir.remove();
  }
});

test("recvmsg returns null when nothing is pending and sendmsg returns null when the buffer is full", () => {
  noFdLeak(() => {
    const [a, b] = socketPair();
    assert.equal(recvmsg(b, 64, 0), null);
    const chunk = Buffer.alloc(65536, 7);
    let sent = 0;
    let full = false;
    for (let i = 0; i < 10_000 && !full; i++) {
      const n = sendmsg(a, chunk);
      if (n === null) full = true;
      else sent += n;
    }
    assert.ok(full, "the socket buffer filled up");
    let received = 0;
    for (let i = 0; i < 10_000; i++) {
      const msg = recvmsg(b, 65536, 0);
      if (msg === null) break;
      assert.ok(msg.bytes.every((x) => x === 7));
      received += msg.bytes.length;
    }
    assert.equal(received, sent);
    closeAll([a, b]);
  });
});

test("more fds than maxFds: MSG_CTRUNC error, the fds that arrived are closed, the next message is fine", () => {
  noFdLeak(() => {
    const [a, b] = socketPair();
    const files = [memfdCreate("x"), memfdCreate("y"), memfdCreate("z")];
    for (const maxFds of [0, 1, 2]) {
      const before = fdSnapshot();
      assert.equal(sendmsg(a, Buffer.from("msg"), files), 3);
      assert.throws(
        () => recvmsg(b, 64, maxFds),
        (e: unknown) =>
          isNativeError(e, "MSG_CTRUNC") && e.syscall === "recvmsg" && /maxFds/.test(e.message),
      );
      assert.deepEqual(fdsOpenedSince(before), [], `maxFds ${maxFds}: nothing left open`);
    }
    assert.equal(sendmsg(a, Buffer.from("next"), files.slice(0, 2)), 4);
    const msg = recvmsg(b, 64, 2);
    assert.ok(msg);
    assert.equal(msg.bytes.toString(), "next");
    assert.equal(msg.fds.length, 2);
    closeAll([a, b, ...files, ...msg.fds]);
  });
});

test("reading a header first takes the message's fds; the payload read carries none", () => {
  noFdLeak(() => {
    const [a, b] = socketPair();
    const file = memfdCreate("kick");
    const message = Buffer.alloc(20, 1); // 12-byte header + 8-byte payload
    assert.equal(sendmsg(a, message, [file]), 20);
    const header = recvmsg(b, 12, 8);
    assert.ok(header);
    assert.equal(header.bytes.length, 12);
    assert.equal(header.fds.length, 1);
    const payload = recvmsg(b, 8, 8);
    assert.ok(payload);
    assert.equal(payload.bytes.length, 8);
    assert.deepEqual(payload.fds, []);
    closeAll([a, b, file, ...header.fds]);
  });
});

test("EOF after the peer shuts down or closes; sending to a closed peer throws EPIPE", () => {
  noFdLeak(() => {
    const [a, b] = socketPair();
    sendmsg(a, Buffer.from("last"));
    shutdown(a, "write");
    assert.equal(recvmsg(b, 64, 0)?.bytes.toString(), "last");
    const eof = recvmsg(b, 64, 0);
    assert.ok(eof);
    assert.equal(eof.eof, true);
    assert.equal(eof.bytes.length, 0);
    assert.deepEqual(eof.fds, []);
    close(a);
    assert.equal(recvmsg(b, 64, 0)?.eof, true);
    assert.throws(() => sendmsg(b, Buffer.from("x")), nativeCode("EPIPE"));
    close(b);
  });
});

test("failed system calls throw NativeError with errno name and syscall; misuse throws TypeError/RangeError", () => {
  const dir = tempDir();
  try {
    noFdLeak(() => {
      assert.throws(
        () => close(999_999),
        (e: unknown) =>
          isNativeError(e, "EBADF") &&
          e.syscall === "close" &&
          e.errno === 9 &&
          e.code === ErrorCode.NATIVE &&
          e.message === "close EBADF: bad file descriptor",
      );
      assert.throws(() => connectUnix(join(dir.path, "missing.sock")), nativeCode("ENOENT"));
      assert.throws(() => listenUnix(join(dir.path, "x".repeat(120))), nativeCode("ENAMETOOLONG"));
      assert.throws(() => close(-1), RangeError);
      assert.throws(() => close(1.5), RangeError);
      assert.throws(() => listenUnix(""), RangeError);
      assert.throws(() => listenUnix("a\0b"), RangeError);
      const [a, b] = socketPair();
      assert.throws(() => recvmsg(a, 0, 0), RangeError);
      assert.throws(() => recvmsg(a, 16, MAX_FDS_PER_MESSAGE + 1), RangeError);
      assert.throws(() => sendmsg(a, new Uint8Array(0)), RangeError);
      assert.throws(() => sendmsg(a, new Uint16Array(4) as unknown as Uint8Array), TypeError);
      assert.throws(() => sendmsg(a, Buffer.from("x"), [-1]), RangeError);
      const tooMany = Array.from({ length: MAX_FDS_PER_MESSAGE + 1 }, () => a);
      assert.throws(() => sendmsg(a, Buffer.from("x"), tooMany), RangeError);
      assert.throws(() => shutdown(a, "sideways" as "read"), RangeError);
      closeAll([a, b]);
    });
  } finally {
    dir.remove();
  }
});

test("isListeningSocket: true for a listener, false for connected sockets, errors for other fds", () => {
  const dir = tempDir();
  try {
    noFdLeak(() => {
      const path = join(dir.path, "l.sock");
      const listener = listenUnix(path);
      const client = connectUnix(path);
      const served = acceptUnix(listener)!;
      const [a, b] = socketPair();
      assert.equal(isListeningSocket(listener), true);
      for (const fd of [client, served, a, b]) assert.equal(isListeningSocket(fd), false);
      const file = memfdCreate("not-a-socket");
      assert.throws(() => isListeningSocket(file), nativeCode("ENOTSOCK"));
      closeAll([listener, client, served, a, b, file]);
      assert.throws(() => isListeningSocket(listener), nativeCode("EBADF"));
    });
  } finally {
    dir.remove();
  }
});

for (const kind of ["path", "abstract name"] as const) {
  test(`sendUnixDatagram reaches a datagram socket bound to ${kind === "path" ? "a path" : "an abstract name"}, one datagram per recvmsg`, () => {
    const dir = tempDir();
    try {
      noFdLeak(() => {
        const address =
          kind === "path"
            ? join(dir.path, "notify")
            : `@virtio-ts-test-${process.pid}-${Date.now()}`;
        const receiver = bindUnixDatagram(address);
        assert.equal(fdFlags(receiver) & O_CLOEXEC, O_CLOEXEC);
        assert.equal(recvmsg(receiver, 64, 0), null, "nothing queued yet");
        sendUnixDatagram(address, Buffer.from("READY=1\nSTATUS=serving"));
        sendUnixDatagram(address, Buffer.from("STOPPING=1"));
        assert.equal(recvmsg(receiver, 64, 0)?.bytes.toString(), "READY=1\nSTATUS=serving");
        assert.equal(recvmsg(receiver, 64, 0)?.bytes.toString(), "STOPPING=1");
        assert.equal(recvmsg(receiver, 64, 0), null);
        assert.throws(() => bindUnixDatagram(address), nativeCode("EADDRINUSE"));
        close(receiver);
      });
    } finally {
      dir.remove();
    }
  });
}

test("sendUnixDatagram: nobody bound, a too long or empty address", () => {
  const dir = tempDir();
  try {
    noFdLeak(() => {
      const bytes = Buffer.from("READY=1");
      assert.throws(() => sendUnixDatagram(join(dir.path, "none"), bytes), nativeCode("ENOENT"));
      assert.throws(
        () => sendUnixDatagram(`@virtio-ts-nobody-${process.pid}-${Date.now()}`, bytes),
        nativeCode("ECONNREFUSED"),
      );
      assert.throws(
        () => sendUnixDatagram(`/${"x".repeat(120)}`, bytes),
        nativeCode("ENAMETOOLONG"),
      );
      assert.throws(() => sendUnixDatagram("@", bytes), RangeError);
      assert.throws(() => sendUnixDatagram("", bytes), RangeError);
      assert.throws(() => bindUnixDatagram("@"), RangeError);
      assert.throws(() => sendUnixDatagram("/x", "s" as unknown as Uint8Array), TypeError);
    });
  } finally {
    dir.remove();
  }
});

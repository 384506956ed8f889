import { test } from "node:test";
import assert from "node:assert/strict";
import { EFD_SEMAPHORE, EVENTFD_MAX, eventfd, eventfdRead, eventfdWrite } from "./eventfd.ts";
import { memfdCreate } from "./files.ts";
import { isNativeError } from "./native-error.ts";
import { close } from "./sockets.ts";
import {
  fdFlags,
  fdsOpenedSince,
  fdSnapshot,
  fdTarget,
  O_CLOEXEC,
  O_NONBLOCK,
} from "./test-support.ts";

test("eventfd: non-blocking CLOEXEC counter; reads reset it, writes accumulate, EAGAIN is null/false", () => {
  const before = fdSnapshot();
  const fd = eventfd();
  assert.equal(fdTarget(fd), "anon_inode:[eventfd]");
  assert.equal(fdFlags(fd) & (O_CLOEXEC | O_NONBLOCK), O_CLOEXEC | O_NONBLOCK);
  assert.equal(eventfdRead(fd), null);
  assert.equal(eventfdWrite(fd), true);
  assert.equal(eventfdRead(fd), 1n);
  assert.equal(eventfdRead(fd), null);
  eventfdWrite(fd, 1);
  eventfdWrite(fd, 2n);
  eventfdWrite(fd, 2 ** 40);
  assert.equal(eventfdRead(fd), 3n + 2n ** 40n);
  assert.equal(eventfdWrite(fd, EVENTFD_MAX), true);
  assert.equal(eventfdWrite(fd, 1), false, "the counter would overflow");
  assert.equal(eventfdRead(fd), EVENTFD_MAX);
  close(fd);

  const initial = eventfd(7);
  assert.equal(eventfdRead(initial), 7n);
  close(initial);

  const semaphore = eventfd(2, EFD_SEMAPHORE);
  assert.equal(eventfdRead(semaphore), 1n);
  assert.equal(eventfdRead(semaphore), 1n);
  assert.equal(eventfdRead(semaphore), null);
  close(semaphore);
  assert.deepEqual(fdsOpenedSince(before), []);
});

test("eventfd argument checks", () => {
  const fd = eventfd();
  assert.throws(() => eventfdWrite(fd, EVENTFD_MAX + 1n), RangeError);
  assert.throws(() => eventfdWrite(fd, -1), RangeError);
  assert.throws(() => eventfdWrite(fd, 1.5), RangeError);
  assert.throws(() => eventfdWrite(fd, "1" as unknown as number), TypeError);
  assert.throws(() => eventfd(-1), RangeError);
  assert.throws(() => eventfd(0, 4), RangeError);
  close(fd);
  const file = memfdCreate("not-an-eventfd");
  assert.throws(
    () => eventfdRead(file),
    (e: unknown) => isNativeError(e, "EINVAL"),
  );
  close(file);
  assert.throws(
    () => eventfdRead(999_999),
    (e: unknown) => isNativeError(e, "EBADF"),
  );
});

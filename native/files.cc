// File-descriptor helpers Node.js lacks: eventfd (vhost-user kick/call
// notifications: "the front-end ... writes to the kick file descriptor",
// vhost-user spec "Kick and call file descriptors"), memfd with seals (guest
// RAM and the inflight buffer), fallocate (discard / write-zeroes for the blk
// backing store), block-device geometry and ranges (BLKDISCARD / BLKZEROOUT:
// discard / write-zeroes when the image is a block device) and O_DIRECT
// geometry.
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "addon.h"

namespace vts {
namespace {

constexpr int64_t kMaxSafeInteger = (int64_t{1} << 53) - 1;
// An eventfd counter holds at most 2^64 - 2; writing more fails with EINVAL.
constexpr uint64_t kEventfdMax = 0xfffffffffffffffeULL;

// eventfd(initval, flags) -> fd; always EFD_NONBLOCK | EFD_CLOEXEC.
Napi::Value Eventfd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  unsigned int initval = static_cast<unsigned int>(IntArg(info, 0, "initval", 0, 0xffffffffLL));
  int flags = static_cast<int>(IntArg(info, 1, "flags", 0, EFD_SEMAPHORE));
  int fd = ::eventfd(initval, flags | EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) ThrowSys(env, "eventfd", errno);
  return Napi::Number::New(env, fd);
}

// eventfdRead(fd) -> bigint | null (counter is zero)
Napi::Value EventfdRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  uint64_t value;
  ssize_t n;
  do {
    n = ::read(fd, &value, sizeof value);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return env.Null();
    ThrowSys(env, "read", errno);
  }
  if (n != sizeof value) ThrowSys(env, "read", EINVAL);  // not an eventfd
  return Napi::BigInt::New(env, value);
}

// eventfdWrite(fd, value) -> true, or false if the counter would overflow
// (the reader then has a wakeup pending anyway).
Napi::Value EventfdWrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  uint64_t value = U64Arg(info, 1, "value", kEventfdMax);
  ssize_t n;
  do {
    n = ::write(fd, &value, sizeof value);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Boolean::New(env, false);
    ThrowSys(env, "write", errno);
  }
  if (n != sizeof value) ThrowSys(env, "write", EINVAL);
  return Napi::Boolean::New(env, true);
}

// memfdCreate(name, flags) -> fd; always MFD_CLOEXEC.
Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = StringArg(info, 0, "name");
  int64_t flags = IntArg(info, 1, "flags", 0, 0x7fffffff);
  // The huge page size bits use the same encoding as mmap's MAP_HUGE_*.
  const int64_t allowed =
      MFD_ALLOW_SEALING | MFD_HUGETLB | (int64_t{MAP_HUGE_MASK} << MAP_HUGE_SHIFT);
  if ((flags & ~allowed) != 0) {
    throw Napi::RangeError::New(env, "flags may hold only MFD_ALLOW_SEALING and MFD_HUGETLB");
  }
  int fd = ::memfd_create(name.c_str(), static_cast<unsigned int>(flags) | MFD_CLOEXEC);
  if (fd < 0) ThrowSys(env, "memfd_create", errno);
  return Napi::Number::New(env, fd);
}

// ftruncate(fd, size)
Napi::Value Ftruncate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  int64_t size = IntArg(info, 1, "size", 0, kMaxSafeInteger);
  int rc;
  do {
    rc = ::ftruncate(fd, static_cast<off_t>(size));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) ThrowSys(env, "ftruncate", errno);
  return env.Undefined();
}

// addSeals(fd, seals): fcntl(F_ADD_SEALS)
Napi::Value AddSeals(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  int seals = static_cast<int>(IntArg(info, 1, "seals", 0, 0x7fffffff));
  if (::fcntl(fd, F_ADD_SEALS, seals) != 0) ThrowSys(env, "fcntl(F_ADD_SEALS)", errno);
  return env.Undefined();
}

// getSeals(fd) -> seals: fcntl(F_GET_SEALS)
Napi::Value GetSeals(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int seals = ::fcntl(FdArg(info, 0), F_GET_SEALS);
  if (seals < 0) ThrowSys(env, "fcntl(F_GET_SEALS)", errno);
  return Napi::Number::New(env, seals);
}

// fallocate(fd, mode, offset, length). EOPNOTSUPP means the file system does
// not support `mode`; the caller falls back (e.g. writes zeroes).
Napi::Value Fallocate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  int mode = static_cast<int>(IntArg(info, 1, "mode", 0, 0x7fffffff));
  int64_t offset = IntArg(info, 2, "offset", 0, kMaxSafeInteger);
  int64_t length = IntArg(info, 3, "length", 1, kMaxSafeInteger);
  const int allowed = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE;
  if ((mode & ~allowed) != 0) {
    throw Napi::RangeError::New(env, "mode may hold only FALLOC_FL_KEEP_SIZE, "
                                     "FALLOC_FL_PUNCH_HOLE and FALLOC_FL_ZERO_RANGE");
  }
  int rc;
  do {
    rc = ::fallocate(fd, mode, static_cast<off_t>(offset), static_cast<off_t>(length));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) ThrowSys(env, "fallocate", errno);
  return env.Undefined();
}

// blockDeviceInfo(fd) -> { size, logicalBlockSize, physicalBlockSize }
// (fstat reports size 0 for a block device). ENOTTY if fd is no block device.
Napi::Value BlockDeviceInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  uint64_t size = 0;
  int logical = 0;
  unsigned int physical = 0;
  if (::ioctl(fd, BLKGETSIZE64, &size) != 0) ThrowSys(env, "ioctl(BLKGETSIZE64)", errno);
  if (::ioctl(fd, BLKSSZGET, &logical) != 0) ThrowSys(env, "ioctl(BLKSSZGET)", errno);
  if (::ioctl(fd, BLKPBSZGET, &physical) != 0) ThrowSys(env, "ioctl(BLKPBSZGET)", errno);
  Napi::Object result = Napi::Object::New(env);
  result.Set("size", Napi::Number::New(env, static_cast<double>(size)));
  result.Set("logicalBlockSize", Napi::Number::New(env, logical));
  result.Set("physicalBlockSize", Napi::Number::New(env, physical));
  return result;
}

// ioctl(fd, request, {offset, length}) on a block device (BLKDISCARD or
// BLKZEROOUT) on the libuv thread pool: either can take long (BLKZEROOUT
// writes zeroes itself on a device without a zeroing command), so the calling
// thread's loop goes on meanwhile. The promise rejects with the system-call
// error: EINVAL for a range not aligned to the logical block size,
// EOPNOTSUPP for a device that cannot do it.
class BlockRangeWorker : public Napi::AsyncWorker {
 public:
  BlockRangeWorker(Napi::Env env, int fd, unsigned long request, const char* name,
                   uint64_t offset, uint64_t length)
      : Napi::AsyncWorker(env, name),
        deferred_(Napi::Promise::Deferred::New(env)),
        fd_(fd),
        request_(request),
        name_(name),
        range_{offset, length} {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    int rc;
    do {
      rc = ::ioctl(fd_, request_, range_);
    } while (rc != 0 && errno == EINTR);
    err_ = rc == 0 ? 0 : errno;
  }

  void OnOK() override {
    if (err_ != 0) {
      deferred_.Reject(MakeSysError(Env(), name_, err_));
    } else {
      deferred_.Resolve(Env().Undefined());
    }
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  int fd_;
  unsigned long request_;
  const char* name_;
  uint64_t range_[2];
  int err_ = 0;
};

Napi::Value BlockRange(const Napi::CallbackInfo& info, unsigned long request, const char* name) {
  int fd = FdArg(info, 0);
  int64_t offset = IntArg(info, 1, "offset", 0, kMaxSafeInteger);
  int64_t length = IntArg(info, 2, "length", 1, kMaxSafeInteger);
  auto* worker = new BlockRangeWorker(info.Env(), fd, request, name,
                                      static_cast<uint64_t>(offset), static_cast<uint64_t>(length));
  Napi::Promise promise = worker->Promise();
  worker->Queue();  // deletes itself when done
  return promise;
}

// blockDiscard(fd, offset, length) -> Promise: ioctl BLKDISCARD (the device may deallocate).
Napi::Value BlockDiscard(const Napi::CallbackInfo& info) {
  return BlockRange(info, BLKDISCARD, "ioctl(BLKDISCARD)");
}

// blockZeroOut(fd, offset, length) -> Promise: ioctl BLKZEROOUT (reads return
// zeroes after; the kernel writes zeroes itself when the device has no
// zeroing command).
Napi::Value BlockZeroOut(const Napi::CallbackInfo& info) {
  return BlockRange(info, BLKZEROOUT, "ioctl(BLKZEROOUT)");
}

// directIoAlignment(fd) -> { memoryAlignment, offsetAlignment } | null when the
// kernel or file system does not report O_DIRECT alignment (statx STATX_DIOALIGN).
Napi::Value DirectIoAlignment(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
#ifdef STATX_DIOALIGN
  struct statx stx {};
  if (::statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) != 0) {
    if (errno == ENOSYS || errno == EINVAL) return env.Null();
    ThrowSys(env, "statx", errno);
  }
  if ((stx.stx_mask & STATX_DIOALIGN) == 0 || stx.stx_dio_offset_align == 0) return env.Null();
  Napi::Object result = Napi::Object::New(env);
  result.Set("memoryAlignment", Napi::Number::New(env, stx.stx_dio_mem_align));
  result.Set("offsetAlignment", Napi::Number::New(env, stx.stx_dio_offset_align));
  return result;
#else
  (void)fd;
  return env.Null();
#endif
}

}  // namespace

void InitFiles(Napi::Env env, Napi::Object exports) {
  Constant(exports, "EFD_SEMAPHORE", EFD_SEMAPHORE);
  Constant(exports, "MFD_ALLOW_SEALING", MFD_ALLOW_SEALING);
  Constant(exports, "MFD_HUGETLB", MFD_HUGETLB);
  Constant(exports, "F_SEAL_SEAL", F_SEAL_SEAL);
  Constant(exports, "F_SEAL_SHRINK", F_SEAL_SHRINK);
  Constant(exports, "F_SEAL_GROW", F_SEAL_GROW);
  Constant(exports, "F_SEAL_WRITE", F_SEAL_WRITE);
  Constant(exports, "FALLOC_FL_KEEP_SIZE", FALLOC_FL_KEEP_SIZE);
  Constant(exports, "FALLOC_FL_PUNCH_HOLE", FALLOC_FL_PUNCH_HOLE);
  Constant(exports, "FALLOC_FL_ZERO_RANGE", FALLOC_FL_ZERO_RANGE);
  Export(env, exports, "eventfd", Eventfd);
  Export(env, exports, "eventfdRead", EventfdRead);
  Export(env, exports, "eventfdWrite", EventfdWrite);
  Export(env, exports, "memfdCreate", MemfdCreate);
  Export(env, exports, "ftruncate", Ftruncate);
  Export(env, exports, "addSeals", AddSeals);
  Export(env, exports, "getSeals", GetSeals);
  Export(env, exports, "fallocate", Fallocate);
  Export(env, exports, "blockDeviceInfo", BlockDeviceInfo);
  Export(env, exports, "blockDiscard", BlockDiscard);
  Export(env, exports, "blockZeroOut", BlockZeroOut);
  Export(env, exports, "directIoAlignment", DirectIoAlignment);
}

}  // namespace vts

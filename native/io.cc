// Positioned vectored I/O that never blocks: preadv2/pwritev2 with
// RWF_NOWAIT. A read of data already in the page cache completes inline on the
// calling thread (no thread-pool hop); anything that would wait for the disk
// answers EAGAIN and the caller falls back to Node's asynchronous fs.readv /
// fs.writev. Used by the virtio-blk file backing store on its dataplane
// thread.
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <vector>

#include "addon.h"

#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif

namespace vts {
namespace {

constexpr size_t kMaxIov = IOV_MAX;

// ioNowait(fd, buffers, position, write) -> bytes transferred | null (EAGAIN:
// the transfer would block). Other errors throw (EOPNOTSUPP: the file system
// cannot do non-blocking I/O of this kind).
Napi::Value IoNowait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  static thread_local std::vector<struct iovec> iov;  // reused: no allocation per call
  size_t n = IovecArg(env, info[1], iov);
  off_t pos = static_cast<off_t>(IntArg(info, 2, "position", 0, (int64_t{1} << 53) - 1));
  bool write = BoolArg(info, 3, "write");
  ssize_t r;
  do {
    r = write ? ::pwritev2(fd, iov.data(), static_cast<int>(n), pos, RWF_NOWAIT)
              : ::preadv2(fd, iov.data(), static_cast<int>(n), pos, RWF_NOWAIT);
  } while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return env.Null();
    ThrowSys(env, write ? "pwritev2" : "preadv2", errno);
  }
  return Napi::Number::New(env, static_cast<double>(r));
}

}  // namespace

size_t IovecArg(Napi::Env env, Napi::Value arg, std::vector<struct iovec>& iov) {
  if (!arg.IsArray()) throw Napi::TypeError::New(env, "buffers must be an array of Uint8Array");
  Napi::Array list = arg.As<Napi::Array>();
  size_t n = list.Length();
  if (n == 0 || n > kMaxIov) throw Napi::RangeError::New(env, "buffers must hold 1..1024 views");
  iov.resize(n);
  for (size_t k = 0; k < n; k++) {
    Napi::Value v = list.Get(k);
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
      throw Napi::TypeError::New(env, "buffers must hold Uint8Arrays");
    }
    Napi::Uint8Array a = v.As<Napi::Uint8Array>();
    iov[k].iov_base = a.Data();
    iov[k].iov_len = a.ByteLength();
  }
  return n;
}

void InitIo(Napi::Env env, Napi::Object exports) { Export(env, exports, "ioNowait", IoNowait); }

}  // namespace vts

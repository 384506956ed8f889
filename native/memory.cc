// mmap of fd-backed memory as zero-copy external ArrayBuffers, for guest RAM
// shared by a vhost-user frontend: "the back-end ... mmap()s the memory
// region file descriptors" (vhost-user spec, "Memory regions"; mapped
// MAP_SHARED | MAP_NORESERVE like libvhost-user).
//
// munmap() detaches the ArrayBuffer first (every view over it becomes
// zero-length, so JavaScript can no longer reach the pages) and then unmaps.
// A buffer that is only garbage-collected is unmapped by its finalizer.
//
// A guarded mapping (mmap(..., guard = true), for files that can shrink) is
// registered with the SIGBUS guard (sigbus.h) for its whole life: unregistered
// before it is unmapped; mappingFaults() reads its fault count.
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>
#include <unordered_map>

#include "addon.h"
#include "sigbus.h"

namespace vts {
namespace {

// Node.js typed arrays and Buffers hold at most 2^32 bytes here
// (buffer.constants.MAX_LENGTH); larger regions are mapped in windows.
constexpr int64_t kMaxMapLength = int64_t{1} << 32;
constexpr int64_t kMaxSafeInteger = (int64_t{1} << 53) - 1;

struct Mapping {
  void* addr;
  size_t length;     // the ArrayBuffer's byteLength
  size_t mapLength;  // what munmap() needs: length rounded up to the granule
  bool unmapped;
  int guardSlot;  // the SIGBUS guard's slot, or -1 (not guarded)
};

// Unregisters from the guard (first: the range must not be guarded once it
// can be reused) and unmaps.
void Release(Mapping* m) {
  GuardRemove(m->guardSlot);
  m->guardSlot = -1;
  ::munmap(m->addr, m->mapLength);
}

// Live mappings by address: process-wide (a mapping belongs to the process),
// so guarded by a mutex. munmap() only accepts buffers found here.
std::mutex gMutex;
std::unordered_map<void*, Mapping*> gMappings;

size_t PageSize() { return static_cast<size_t>(::sysconf(_SC_PAGESIZE)); }

// The unit in which a mapping of `fd` is placed: the huge page size on
// hugetlbfs (offsets and munmap lengths must be multiples of it), else the page.
size_t Granule(Napi::Env env, int fd) {
  struct statfs sfs;
  if (::fstatfs(fd, &sfs) != 0) ThrowSys(env, "fstatfs", errno);
  if (static_cast<unsigned long>(sfs.f_type) == HUGETLBFS_MAGIC) {
    struct stat st;
    if (::fstat(fd, &st) != 0) ThrowSys(env, "fstat", errno);
    if (st.st_blksize > 0) return static_cast<size_t>(st.st_blksize);
  }
  return PageSize();
}

// Runs when V8 frees the buffer's backing store (on the owning thread).
void FinalizeMapping(napi_env /*env*/, void* /*data*/, void* hint) {
  Mapping* m = static_cast<Mapping*>(hint);
  {
    std::lock_guard<std::mutex> lock(gMutex);
    if (!m->unmapped) {
      Release(m);
      auto it = gMappings.find(m->addr);
      // The address may already belong to a newer mapping.
      if (it != gMappings.end() && it->second == m) gMappings.erase(it);
    }
  }
  delete m;
}

// mmap(fd, length, offset, writable, guard = false) -> ArrayBuffer
Napi::Value Mmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  int64_t length = IntArg(info, 1, "length", 1, kMaxMapLength);
  int64_t offset = IntArg(info, 2, "offset", 0, kMaxSafeInteger);
  bool writable = BoolArg(info, 3, "writable");
  bool guard = info.Length() > 4 && !info[4].IsUndefined() && BoolArg(info, 4, "guard");
  size_t granule = Granule(env, fd);
  if (offset % static_cast<int64_t>(granule) != 0) {
    throw Napi::RangeError::New(env, "offset " + std::to_string(offset) +
                                         " must be a multiple of " + std::to_string(granule));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) ThrowSys(env, "fstat", errno);
  // Touching a page wholly past the end of a file raises SIGBUS: refuse.
  if (S_ISREG(st.st_mode) && static_cast<uint64_t>(offset + length) >
                                 RoundUp(static_cast<uint64_t>(st.st_size), granule)) {
    std::string message = "mapping [" + std::to_string(offset) + ", " +
                          std::to_string(offset + length) + ") extends past the end of the file (" +
                          std::to_string(st.st_size) + " bytes)";
    ThrowSys(env, "mmap", ENXIO, nullptr, nullptr, &message);
  }
  // Read-only requests map privately with write permission: a stray write
  // from JavaScript then lands in a private copy instead of faulting.
  int flags = (writable ? MAP_SHARED : MAP_PRIVATE) | MAP_NORESERVE;
  void* addr = ::mmap(nullptr, static_cast<size_t>(length), PROT_READ | PROT_WRITE, flags, fd,
                      static_cast<off_t>(offset));
  if (addr == MAP_FAILED) ThrowSys(env, "mmap", errno);

  Mapping* m = new Mapping{addr, static_cast<size_t>(length),
                           static_cast<size_t>(RoundUp(static_cast<uint64_t>(length), granule)),
                           false, -1};
  if (guard) {
    m->guardSlot = GuardAdd(addr, m->mapLength, granule);
    if (m->guardSlot < 0) {
      int err = errno;
      ::munmap(addr, m->mapLength);
      delete m;
      std::string message = "cannot guard the mapping against SIGBUS: " +
                            std::string(err == ENOSPC ? "too many guarded mappings"
                                                      : "sigaction failed");
      ThrowSys(env, "mmap", err, nullptr, nullptr, &message);
    }
  }
  {
    std::lock_guard<std::mutex> lock(gMutex);
    gMappings[addr] = m;
  }
  napi_value ab;
  napi_status status = napi_create_external_arraybuffer(env, addr, static_cast<size_t>(length),
                                                        FinalizeMapping, m, &ab);
  if (status != napi_ok) {
    // Creation failed before a finalizer was attached (the length is within
    // Node's limit, so this is e.g. a runtime without external buffers).
    {
      std::lock_guard<std::mutex> lock(gMutex);
      gMappings.erase(addr);
    }
    Release(m);
    delete m;
    throw Napi::Error::New(env, "napi_create_external_arraybuffer failed (status " +
                                    std::to_string(status) + ")");
  }
  return Napi::Value(env, ab);
}

// munmap(buffer) -> true, or false if the buffer is already detached.
Napi::Value Munmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArrayBuffer()) {
    throw Napi::TypeError::New(env, "buffer must be an ArrayBuffer returned by mmap()");
  }
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  if (ab.IsDetached()) return Napi::Boolean::New(env, false);
  void* addr = ab.Data();
  Mapping* m = nullptr;
  {
    std::lock_guard<std::mutex> lock(gMutex);
    auto it = gMappings.find(addr);
    if (it != gMappings.end() && it->second->length == ab.ByteLength()) m = it->second;
  }
  if (m == nullptr) {
    throw Napi::TypeError::New(env, "buffer is not an ArrayBuffer returned by mmap()");
  }
  // Detach first: from here on no JavaScript view can reach the pages.
  ab.Detach();
  {
    std::lock_guard<std::mutex> lock(gMutex);
    gMappings.erase(addr);
    m->unmapped = true;  // the finalizer, when it runs, only frees `m`
    GuardRemove(m->guardSlot);
    m->guardSlot = -1;
  }
  if (::munmap(addr, m->mapLength) != 0) ThrowSys(env, "munmap", errno);
  return Napi::Boolean::New(env, true);
}

// mappingFaults(buffer) -> SIGBUS faults the guard absorbed in this mapping
// (0 for a mapping that is not guarded); throws for any other buffer.
Napi::Value MappingFaults(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArrayBuffer()) {
    throw Napi::TypeError::New(env, "buffer must be an ArrayBuffer returned by mmap()");
  }
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  if (ab.IsDetached()) return Napi::Number::New(env, 0);
  std::lock_guard<std::mutex> lock(gMutex);
  auto it = gMappings.find(ab.Data());
  if (it == gMappings.end() || it->second->length != ab.ByteLength()) {
    throw Napi::TypeError::New(env, "buffer is not an ArrayBuffer returned by mmap()");
  }
  return Napi::Number::New(env, static_cast<double>(GuardFaults(it->second->guardSlot)));
}

// mapAlignment(fd) -> the granule mmap() offsets of this fd must be multiples of.
Napi::Value MapAlignment(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(),
                           static_cast<double>(Granule(info.Env(), FdArg(info, 0))));
}

// mappingCount() -> number of live mappings in the process (for leak checks).
Napi::Value MappingCount(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(gMutex);
  return Napi::Number::New(info.Env(), static_cast<double>(gMappings.size()));
}

}  // namespace

void InitMemory(Napi::Env env, Napi::Object exports) {
  exports.Set("pageSize", Napi::Number::New(env, static_cast<double>(PageSize())));
  Export(env, exports, "mmap", Mmap);
  Export(env, exports, "munmap", Munmap);
  Export(env, exports, "mapAlignment", MapAlignment);
  Export(env, exports, "mappingCount", MappingCount);
  Export(env, exports, "mappingFaults", MappingFaults);
  InitSigbus(env, exports);
}

}  // namespace vts

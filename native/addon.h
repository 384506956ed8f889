// virtio-ts native addon: declarations shared by the source files.
//
// The addon is a thin layer over Linux system calls that Node.js lacks
// (fd passing, mmap, eventfd, fd watching, memfd, fallocate, io_uring). It holds no
// protocol logic: the TypeScript side (src/native/) decides what to do.
//
// Conventions:
//  - Every function is synchronous and never blocks: sockets and eventfds are
//    created non-blocking and close-on-exec; EAGAIN is reported as `null` (or
//    `false`) by the functions that document it.
//  - A failed system call throws the error object that the TypeScript side
//    registered with setErrorFactory() (a NativeError); misuse of the API
//    (wrong argument types or ranges) throws TypeError / RangeError.
//  - Context-aware: all per-environment state (main thread or worker) lives in
//    EnvState, the addon's instance data. The only process-wide state is the
//    table of live mappings in memory.cc, guarded by a mutex, and the SIGBUS
//    guard's registry and handler in sigbus.cc, because a mapping and a
//    signal handler belong to the process rather than to a JavaScript
//    environment.
#pragma once

#include <napi.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace vts {

struct Poll;  // watch.cc

// Per-environment state, owned by the addon's instance data.
struct EnvState {
  // (syscall, errno, path?, code?, message?) => Error, set from TypeScript.
  Napi::FunctionReference errorFactory;
  // Receive buffer reused by recvmsg() (bytes are copied out of it).
  std::vector<uint8_t> recvScratch;
  // watch(): live polls by id, and polls whose uv_close() is still pending.
  std::unordered_map<uint32_t, Poll*> polls;
  uint32_t nextPollId = 1;
  size_t closingPolls = 0;
  bool tearingDown = false;
  napi_async_cleanup_hook_handle cleanupHook = nullptr;
  // uring.cc's open rings (a type-erased owner, so that this header need not
  // know the type: destroying it closes every ring of the environment).
  std::shared_ptr<void> urings;
};

EnvState& State(Napi::Env env);

// Builds the error for a failed system call. `err` is the errno value (0 when
// `code` names a condition that is not an errno, e.g. "MSG_CTRUNC").
Napi::Value MakeSysError(Napi::Env env, const char* syscall, int err,
                         const std::string* path = nullptr, const char* code = nullptr,
                         const std::string* message = nullptr);

// Throws MakeSysError(...) as a JavaScript exception.
[[noreturn]] void ThrowSys(Napi::Env env, const char* syscall, int err,
                           const std::string* path = nullptr, const char* code = nullptr,
                           const std::string* message = nullptr);

// Argument parsing; each throws TypeError / RangeError naming `name`.
int FdArg(const Napi::CallbackInfo& info, size_t i, const char* name = "fd");
int64_t IntArg(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t min,
               int64_t max);
uint64_t U64Arg(const Napi::CallbackInfo& info, size_t i, const char* name, uint64_t max);
bool BoolArg(const Napi::CallbackInfo& info, size_t i, const char* name);
std::string StringArg(const Napi::CallbackInfo& info, size_t i, const char* name);

// Collects `arg`, an array of 1..IOV_MAX Uint8Arrays, into `iov` (resized to
// fit); returns the count. Throws TypeError / RangeError (io.cc).
size_t IovecArg(Napi::Env env, Napi::Value arg, std::vector<struct iovec>& iov);

// Rounds `v` up to a multiple of `align` (a power of two or any non-zero value).
inline uint64_t RoundUp(uint64_t v, uint64_t align) { return (v + align - 1) / align * align; }

void InitSockets(Napi::Env env, Napi::Object exports);
void InitMemory(Napi::Env env, Napi::Object exports);
void InitFiles(Napi::Env env, Napi::Object exports);
void InitWatch(Napi::Env env, Napi::Object exports);
void InitIo(Napi::Env env, Napi::Object exports);
void InitUring(Napi::Env env, Napi::Object exports);

// Sets exports.constants[name] = value (Linux ABI values, checked by the
// TypeScript tests against the literals src/native declares).
inline void Constant(Napi::Object exports, const char* name, int64_t value) {
  exports.Get("constants").As<Napi::Object>().Set(
      name, Napi::Number::New(exports.Env(), static_cast<double>(value)));
}

// Registers `fn` as exports[name].
inline void Export(Napi::Env env, Napi::Object exports, const char* name,
                   Napi::Function::Callback fn) {
  exports.Set(name, Napi::Function::New(env, fn, name));
}

}  // namespace vts

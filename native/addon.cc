// virtio-ts native addon: module entry, per-environment state, errors and
// argument parsing.
#include "addon.h"

#include <cmath>
#include <cstring>
#include <limits>

namespace vts {

EnvState& State(Napi::Env env) { return *env.GetInstanceData<EnvState>(); }

Napi::Value MakeSysError(Napi::Env env, const char* syscall, int err, const std::string* path,
                         const char* code, const std::string* message) {
  auto optional = [&](const char* s) -> Napi::Value {
    return s != nullptr ? Napi::String::New(env, s) : env.Undefined();
  };
  EnvState& st = State(env);
  if (!st.errorFactory.IsEmpty()) {
    return st.errorFactory.Call({Napi::String::New(env, syscall), Napi::Number::New(env, err),
                                 optional(path != nullptr ? path->c_str() : nullptr),
                                 optional(code), optional(message != nullptr ? message->c_str() : nullptr)});
  }
  // No factory registered (the addon loaded without src/native): plain Error.
  std::string text = std::string(syscall) + " failed: " +
                     (message != nullptr ? *message : std::string(std::strerror(err)));
  Napi::Error e = Napi::Error::New(env, text);
  e.Set("syscall", syscall);
  e.Set("errno", Napi::Number::New(env, err));
  if (code != nullptr) e.Set("errnoCode", code);
  return e.Value();
}

void ThrowSys(Napi::Env env, const char* syscall, int err, const std::string* path,
              const char* code, const std::string* message) {
  throw Napi::Error(env, MakeSysError(env, syscall, err, path, code, message));
}

namespace {

double NumberArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = info[i];
  if (!v.IsNumber()) {
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a number");
  }
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || d != std::trunc(d)) {
    throw Napi::RangeError::New(info.Env(), std::string(name) + " must be an integer");
  }
  return d;
}

}  // namespace

int FdArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  return static_cast<int>(IntArg(info, i, name, 0, std::numeric_limits<int>::max()));
}

int64_t IntArg(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t min,
               int64_t max) {
  double d = NumberArg(info, i, name);
  if (d < static_cast<double>(min) || d > static_cast<double>(max)) {
    throw Napi::RangeError::New(info.Env(), std::string(name) + " must be in [" +
                                                std::to_string(min) + ", " + std::to_string(max) +
                                                "], got " + std::to_string(d));
  }
  return static_cast<int64_t>(d);
}

uint64_t U64Arg(const Napi::CallbackInfo& info, size_t i, const char* name, uint64_t max) {
  Napi::Value v = info[i];
  uint64_t value;
  if (v.IsBigInt()) {
    bool lossless = false;
    value = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) {
      throw Napi::RangeError::New(info.Env(), std::string(name) + " must fit in 64 unsigned bits");
    }
  } else {
    value = static_cast<uint64_t>(IntArg(info, i, name, 0, (int64_t{1} << 53) - 1));
  }
  if (value > max) {
    throw Napi::RangeError::New(info.Env(),
                                std::string(name) + " must be at most " + std::to_string(max));
  }
  return value;
}

bool BoolArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = info[i];
  if (!v.IsBoolean()) {
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a boolean");
  }
  return v.As<Napi::Boolean>().Value();
}

std::string StringArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = info[i];
  if (!v.IsString()) {
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a string");
  }
  std::string s = v.As<Napi::String>().Utf8Value();
  if (s.empty() || s.find('\0') != std::string::npos) {
    throw Napi::RangeError::New(info.Env(),
                                std::string(name) + " must be non-empty and contain no NUL");
  }
  return s;
}

namespace {

// setErrorFactory(factory): the TypeScript side registers how errors are built.
Napi::Value SetErrorFactory(const Napi::CallbackInfo& info) {
  if (!info[0].IsFunction()) {
    throw Napi::TypeError::New(info.Env(), "factory must be a function");
  }
  State(info.Env()).errorFactory = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData<EnvState>(new EnvState());
  exports.Set("constants", Napi::Object::New(env));
  Export(env, exports, "setErrorFactory", SetErrorFactory);
  InitSockets(env, exports);
  InitMemory(env, exports);
  InitFiles(env, exports);
  InitWatch(env, exports);
  InitIo(env, exports);
  InitUring(env, exports);
  return exports;
}

}  // namespace vts

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) {
  return vts::Init(env, exports);
}

NODE_API_MODULE(virtio_ts_native, InitAddon)

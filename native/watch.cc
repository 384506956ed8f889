// Watching fds for readiness on the libuv loop of the calling thread (main
// thread or worker), e.g. a kick eventfd: "the back-end ... polls the kick
// file descriptor" (vhost-user spec, "Kick and call file descriptors").
//
// Each watch is a uv_poll_t on the loop of the environment that created it.
// stop() closes the handle at once (the loop no longer waits for it); the
// memory goes away in uv_close()'s callback. When the environment shuts down
// (worker exit or terminate(), process exit) an async cleanup hook closes the
// watches that are still open and completes once their close callbacks ran,
// so a worker's loop never closes with our handles open.
#include <uv.h>

#include "addon.h"

namespace vts {

struct Poll {
  uv_poll_t handle;
  EnvState* state;
  napi_env env;
  uint32_t id;
  Napi::FunctionReference callback;
  napi_async_context asyncContext = nullptr;
};

namespace {

constexpr int kAllEvents = UV_READABLE | UV_WRITABLE | UV_DISCONNECT | UV_PRIORITIZED;

void OnClosed(uv_handle_t* handle) {
  Poll* p = static_cast<Poll*>(handle->data);
  EnvState* st = p->state;
  delete p;
  st->closingPolls--;
  if (st->tearingDown && st->closingPolls == 0 && st->cleanupHook != nullptr) {
    napi_async_cleanup_hook_handle hook = st->cleanupHook;
    st->cleanupHook = nullptr;
    napi_remove_async_cleanup_hook(hook);
  }
}

// Stops `p`, drops its JavaScript references and starts closing the handle.
void ClosePoll(Poll* p) {
  uv_poll_stop(&p->handle);
  p->callback.Reset();
  if (p->asyncContext != nullptr) {
    napi_async_destroy(p->env, p->asyncContext);
    p->asyncContext = nullptr;
  }
  p->state->closingPolls++;
  uv_close(reinterpret_cast<uv_handle_t*>(&p->handle), OnClosed);
}

void OnPoll(uv_poll_t* handle, int status, int events) {
  Poll* p = static_cast<Poll*>(handle->data);
  if (p->callback.IsEmpty()) return;  // stopped
  Napi::Env env(p->env);
  Napi::HandleScope scope(env);
  napi_value argv[2];
  if (status < 0) {
    // libuv reports an error condition (POLLERR) as status < 0 and stops the
    // handle; building the error may itself throw, which is reported below.
    try {
      argv[0] = MakeSysError(env, "poll", -status);
    } catch (const Napi::Error& e) {
      napi_fatal_exception(p->env, e.Value());
      return;
    }
  } else {
    argv[0] = env.Null();
  }
  argv[1] = Napi::Number::New(env, events);
  napi_value fn = p->callback.Value();
  napi_value result;
  // napi_make_callback runs the callback like Node's own I/O callbacks
  // (async context, then process.nextTick and microtask queues); it needs an
  // object as receiver.
  napi_status s = napi_make_callback(p->env, p->asyncContext, env.Global(), fn, 2, argv,
                                     &result);
  if (s == napi_pending_exception) {
    // A throwing callback is an uncaught exception, as for a timer callback.
    napi_value exception;
    napi_get_and_clear_last_exception(p->env, &exception);
    napi_fatal_exception(p->env, exception);
  }
}

void OnEnvTeardown(napi_async_cleanup_hook_handle hook, void* arg) {
  EnvState* st = static_cast<EnvState*>(arg);
  st->tearingDown = true;
  st->cleanupHook = hook;
  for (auto& entry : st->polls) ClosePoll(entry.second);
  st->polls.clear();
  if (st->closingPolls == 0) {
    st->cleanupHook = nullptr;
    napi_remove_async_cleanup_hook(hook);
  }
}

Poll* Lookup(const Napi::CallbackInfo& info) {
  uint32_t id = static_cast<uint32_t>(IntArg(info, 0, "id", 1, 0xffffffffLL));
  EnvState& st = State(info.Env());
  auto it = st.polls.find(id);
  return it == st.polls.end() ? nullptr : it->second;
}

int EventsArg(const Napi::CallbackInfo& info, size_t i) {
  return static_cast<int>(IntArg(info, i, "events", 1, kAllEvents));
}

void CheckEvents(Napi::Env env, int events) {
  if ((events & ~kAllEvents) != 0) {
    throw Napi::RangeError::New(env, "events may hold only READABLE, WRITABLE, DISCONNECT "
                                     "and PRIORITIZED");
  }
}

// watchStart(fd, events, callback(error | null, events)) -> id
Napi::Value WatchStart(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  int events = EventsArg(info, 1);
  CheckEvents(env, events);
  if (!info[2].IsFunction()) throw Napi::TypeError::New(env, "callback must be a function");
  EnvState& st = State(env);
  if (st.tearingDown) throw Napi::Error::New(env, "environment is shutting down");
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
    throw Napi::Error::New(env, "no libuv loop for this environment");
  }

  Poll* p = new Poll();
  p->state = &st;
  p->env = env;
  // EEXIST: this loop already watches fd (one watch per fd and thread).
  int rc = uv_poll_init(loop, &p->handle, fd);
  if (rc != 0) {
    delete p;
    ThrowSys(env, "uv_poll_init", -rc);
  }
  p->handle.data = p;
  p->callback = Napi::Persistent(info[2].As<Napi::Function>());
  napi_async_init(env, nullptr, Napi::String::New(env, "virtio_ts.watch"), &p->asyncContext);
  rc = uv_poll_start(&p->handle, events, OnPoll);
  if (rc != 0) {
    ClosePoll(p);
    ThrowSys(env, "uv_poll_start", -rc);
  }
  while (st.polls.count(st.nextPollId) != 0 || st.nextPollId == 0) st.nextPollId++;
  p->id = st.nextPollId++;
  st.polls[p->id] = p;
  return Napi::Number::New(env, p->id);
}

// watchSetEvents(id, events): change the watched events (restarts a watch
// that libuv stopped after an error).
Napi::Value WatchSetEvents(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Poll* p = Lookup(info);
  int events = EventsArg(info, 1);
  CheckEvents(env, events);
  if (p == nullptr) throw Napi::Error::New(env, "watch is stopped");
  int rc = uv_poll_start(&p->handle, events, OnPoll);
  if (rc != 0) ThrowSys(env, "uv_poll_start", -rc);
  return env.Undefined();
}

// watchRef(id, ref): whether the watch keeps the loop alive (default true).
Napi::Value WatchRef(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Poll* p = Lookup(info);
  bool ref = BoolArg(info, 1, "ref");
  if (p != nullptr) {
    uv_handle_t* h = reinterpret_cast<uv_handle_t*>(&p->handle);
    if (ref) {
      uv_ref(h);
    } else {
      uv_unref(h);
    }
  }
  return env.Undefined();
}

// watchStop(id) -> true, or false if already stopped.
Napi::Value WatchStop(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Poll* p = Lookup(info);
  if (p == nullptr) return Napi::Boolean::New(env, false);
  State(env).polls.erase(p->id);
  ClosePoll(p);
  return Napi::Boolean::New(env, true);
}

// watchCount() -> live watches in this environment (for leak checks).
Napi::Value WatchCount(const Napi::CallbackInfo& info) {
  EnvState& st = State(info.Env());
  return Napi::Number::New(info.Env(), static_cast<double>(st.polls.size()));
}

}  // namespace

void InitWatch(Napi::Env env, Napi::Object exports) {
  EnvState& st = State(env);
  napi_status s = napi_add_async_cleanup_hook(env, OnEnvTeardown, &st, nullptr);
  if (s != napi_ok) throw Napi::Error::New(env, "napi_add_async_cleanup_hook failed");
  Constant(exports, "UV_READABLE", UV_READABLE);
  Constant(exports, "UV_WRITABLE", UV_WRITABLE);
  Constant(exports, "UV_DISCONNECT", UV_DISCONNECT);
  Constant(exports, "UV_PRIORITIZED", UV_PRIORITIZED);
  Export(env, exports, "watchStart", WatchStart);
  Export(env, exports, "watchSetEvents", WatchSetEvents);
  Export(env, exports, "watchRef", WatchRef);
  Export(env, exports, "watchStop", WatchStop);
  Export(env, exports, "watchCount", WatchCount);
}

}  // namespace vts

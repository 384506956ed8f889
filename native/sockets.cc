// Unix stream sockets with fd passing (SCM_RIGHTS), as the vhost-user
// control channel needs: "The protocol ... uses a Unix domain socket ...
// file descriptors are passed as ancillary data" (vhost-user spec,
// "Communication"). Every socket is non-blocking and close-on-exec; every
// received fd is close-on-exec (MSG_CMSG_CLOEXEC). Also what a back-end
// program needs around it (vhost-user spec, "Backend program conventions"):
// telling an inherited listening socket from a connected one, and one Unix
// datagram to a path or abstract name (the service manager's notify socket,
// sd_notify(3)).
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>

#include "addon.h"

namespace vts {
namespace {

constexpr int kSockFlags = SOCK_NONBLOCK | SOCK_CLOEXEC;
// Linux accepts at most SCM_MAX_FD (253) fds in one SCM_RIGHTS message.
constexpr size_t kMaxFds = 253;
// Upper bound for one recvmsg() (the caller's buffer size, not a protocol limit).
constexpr int64_t kMaxRecvBytes = int64_t{1} << 24;

sockaddr_un UnixAddr(Napi::Env env, const std::string& path, const char* syscall) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) ThrowSys(env, syscall, ENAMETOOLONG, &path);
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

// A path, or an abstract name written with a leading '@' (as $NOTIFY_SOCKET
// does): sun_path starts with a NUL byte and the length, not a NUL, ends it.
socklen_t DatagramAddr(Napi::Env env, const std::string& address, const char* syscall,
                       sockaddr_un* addr) {
  if (address.empty() || address == "@") {
    throw Napi::RangeError::New(env, "address must be a path or @name");
  }
  *addr = sockaddr_un{};
  addr->sun_family = AF_UNIX;
  if (address.size() >= sizeof(addr->sun_path)) ThrowSys(env, syscall, ENAMETOOLONG, &address);
  std::memcpy(addr->sun_path, address.data(), address.size());
  size_t length = address.size();
  if (address[0] == '@') {
    addr->sun_path[0] = '\0';
  } else {
    length++;  // the terminating NUL
  }
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + length);
}

int NewSocket(Napi::Env env) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | kSockFlags, 0);
  if (fd < 0) ThrowSys(env, "socket", errno);
  return fd;
}

// listenUnix(path, backlog) -> fd
Napi::Value ListenUnix(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = StringArg(info, 0, "path");
  int backlog = static_cast<int>(IntArg(info, 1, "backlog", 1, 65535));
  sockaddr_un addr = UnixAddr(env, path, "bind");
  int fd = NewSocket(env);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    ::close(fd);
    ThrowSys(env, "bind", err, &path);
  }
  if (::listen(fd, backlog) != 0) {
    int err = errno;
    ::close(fd);
    ::unlink(path.c_str());  // the file bind() just created
    ThrowSys(env, "listen", err, &path);
  }
  return Napi::Number::New(env, fd);
}

// acceptUnix(fd) -> fd | null (no pending connection)
Napi::Value AcceptUnix(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  for (;;) {
    int conn = ::accept4(fd, nullptr, nullptr, kSockFlags);
    if (conn >= 0) return Napi::Number::New(env, conn);
    // A connection reset before accept() is not the listener's failure; the
    // loop is bounded by the backlog.
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return env.Null();
    ThrowSys(env, "accept4", errno);
  }
}

// connectUnix(path) -> fd. AF_UNIX connect completes at once or fails
// (EAGAIN when the listener's backlog is full).
Napi::Value ConnectUnix(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = StringArg(info, 0, "path");
  sockaddr_un addr = UnixAddr(env, path, "connect");
  int fd = NewSocket(env);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    ::close(fd);
    ThrowSys(env, "connect", err, &path);
  }
  return Napi::Number::New(env, fd);
}

// socketPair() -> [fd, fd]
Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | kSockFlags, 0, sv) != 0) {
    ThrowSys(env, "socketpair", errno);
  }
  Napi::Array pair = Napi::Array::New(env, 2);
  pair.Set(0u, Napi::Number::New(env, sv[0]));
  pair.Set(1u, Napi::Number::New(env, sv[1]));
  return pair;
}

// isListeningSocket(fd) -> true for a listening socket (SO_ACCEPTCONN), false
// for any other socket; ENOTSOCK / EBADF otherwise.
Napi::Value IsListeningSocket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  int value = 0;
  socklen_t length = sizeof value;
  if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &value, &length) != 0) {
    ThrowSys(env, "getsockopt", errno);
  }
  return Napi::Boolean::New(env, value != 0);
}

// sendUnixDatagram(address, bytes): one datagram from a fresh unbound socket
// (the sender's credentials travel with it, as the notify protocol wants).
// EAGAIN (the receiver's queue is full) is thrown, not retried.
Napi::Value SendUnixDatagram(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string address = StringArg(info, 0, "address");
  if (!info[1].IsTypedArray() ||
      info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(env, "bytes must be a Uint8Array or Buffer");
  }
  Napi::Uint8Array bytes = info[1].As<Napi::Uint8Array>();
  sockaddr_un addr;
  socklen_t length = DatagramAddr(env, address, "sendto", &addr);
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | kSockFlags, 0);
  if (fd < 0) ThrowSys(env, "socket", errno);
  ssize_t n;
  do {
    n = ::sendto(fd, bytes.Data(), bytes.ElementLength(), MSG_NOSIGNAL,
                 reinterpret_cast<sockaddr*>(&addr), length);
  } while (n < 0 && errno == EINTR);
  int err = errno;
  ::close(fd);
  if (n < 0) ThrowSys(env, "sendto", err, &address);
  return env.Undefined();
}

// bindUnixDatagram(address) -> fd: a datagram socket bound to a path or
// @name, read with recvmsg() (a notify socket's receiving end).
Napi::Value BindUnixDatagram(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string address = StringArg(info, 0, "address");
  sockaddr_un addr;
  socklen_t length = DatagramAddr(env, address, "bind", &addr);
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | kSockFlags, 0);
  if (fd < 0) ThrowSys(env, "socket", errno);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), length) != 0) {
    int err = errno;
    ::close(fd);
    ThrowSys(env, "bind", err, &address);
  }
  return Napi::Number::New(env, fd);
}

// shutdown(fd, how) with how = SHUT_RD (0), SHUT_WR (1) or SHUT_RDWR (2)
Napi::Value Shutdown(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  int how = static_cast<int>(IntArg(info, 1, "how", SHUT_RD, SHUT_RDWR));
  if (::shutdown(fd, how) != 0) ThrowSys(env, "shutdown", errno);
  return env.Undefined();
}

// close(fd). On Linux the fd is released even when close() reports EINTR,
// so EINTR is success and must not be retried.
Napi::Value Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  if (::close(fd) != 0 && errno != EINTR) ThrowSys(env, "close", errno);
  return env.Undefined();
}

// recvmsg(fd, maxBytes, maxFds) -> { bytes, fds, eof } | null (EAGAIN)
Napi::Value RecvMsg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  size_t maxBytes = static_cast<size_t>(IntArg(info, 1, "maxBytes", 1, kMaxRecvBytes));
  size_t maxFds = static_cast<size_t>(IntArg(info, 2, "maxFds", 0, kMaxFds));
  EnvState& st = State(env);
  if (st.recvScratch.size() < maxBytes) st.recvScratch.resize(maxBytes);

  iovec iov{st.recvScratch.data(), maxBytes};
  alignas(cmsghdr) unsigned char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (maxFds > 0) {
    msg.msg_control = control;
    // CMSG_LEN, not CMSG_SPACE: the kernel must not fit more than maxFds.
    msg.msg_controllen = CMSG_LEN(sizeof(int) * maxFds);
  }
  ssize_t n;
  do {
    n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return env.Null();
    ThrowSys(env, "recvmsg", errno);
  }

  int fds[kMaxFds];
  size_t nfds = 0;
  size_t extra = 0;  // fds beyond kMaxFds (cannot happen with the buffer above)
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len < CMSG_LEN(0)) {
      continue;
    }
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t k = 0; k < count; k++) {
      int received;
      std::memcpy(&received, CMSG_DATA(c) + k * sizeof(int), sizeof received);
      if (nfds < kMaxFds) {
        fds[nfds++] = received;
      } else {
        ::close(received);
        extra++;
      }
    }
  }
  if ((msg.msg_flags & MSG_CTRUNC) != 0 || nfds > maxFds || extra > 0) {
    for (size_t k = 0; k < nfds; k++) ::close(fds[k]);
    std::string message = "control data truncated: more fds arrived than maxFds (" +
                          std::to_string(maxFds) + ") with " + std::to_string(n) +
                          " bytes; the fds that arrived were closed and the bytes consumed";
    ThrowSys(env, "recvmsg", 0, nullptr, "MSG_CTRUNC", &message);
  }

  Napi::Object result = Napi::Object::New(env);
  result.Set("bytes", Napi::Buffer<uint8_t>::Copy(env, st.recvScratch.data(), n));
  Napi::Array list = Napi::Array::New(env, nfds);
  for (size_t k = 0; k < nfds; k++) list.Set(k, Napi::Number::New(env, fds[k]));
  result.Set("fds", list);
  result.Set("eof", Napi::Boolean::New(env, n == 0));
  return result;
}

// sendmsg(fd, bytes, fds) -> bytes sent | null (EAGAIN). The fds travel with
// the first byte; after a partial send the rest goes without them.
Napi::Value SendMsg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  Napi::Value bytesArg = info[1];
  if (!bytesArg.IsTypedArray() ||
      bytesArg.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(env, "bytes must be a Uint8Array or Buffer");
  }
  Napi::Uint8Array bytes = bytesArg.As<Napi::Uint8Array>();
  if (bytes.ElementLength() == 0) {
    throw Napi::RangeError::New(env, "bytes must not be empty");
  }
  Napi::Value fdsArg = info[2];
  size_t nfds = 0;
  int fds[kMaxFds];
  if (!fdsArg.IsUndefined()) {
    if (!fdsArg.IsArray()) throw Napi::TypeError::New(env, "fds must be an array");
    Napi::Array list = fdsArg.As<Napi::Array>();
    if (list.Length() > kMaxFds) {
      throw Napi::RangeError::New(env, "at most 253 fds per message");
    }
    nfds = list.Length();
    for (size_t k = 0; k < nfds; k++) {
      Napi::Value v = list.Get(k);
      if (!v.IsNumber()) throw Napi::TypeError::New(env, "fds must hold numbers");
      double d = v.As<Napi::Number>().DoubleValue();
      if (!(d >= 0 && d <= 2147483647.0 && d == static_cast<int>(d))) {
        throw Napi::RangeError::New(env, "fds must hold non-negative int32 values");
      }
      fds[k] = static_cast<int>(d);
    }
  }

  iovec iov{bytes.Data(), bytes.ElementLength()};
  alignas(cmsghdr) unsigned char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (nfds > 0) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    std::memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  ssize_t n;
  do {
    n = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return env.Null();
    ThrowSys(env, "sendmsg", errno);
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

}  // namespace

void InitSockets(Napi::Env env, Napi::Object exports) {
  Constant(exports, "SHUT_RD", SHUT_RD);
  Constant(exports, "SHUT_WR", SHUT_WR);
  Constant(exports, "SHUT_RDWR", SHUT_RDWR);
  Constant(exports, "SCM_MAX_FD", kMaxFds);
  Export(env, exports, "listenUnix", ListenUnix);
  Export(env, exports, "acceptUnix", AcceptUnix);
  Export(env, exports, "connectUnix", ConnectUnix);
  Export(env, exports, "socketPair", SocketPair);
  Export(env, exports, "shutdown", Shutdown);
  Export(env, exports, "isListeningSocket", IsListeningSocket);
  Export(env, exports, "sendUnixDatagram", SendUnixDatagram);
  Export(env, exports, "bindUnixDatagram", BindUnixDatagram);
  Export(env, exports, "close", Close);
  Export(env, exports, "recvmsg", RecvMsg);
  Export(env, exports, "sendmsg", SendMsg);
}

}  // namespace vts

// Batched asynchronous file I/O through io_uring, with raw system calls (no
// liburing): one ring per JavaScript environment that asks for one (each
// dataplane thread), positioned readv/writev requests prepared one by one,
// submitted together with one io_uring_enter, and completions reaped on the
// same thread when the ring's registered eventfd becomes readable (the
// TypeScript side watches it with watch()).
//
// Nothing here blocks: io_uring_enter is called without IORING_ENTER_GETEVENTS,
// and the eventfd is non-blocking. A kernel or seccomp policy that refuses
// io_uring makes uringOpen throw (ENOSYS, EPERM), and the caller keeps to the
// thread pool.
//
// The guest memory views a request names must stay mapped until its
// completion is reaped; the TypeScript side holds them for that long. The
// iovec array of a request lives in its slot until then as well (the kernel
// may read it when it issues the request, after submission).
#include <linux/io_uring.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <memory>
#include <unordered_map>
#include <vector>

#include "addon.h"

namespace vts {
namespace {

// One request's iovecs, kept until its completion is reaped.
struct Slot {
  std::vector<struct iovec> iov;
  bool busy = false;
};

struct Ring {
  int fd = -1;
  int eventFd = -1;
  void* sqMap = MAP_FAILED;
  size_t sqMapLen = 0;
  void* cqMap = MAP_FAILED;
  size_t cqMapLen = 0;
  void* sqesMap = MAP_FAILED;
  size_t sqesMapLen = 0;
  // Shared ring words (kernel <-> this thread).
  unsigned* sqHead = nullptr;
  unsigned* sqTail = nullptr;
  unsigned sqMask = 0;
  unsigned sqEntries = 0;
  unsigned* sqArray = nullptr;
  struct io_uring_sqe* sqes = nullptr;
  unsigned* cqHead = nullptr;
  unsigned* cqTail = nullptr;
  unsigned cqMask = 0;
  struct io_uring_cqe* cqes = nullptr;
  // Prepared but not yet submitted.
  unsigned pending = 0;
  std::vector<Slot> slots;
  std::vector<uint32_t> freeSlots;

  ~Ring() {
    if (sqesMap != MAP_FAILED) munmap(sqesMap, sqesMapLen);
    if (cqMap != MAP_FAILED && cqMap != sqMap) munmap(cqMap, cqMapLen);
    if (sqMap != MAP_FAILED) munmap(sqMap, sqMapLen);
    if (eventFd >= 0) close(eventFd);
    if (fd >= 0) close(fd);
  }
};

// Rings by id, per environment (a ring belongs to the thread that opened it).
struct Rings {
  std::unordered_map<uint32_t, std::unique_ptr<Ring>> byId;
  uint32_t nextId = 1;
};

// The environment's rings; closed with the environment (EnvState's destructor).
Rings& RingsOf(Napi::Env env) {
  EnvState& st = State(env);
  if (!st.urings) st.urings = std::make_shared<Rings>();
  return *static_cast<Rings*>(st.urings.get());
}

Ring& RingArg(const Napi::CallbackInfo& info, size_t i) {
  uint32_t id = static_cast<uint32_t>(IntArg(info, i, "ring", 1, UINT32_MAX));
  auto& m = RingsOf(info.Env()).byId;
  auto it = m.find(id);
  if (it == m.end()) throw Napi::RangeError::New(info.Env(), "no such io_uring (closed?)");
  return *it->second;
}

void* MapRing(int fd, size_t len, off_t offset) {
  return mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, offset);
}

// Maps the three areas of a ring set up by io_uring_setup; returns errno or 0.
int MapAreas(Ring& r, const struct io_uring_params& p) {
  r.sqMapLen = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  r.cqMapLen = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
  bool single = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
  if (single && r.cqMapLen > r.sqMapLen) r.sqMapLen = r.cqMapLen;
  r.sqMap = MapRing(r.fd, r.sqMapLen, IORING_OFF_SQ_RING);
  if (r.sqMap == MAP_FAILED) return errno;
  r.cqMap = single ? r.sqMap : MapRing(r.fd, r.cqMapLen, IORING_OFF_CQ_RING);
  if (r.cqMap == MAP_FAILED) return errno;
  r.sqesMapLen = p.sq_entries * sizeof(struct io_uring_sqe);
  r.sqesMap = MapRing(r.fd, r.sqesMapLen, IORING_OFF_SQES);
  if (r.sqesMap == MAP_FAILED) return errno;
  char* sq = static_cast<char*>(r.sqMap);
  char* cq = static_cast<char*>(r.cqMap);
  r.sqHead = reinterpret_cast<unsigned*>(sq + p.sq_off.head);
  r.sqTail = reinterpret_cast<unsigned*>(sq + p.sq_off.tail);
  r.sqMask = *reinterpret_cast<unsigned*>(sq + p.sq_off.ring_mask);
  r.sqEntries = p.sq_entries;
  r.sqArray = reinterpret_cast<unsigned*>(sq + p.sq_off.array);
  r.sqes = static_cast<struct io_uring_sqe*>(r.sqesMap);
  r.cqHead = reinterpret_cast<unsigned*>(cq + p.cq_off.head);
  r.cqTail = reinterpret_cast<unsigned*>(cq + p.cq_off.tail);
  r.cqMask = *reinterpret_cast<unsigned*>(cq + p.cq_off.ring_mask);
  r.cqes = reinterpret_cast<struct io_uring_cqe*>(cq + p.cq_off.cqes);
  return 0;
}

// uringOpen(entries) -> { ring, eventFd }. The completion queue has twice the
// entries (the kernel's default), and slots for as many requests in flight.
Napi::Value UringOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  unsigned entries = static_cast<unsigned>(IntArg(info, 0, "entries", 1, 4096));
  auto r = std::make_unique<Ring>();
  struct io_uring_params p;
  std::memset(&p, 0, sizeof p);
  p.flags = IORING_SETUP_CLAMP;
  int fd = static_cast<int>(syscall(__NR_io_uring_setup, entries, &p));
  if (fd < 0) ThrowSys(env, "io_uring_setup", errno);
  r->fd = fd;
  if (int err = MapAreas(*r, p); err != 0) ThrowSys(env, "mmap", err);
  r->eventFd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (r->eventFd < 0) ThrowSys(env, "eventfd", errno);
  if (syscall(__NR_io_uring_register, r->fd, IORING_REGISTER_EVENTFD, &r->eventFd, 1) < 0) {
    ThrowSys(env, "io_uring_register", errno);
  }
  // Slots: every completion-queue entry may be outstanding at once.
  r->slots.resize(p.cq_entries);
  for (uint32_t s = p.cq_entries; s-- > 0;) r->freeSlots.push_back(s);
  Rings& rings = RingsOf(env);
  uint32_t id = rings.nextId++;
  int efd = r->eventFd;
  rings.byId.emplace(id, std::move(r));
  Napi::Object out = Napi::Object::New(env);
  out.Set("ring", Napi::Number::New(env, id));
  out.Set("eventFd", Napi::Number::New(env, efd));
  out.Set("capacity", Napi::Number::New(env, p.cq_entries));
  return out;
}

// uringPrepare(ring, fd, buffers, position, write) -> slot (>= 0), or -1 when
// the ring is full (submit, reap, or use the thread pool).
Napi::Value UringPrepare(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Ring& r = RingArg(info, 0);
  int fd = FdArg(info, 1);
  uint64_t pos = static_cast<uint64_t>(IntArg(info, 3, "position", 0, (int64_t{1} << 53) - 1));
  bool write = BoolArg(info, 4, "write");
  // Acquire: the kernel's sqHead store after it consumed entries happens-before
  // our reuse of those entries.
  unsigned head = __atomic_load_n(r.sqHead, __ATOMIC_ACQUIRE);
  unsigned tail = *r.sqTail;  // only this thread stores the tail
  if (tail - head >= r.sqEntries || r.freeSlots.empty()) return Napi::Number::New(env, -1);
  uint32_t s = r.freeSlots.back();
  Slot& slot = r.slots[s];
  IovecArg(env, info[2], slot.iov);  // may throw: the slot is not taken yet
  r.freeSlots.pop_back();
  slot.busy = true;
  unsigned idx = tail & r.sqMask;
  struct io_uring_sqe* sqe = &r.sqes[idx];
  std::memset(sqe, 0, sizeof *sqe);
  sqe->opcode = write ? IORING_OP_WRITEV : IORING_OP_READV;
  sqe->fd = fd;
  sqe->off = pos;
  sqe->addr = reinterpret_cast<uint64_t>(slot.iov.data());
  sqe->len = static_cast<uint32_t>(slot.iov.size());
  sqe->user_data = s;
  r.sqArray[idx] = idx;
  // Release: the SQE and array entry are visible to the kernel before the new tail.
  __atomic_store_n(r.sqTail, tail + 1, __ATOMIC_RELEASE);
  r.pending++;
  return Napi::Number::New(env, s);
}

// uringSubmit(ring) -> requests the kernel took (one io_uring_enter for all
// prepared since the last call; 0 when none). EAGAIN/EBUSY leave them for the
// next call (reported as 0); other errors throw.
Napi::Value UringSubmit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Ring& r = RingArg(info, 0);
  if (r.pending == 0) return Napi::Number::New(env, 0);
  long n;
  do {
    n = syscall(__NR_io_uring_enter, r.fd, r.pending, 0, 0, nullptr, 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EBUSY) return Napi::Number::New(env, 0);
    ThrowSys(env, "io_uring_enter", errno);
  }
  r.pending -= static_cast<unsigned>(n) > r.pending ? r.pending : static_cast<unsigned>(n);
  return Napi::Number::New(env, static_cast<double>(n));
}

// uringReap(ring, out: Int32Array) -> completions written to `out` as (slot,
// result) pairs, at most out.length / 2; clears the eventfd first, so a
// completion that lands after this call makes it readable again.
Napi::Value UringReap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Ring& r = RingArg(info, 0);
  if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    throw Napi::TypeError::New(env, "out must be an Int32Array");
  }
  Napi::Int32Array out = info[1].As<Napi::Int32Array>();
  uint64_t count;
  while (read(r.eventFd, &count, sizeof count) < 0 && errno == EINTR) {
  }
  size_t max = out.ElementLength() / 2;
  size_t n = 0;
  unsigned head = *r.cqHead;  // only this thread stores the head
  // Acquire: the kernel's CQE stores happen-before our reads of them.
  unsigned tail = __atomic_load_n(r.cqTail, __ATOMIC_ACQUIRE);
  while (head != tail && n < max) {
    const struct io_uring_cqe& c = r.cqes[head & r.cqMask];
    uint64_t s = c.user_data;
    head++;
    if (s >= r.slots.size() || !r.slots[s].busy) continue;  // not ours: never expected
    r.slots[s].busy = false;
    r.freeSlots.push_back(static_cast<uint32_t>(s));
    out[2 * n] = static_cast<int32_t>(s);
    out[2 * n + 1] = c.res;
    n++;
  }
  // Release: our reads of the CQEs are done before the kernel may reuse them.
  __atomic_store_n(r.cqHead, head, __ATOMIC_RELEASE);
  return Napi::Number::New(env, static_cast<double>(n));
}

// uringClose(ring): unmaps and closes. Requests still in flight complete in
// the kernel; their completions are dropped with the ring.
Napi::Value UringClose(const Napi::CallbackInfo& info) {
  uint32_t id = static_cast<uint32_t>(IntArg(info, 0, "ring", 1, UINT32_MAX));
  RingsOf(info.Env()).byId.erase(id);
  return info.Env().Undefined();
}

}  // namespace

void InitUring(Napi::Env env, Napi::Object exports) {
  Export(env, exports, "uringOpen", UringOpen);
  Export(env, exports, "uringPrepare", UringPrepare);
  Export(env, exports, "uringSubmit", UringSubmit);
  Export(env, exports, "uringReap", UringReap);
  Export(env, exports, "uringClose", UringClose);
}

}  // namespace vts

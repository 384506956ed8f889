// The SIGBUS guard (see sigbus.h for the contract): the registry of guarded
// mappings and the SIGBUS handler.
//
// The registry is a fixed array of slots, so the handler never allocates or
// locks. Writers (GuardAdd / GuardRemove, JavaScript threads) are serialized
// by a mutex and publish each slot through a per-slot sequence lock; the
// handler only reads slots, retrying a slot whose sequence moved.
//
// Memory ordering:
//  - seq: a writer makes it odd (relaxed store followed by a release fence,
//    so the field stores below cannot become visible before the odd value),
//    stores the fields (relaxed), then makes it even with a release store
//    (the fields happen-before any reader that acquires the even value).
//  - The handler loads seq with acquire, loads the fields (relaxed), issues
//    an acquire fence and reloads seq (relaxed): equal even values mean the
//    fields it read belong to one published registration.
//  - faults: the handler increments with release; readers load with acquire,
//    so a thread that sees the count also sees the zero page mapped before it
//    (the count is what it acts on). gTotal works the same way process-wide.
// std::atomic<uint64_t> / <uintptr_t> are lock-free on the 64-bit Linux
// targets Node runs on (checked at compile time), hence async-signal-safe.
#include "sigbus.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <mutex>

#include "addon.h"

namespace vts {
namespace {

// Guarded mappings at once: a vhost-user connection has at most 32 regions
// (more windows above 4 GiB), one connection is served at a time.
constexpr int kSlots = 1024;

struct Slot {
  std::atomic<uint32_t> seq{0};     // odd while a writer changes the slot
  std::atomic<uintptr_t> start{0};  // 0: free
  std::atomic<size_t> length{0};
  std::atomic<size_t> granule{0};
  std::atomic<uint64_t> faults{0};
};

static_assert(std::atomic<uintptr_t>::is_always_lock_free, "handler needs lock-free atomics");
static_assert(std::atomic<uint64_t>::is_always_lock_free, "handler needs lock-free atomics");
static_assert(std::atomic<uint32_t>::is_always_lock_free, "handler needs lock-free atomics");

Slot gSlots[kSlots];
std::atomic<uint64_t> gTotal{0};  // faults absorbed in the process
std::mutex gWriters;              // serializes GuardAdd / GuardRemove and installation
bool gInstalled = false;          // under gWriters
struct sigaction gPrevious;       // written once before the handler can run

void WriteSlot(Slot& s, uintptr_t start, size_t length, size_t granule) {
  uint32_t seq = s.seq.load(std::memory_order_relaxed);
  s.seq.store(seq + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  s.start.store(start, std::memory_order_relaxed);
  s.length.store(length, std::memory_order_relaxed);
  s.granule.store(granule, std::memory_order_relaxed);
  if (start != 0) s.faults.store(0, std::memory_order_relaxed);
  s.seq.store(seq + 2, std::memory_order_release);
}

// A consistent snapshot of slot `s`; false while it changes (or after retries).
bool ReadSlot(const Slot& s, uintptr_t* start, size_t* length, size_t* granule) {
  for (int attempt = 0; attempt < 8; attempt++) {
    uint32_t before = s.seq.load(std::memory_order_acquire);
    if ((before & 1) != 0) continue;
    *start = s.start.load(std::memory_order_relaxed);
    *length = s.length.load(std::memory_order_relaxed);
    *granule = s.granule.load(std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (s.seq.load(std::memory_order_relaxed) == before) return true;
  }
  return false;
}

// Maps a zero granule over `addr` if it lies in a guarded mapping; true if so.
bool Absorb(uintptr_t addr) {
  for (Slot& s : gSlots) {
    uintptr_t start;
    size_t length, granule;
    if (!ReadSlot(s, &start, &length, &granule) || start == 0) continue;
    if (addr < start || addr - start >= length) continue;
    uintptr_t page = start + (addr - start) / granule * granule;
    void* p = ::mmap(reinterpret_cast<void*>(page), granule, PROT_READ | PROT_WRITE,
                     MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return false;
    s.faults.fetch_add(1, std::memory_order_release);
    gTotal.fetch_add(1, std::memory_order_release);
    return true;
  }
  return false;
}

// Not ours: what would have happened without the guard.
void Chain(int sig, siginfo_t* info, void* context) {
  if ((gPrevious.sa_flags & SA_SIGINFO) != 0 && gPrevious.sa_sigaction != nullptr) {
    gPrevious.sa_sigaction(sig, info, context);
    return;
  }
  if (gPrevious.sa_handler != SIG_DFL && gPrevious.sa_handler != SIG_IGN) {
    gPrevious.sa_handler(sig);
    return;
  }
  // Default action: a fault re-executes the access on return and dies of it;
  // a sent SIGBUS is raised again (delivered once the handler returns).
  struct sigaction dfl = {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(SIGBUS, &dfl, nullptr);
  if (info->si_code <= 0) ::raise(SIGBUS);
}

void OnSigbus(int sig, siginfo_t* info, void* context) {
  int saved = errno;
  bool absorbed = info->si_code == BUS_ADRERR && Absorb(reinterpret_cast<uintptr_t>(info->si_addr));
  errno = saved;
  if (!absorbed) Chain(sig, info, context);
}

// Under gWriters.
bool Install() {
  if (gInstalled) return true;
  struct sigaction sa = {};
  sa.sa_sigaction = OnSigbus;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  if (::sigaction(SIGBUS, &sa, &gPrevious) != 0) return false;
  gInstalled = true;
  return true;
}

// guardFaultTotal() -> faults absorbed in the whole process.
Napi::Value FaultTotal(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(),
                           static_cast<double>(gTotal.load(std::memory_order_acquire)));
}

// guardSlotsInUse() -> registered guarded mappings (for leak checks).
Napi::Value SlotsInUse(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(gWriters);
  int n = 0;
  for (const Slot& s : gSlots) n += s.start.load(std::memory_order_relaxed) != 0 ? 1 : 0;
  return Napi::Number::New(info.Env(), n);
}

}  // namespace

int GuardAdd(void* addr, size_t length, size_t granule) {
  std::lock_guard<std::mutex> lock(gWriters);
  if (!Install()) return -1;
  for (int i = 0; i < kSlots; i++) {
    if (gSlots[i].start.load(std::memory_order_relaxed) != 0) continue;
    WriteSlot(gSlots[i], reinterpret_cast<uintptr_t>(addr), length, granule);
    return i;
  }
  errno = ENOSPC;
  return -1;
}

void GuardRemove(int slot) {
  if (slot < 0 || slot >= kSlots) return;
  std::lock_guard<std::mutex> lock(gWriters);
  WriteSlot(gSlots[slot], 0, 0, 0);
}

uint64_t GuardFaults(int slot) {
  if (slot < 0 || slot >= kSlots) return 0;
  return gSlots[slot].faults.load(std::memory_order_acquire);
}

void InitSigbus(Napi::Env env, Napi::Object exports) {
  Export(env, exports, "guardFaultTotal", FaultTotal);
  Export(env, exports, "guardSlotsInUse", SlotsInUse);
}

}  // namespace vts

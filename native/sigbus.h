// The SIGBUS guard: a process-wide registry of guarded guest-memory mappings
// and the SIGBUS handler that keeps a shrunk file from killing the process.
//
// Contract (docs/threat-model.md "Memory mappings"): a vhost-user frontend
// whose region fd can shrink (accepted only with --allow-unsealed-memory) may
// truncate the file under our mapping; touching a page past the new end of
// file raises SIGBUS (BUS_ADRERR). For an address inside a guarded mapping
// the handler maps an anonymous zero page (granule) over the faulting page,
// counts the fault for that mapping and returns: the access completes (reads
// see zeros, writes go nowhere) and the TypeScript side, which checks the
// counters, closes that frontend's connection. Any other SIGBUS goes to the
// previous handler or the default action, so real bugs still crash.
#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>

namespace vts {

// Registers [addr, addr + length) (granule-aligned; `granule` is the page or
// huge page size of the mapping) and installs the handler on first use.
// Returns the slot (>= 0), or -1 if the registry is full or the handler
// could not be installed (errno says why). Writers are serialized by a mutex.
int GuardAdd(void* addr, size_t length, size_t granule);

// Unregisters a slot returned by GuardAdd (before the range is unmapped).
void GuardRemove(int slot);

// Faults the handler absorbed in a slot's mapping since it was registered.
uint64_t GuardFaults(int slot);

void InitSigbus(Napi::Env env, Napi::Object exports);

}  // namespace vts

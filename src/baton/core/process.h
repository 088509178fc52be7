// Facts about the running process and its machine.
// Thread-safety: safe from any thread.
#pragma once

#include <cstdint>
#include <optional>

namespace baton {

// The process's peak resident set size so far, in MiB (VmHWM in
// /proc/self/status); nullopt where the kernel does not report it.
std::optional<double> PeakRssMb();

// Returns memory the allocator holds but no longer uses to the OS (glibc's
// malloc_trim), e.g. after a setup phase that freed large transient buffers.
// A no-op where the C library has no such call.
void ReleaseFreedMemory();

// The machine's physical memory in bytes (sysconf); nullopt where unknown.
std::optional<int64_t> PhysicalMemoryBytes();

}  // namespace baton

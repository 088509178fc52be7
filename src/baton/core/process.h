// Facts about the running process and its machine.
// Thread-safety: safe from any thread.
#pragma once

#include <pthread.h>

#include <cstdint>
#include <optional>
#include <string_view>

namespace baton {

// The process's peak resident set size so far, in MiB (VmHWM in
// /proc/self/status); nullopt where the kernel does not report it.
std::optional<double> PeakRssMb();

// Returns memory the allocator holds but no longer uses to the OS (glibc's
// malloc_trim), e.g. after a setup phase that freed large transient buffers.
// A no-op where the C library has no such call.
void ReleaseFreedMemory();

// Names `thread` (of this process), as `top -H`, `ps -L`, `perf` and
// /proc/PID/task/TID/comm show it. The kernel keeps 15 bytes; a longer name
// is cut. Best effort: a failure changes nothing else. Naming a thread from
// the one that created it makes the name visible before the thread runs.
void NameThread(pthread_t thread, std::string_view name);
inline void NameThisThread(std::string_view name) { NameThread(pthread_self(), name); }

// CPU time, in seconds, that the whole process has used so far (user and
// system, all threads); nullopt where the clock is not available.
std::optional<double> ProcessCpuSeconds();

// CPU time, in seconds, that the calling thread has used so far; nullopt
// where the clock is not available.
std::optional<double> ThisThreadCpuSeconds();

// The machine's physical memory in bytes (sysconf); nullopt where unknown.
std::optional<int64_t> PhysicalMemoryBytes();

}  // namespace baton

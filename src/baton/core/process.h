// Facts about the running process.
// Thread-safety: safe from any thread.
#pragma once

#include <optional>

namespace baton {

// The process's peak resident set size so far, in MiB (VmHWM in
// /proc/self/status); nullopt where the kernel does not report it.
std::optional<double> PeakRssMb();

}  // namespace baton

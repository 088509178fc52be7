#include "baton/core/process.h"

#include <pthread.h>
#include <time.h>
#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>

namespace baton {

std::optional<double> PeakRssMb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) != 0) continue;
    std::istringstream fields(line.substr(6));
    double kib = 0;
    std::string unit;
    if (fields >> kib >> unit && unit == "kB" && kib >= 0) return kib / 1024.0;
    return std::nullopt;
  }
  return std::nullopt;
}

void ReleaseFreedMemory() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

void NameThread(pthread_t thread, std::string_view name) {
  char buf[16] = {};  // the kernel's limit: 15 bytes and the terminator
  name.copy(buf, std::min<size_t>(name.size(), sizeof(buf) - 1));
  pthread_setname_np(thread, buf);
}

namespace {
std::optional<double> SecondsOn(clockid_t clock) {
  timespec ts{};
  if (clock_gettime(clock, &ts) != 0) return std::nullopt;
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}
}  // namespace

std::optional<double> ProcessCpuSeconds() { return SecondsOn(CLOCK_PROCESS_CPUTIME_ID); }

std::optional<double> ThisThreadCpuSeconds() { return SecondsOn(CLOCK_THREAD_CPUTIME_ID); }

std::optional<int64_t> PhysicalMemoryBytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page = sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page <= 0) return std::nullopt;
  return static_cast<int64_t>(pages) * static_cast<int64_t>(page);
}

}  // namespace baton

// A shared memory registry for the KServe fuzz targets: one region "r" of
// 4096 bytes over a POSIX shared memory object made at first use (its name
// unlinked at once), so requests that name it reach the region's bounds and
// size checks. Null when the machine has no /dev/shm (the targets then fuzz
// the "extension is off" path).
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <string>

#include "baton/serve/shared_memory.h"

namespace baton::fuzz {

inline const serve::SharedMemoryRegistry* FuzzShm() {
  static const serve::SharedMemoryRegistry* registry = [] () -> const serve::SharedMemoryRegistry* {
    const std::string key = "/baton_fuzz_" + std::to_string(getpid());
    const int fd = shm_open(key.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) return nullptr;
    const bool sized = ftruncate(fd, 4096) == 0;
    close(fd);
    auto* r = new serve::SharedMemoryRegistry(/*max_regions=*/4, /*max_read_bytes=*/4096);
    const bool ok = sized && r->Register("r", key, 0, 4096).ok();
    shm_unlink(key.c_str());
    if (!ok) {
      delete r;
      return nullptr;
    }
    return r;
  }();
  return registry;
}

}  // namespace baton::fuzz

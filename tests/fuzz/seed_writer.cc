// libFuzzer builds only (BATON_FUZZ): with BATON_FUZZ_WRITE_SEEDS=DIR set, a
// target first writes its seeds (fuzz_target.h) to DIR/seed-N, so that
// scripts/fuzz.sh can start an empty corpus from them.
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>

#include "fuzz_target.h"

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  const char* dir = std::getenv("BATON_FUZZ_WRITE_SEEDS");
  if (dir == nullptr) return 0;
  int n = 0;
  for (const std::string& seed : baton::fuzz::Seeds()) {
    std::ofstream(std::string(dir) + "/seed-" + std::to_string(n++), std::ios::binary) << seed;
  }
  return 0;
}

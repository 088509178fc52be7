// Content hashes for cache keys (profiles, loaded partitions): FNV-1a 64,
// 16 lowercase hex digits. Not cryptographic: it detects change, not attack.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace baton {

inline std::string HashHex(std::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  char out[17];
  std::snprintf(out, sizeof(out), "%016llx", static_cast<unsigned long long>(h));
  return std::string(out, 16);
}

}  // namespace baton

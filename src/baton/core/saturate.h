// Saturating int64 arithmetic for estimates computed from untrusted sizes (a
// model's dimensions and attributes): never undefined behaviour, never
// negative. Header-only; pure.
#pragma once

#include <cstdint>
#include <limits>

namespace baton {

// a + b for a, b >= 0, at most INT64_MAX.
inline int64_t SatAdd(int64_t a, int64_t b) {
  int64_t r = 0;
  return __builtin_add_overflow(a, b, &r) ? std::numeric_limits<int64_t>::max() : r;
}

// a * b, at most INT64_MAX; 0 when either is <= 0 (a negative size counts as none).
inline int64_t SatMul(int64_t a, int64_t b) {
  if (a <= 0 || b <= 0) return 0;
  int64_t r = 0;
  return __builtin_mul_overflow(a, b, &r) ? std::numeric_limits<int64_t>::max() : r;
}

}  // namespace baton
